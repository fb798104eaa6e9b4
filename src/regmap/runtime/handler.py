"""The SIGSEGV/SIGBUS handler: emulate window accesses, pass every other fault on untouched.

The handler is a ctypes callback installed with ``sigaction`` (SA_SIGINFO |
SA_ONSTACK | SA_RESTART; SIGSEGV, SIGBUS and SIGFPE blocked while it runs).
For each signal it:

1. finds the `FrameMachine` of the frame (cached by frame address: a thread
   that faults in a loop reuses one object);
2. decides whether the CPU raised it for a data access that may be the
   window: ``si_code > 0`` (not sent by a process), and for a page fault
   neither an instruction fetch (error code bit 4: a jump to page 0, or to a
   non-executable page) nor an address outside the window.  A #GP (si_addr
   0) or #AC goes to the emulator, which decides from the decoded
   instruction's effective addresses;
3. runs the emulator on the frame; success means the frame now holds the
   new registers and rip, and returning resumes the thread there;
4. otherwise forwards the signal as if regmap were not installed
   (`forward`), after one diagnostic line for an instruction regmap cannot
   emulate, or delivers SIGFPE for a divide error (`deliver_divide_error`).

Nothing in this module may raise out of the callback: ctypes would print the
exception and return, the instruction would fault again, forever.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
from typing import NamedTuple

from regmap.errors import (DivideError, InstructionFault, MemoryFault, NotWindowAccess, RegmapError,
                           UnsupportedInstruction)
from regmap.runtime import _sys, patch
from regmap.runtime import frame as _frame
from regmap.runtime.frame import CODE_SITES, RETIRED_SITES, FrameMachine

HANDLER_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
# A previous handler is called with the GIL held, as a C signal handler would run: nothing
# else in the process moves while it looks at the faulting state.
PREVIOUS_TYPE = ctypes.PYFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)

SIGNALS = (_sys.SIGSEGV, _sys.SIGBUS)
HANDLER_FLAGS = _sys.SA_SIGINFO | _sys.SA_ONSTACK | _sys.SA_RESTART
HANDLER_MASK = (_sys.SIGSEGV, _sys.SIGBUS, _sys.SIGFPE)

# Alternate signal stacks regmap gives threads: the handler runs Python, which needs far more
# than SIGSTKSZ.  Reserved, not committed: only the pages the handler touches cost memory.
ALTSTACK_SIZE = 512 * 1024
ALTSTACK_GUARD = 64 * 1024
ALTSTACK_MIN = 256 * 1024       # a smaller alternate stack is replaced where regmap can


class State:
    """One installation: the emulator, what it replaced, and where the window ends."""

    def __init__(self, emulator, layout, previous: dict[int, _sys.KernelSigaction]):
        self.emulator = emulator
        self.step = emulator.step
        self.layout = layout
        self.window = layout.size
        self.previous = previous
        self.installed: dict[int, tuple] = {}
        self.altstack: tuple[int, _sys.StackT, int] | None = None   # (thread ident, old, base)
        self.address = 0                # the callback's address, for re-installing it (guard.py)
        # What the first installation replaced, and the signals already handed over to
        # `previous` (see `forward`).
        self.beneath: dict[int, _sys.KernelSigaction] = dict(previous)
        self.handed_over: set[int] = set()


class Counters:
    __slots__ = ("forwarded", "sent", "divide_errors", "unsupported", "internal_errors", "by_signal")

    def __init__(self):
        self.forwarded = self.sent = self.divide_errors = self.unsupported = 0
        self.internal_errors = 0
        self.by_signal: dict[int, int] = {}


ACTIVE: State | None = None
# What the last installation replaced: a signal that reaches the handler after unmapping (it
# was on its way, or a handler installed over regmap's chains to it) is forwarded there.
PREVIOUS: dict[int, _sys.KernelSigaction] = {signo: _sys.KernelSigaction() for signo in (7, 11)}
COUNTERS = Counters()
FRAMES: dict[int, FrameMachine] = {}
MAX_FRAMES = 4096
TRACE = None            # None, or a callable taking one TraceEvent per window access
TRANSLATE_AT = 0        # faults at a site before it is translated (regmap.runtime.patch); 0: never
_CALLBACKS: list = []   # every callback ever installed stays alive: a thread may still be in one
_LOCK = threading.Lock()


# -- the handler --------------------------------------------------------------------------------

def on_signal(signo: int, info: int, ctx: int, _frames=FRAMES, _sites=CODE_SITES) -> None:
    try:
        machine = _frames.get(ctx)
        if machine is None:
            machine = new_frame(ctx, info)
        frame = machine.frame
        state = ACTIVE
        # Raised by the CPU (si_code 1..SI_KERNEL, not kill/tgkill/sigqueue), and for a page
        # fault neither an instruction fetch (error code bit 4) nor outside the window.
        if state is None or not 0 < frame.si_code <= 0x80 or (
                frame.trapno == 14 and (frame.err & 0x10 or frame.cr2 >= state.window)):
            forward(signo, info, machine, state)
            return
        # The CPU was executing the instruction at rip when it faulted on a data access, so the
        # instruction's bytes are readable: compare them in place with what the site last held.
        site = _sites.get(frame.rip)
        if site is not None:
            fast = site.fast
            if fast is not None and site.check.raw == site.code and TRACE is None:
                fast(frame)
                site.count += 1
                if site.translation is None and TRANSLATE_AT and site.count >= TRANSLATE_AT:
                    patch.hot_site(site, state.layout, TRACE)
                return
        emulate(signo, info, machine, state)
    except MemoryFault:
        forward(signo, info, machine, ACTIVE)
    except UnsupportedInstruction as error:
        COUNTERS.unsupported += 1
        diagnose(error, machine)
        forward(signo, info, machine, ACTIVE)
    except DivideError:
        deliver_divide_error(machine)
    except InstructionFault as fault:
        deliver_fault(signo, info, machine, fault)
    except BaseException as error:  # noqa: BLE001 - nothing may escape a signal handler
        internal_error(signo, info, ctx, error)


def emulate(signo: int, info: int, machine: FrameMachine, state: State) -> None:
    """The general path: the emulator's `step`, then what the site should remember."""
    machine.fetch_direct = True
    machine.site = None
    if (patch.PATCHES or patch.BUSY) and patch.settle(machine.frame):
        return
    try:
        if TRACE is None:
            step = state.step(machine)
        else:
            step = state.step(machine, True)
            emit_trace(step)
    except NotWindowAccess:
        if not retry_longer(machine, state):
            forward(signo, info, machine, state)
        return
    site = machine.site
    if site is None or site.address != step.address:
        site = CODE_SITES.get(step.address) or _frame.new_site(step.address)
    site.count += 1
    if site.code != step.code:
        site.decoded(step.code, step.mnemonic, fast_path(state, step))
    if site.translation is None and TRANSLATE_AT and site.count >= TRANSLATE_AT:
        patch.hot_site(site, state.layout, TRACE)


def fast_path(state: State, step):
    """The emulator's straight-line function for the instruction just run, if it has one.

    (`Emulator.form_at(address, code)` returns the cached decoded form; its
    ``fast(registers)``, over the machine's register namespace (the frame), is
    what ``step`` itself runs for that form.)
    """
    form_at = getattr(state.emulator, "form_at", None)
    if form_at is None:
        return None
    try:
        form = form_at(step.address, step.code)
    except RegmapError:
        return None
    return getattr(form, "fast", None)


def new_frame(ctx: int, info: int) -> FrameMachine:
    """The first fault with a frame at `ctx`: make its machine, give the thread an altstack."""
    if len(FRAMES) >= MAX_FRAMES:
        FRAMES.clear()
    state = ACTIVE
    machine = FrameMachine(ctx, info, state.window if state is not None else 4096)
    if machine.frame.ss_flags & _sys.SS_DISABLE:
        give_altstack(machine.frame)
    FRAMES[ctx] = machine
    return machine


def retry_longer(machine: FrameMachine, state: State) -> bool:
    """Code at a known site changed to an instruction longer than the site's page allows."""
    site = machine.site
    if site is None or site.tail or site.direct >= 15:
        return False
    site.tail = True
    try:
        step = state.step(machine)
    except NotWindowAccess:
        return False
    site.count += 1
    site.decoded(step.code, step.mnemonic, fast_path(state, step))
    return True


# -- genuine faults ------------------------------------------------------------------------------

def forward(signo: int, info: int, machine: FrameMachine, state: State | None) -> None:
    """Give the signal to whoever would have had it without regmap.

    A signal the CPU raised (a fault) whose previous disposition is SIG_DFL,
    SIG_IGN or a handler of the Python interpreter itself (`faulthandler`,
    or the `signal` module's): put that disposition back and return.  The
    instruction runs again, faults again, and the kernel delivers the signal
    exactly as without regmap: the default action with its core dump (an
    ignored SIGSEGV from a fault kills too), or faulthandler's traceback of
    the program's own frames.  regmap stays uninstalled for that signal: in
    all these cases the process is about to die.

    A signal sent by a process (kill, tgkill, sigqueue): SIG_IGN drops it;
    SIG_DFL puts the default back and re-queues the very same siginfo to this
    thread, where it is delivered as soon as the handler returns.

    Otherwise (a native library's handler, which may recover and return):
    call it with the same three arguments, with the signal mask it asked for
    (its sa_mask, the signal itself unless SA_NODEFER), honouring
    SA_RESETHAND; whatever it changes in the frame takes effect when regmap's
    handler returns, and regmap stays installed.
    """
    COUNTERS.forwarded += 1
    COUNTERS.by_signal[signo] = COUNTERS.by_signal.get(signo, 0) + 1
    if state is None:
        previous = PREVIOUS[signo]
    elif signo in state.handed_over:
        # The handler regmap handed this signal to put regmap back and raised it again
        # (faulthandler does, when it was enabled over regmap): on to what regmap replaced.
        previous = state.beneath[signo]
    else:
        previous = state.previous[signo]
    code = machine.si_code()
    from_cpu = 0 < code <= _sys.SI_KERNEL
    if not from_cpu:
        COUNTERS.sent += 1
    handler = previous.handler
    if from_cpu and (handler in (_sys.SIG_DFL, _sys.SIG_IGN) or is_interpreter_code(handler)):
        hand_over(signo, previous, state)
        return
    if handler == _sys.SIG_IGN:
        return
    if handler == _sys.SIG_DFL:
        hand_over(signo, previous, state)
        _sys.queue_to_self(signo, machine.siginfo())
        return
    if previous.flags & _sys.SA_RESETHAND:
        reset = _sys.KernelSigaction.from_buffer_copy(previous)
        reset.handler = _sys.SIG_DFL
        _sys.set_action(signo, reset)
    mask = machine.frame.sigmask | previous.mask
    if previous.flags & _sys.SA_NODEFER:
        mask &= ~(1 << (signo - 1))
    else:
        mask |= 1 << (signo - 1)
    old_mask = _sys.set_thread_mask(mask)
    try:
        PREVIOUS_TYPE(handler)(signo, machine.info, machine.ctx)
    finally:
        _sys.set_thread_mask(old_mask)


def hand_over(signo: int, previous: _sys.KernelSigaction, state: State | None) -> None:
    """Put `previous` back in regmap's place for `signo`: the process is about to die of it."""
    _sys.set_action(signo, previous)
    if state is not None:
        state.handed_over.add(signo)


INTERPRETER_CODE: list[tuple[int, int]] = []


def find_interpreter_code() -> None:
    """The executable mappings of the Python interpreter (its binary or libpython)."""
    names = {os.path.realpath(sys.executable)}
    try:
        names.add(os.path.realpath("/proc/self/exe"))
        ranges = []
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) < 6 or "x" not in fields[1]:
                    continue
                path = fields[5].strip()
                if path in names or os.path.basename(path).startswith("libpython"):
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    ranges.append((start, end))
        INTERPRETER_CODE[:] = ranges
    except OSError:
        pass


def is_interpreter_code(address: int) -> bool:
    return any(start <= address < end for start, end in INTERPRETER_CODE)


def deliver_divide_error(machine: FrameMachine) -> None:
    """Deliver SIGFPE as the CPU's #DE would: si_code FPE_INTDIV, si_addr and rip at the divide.

    The frame is left as it was (rip still at the divide) and a SIGFPE with
    the kernel's siginfo is queued to this thread; SIGFPE is blocked while
    regmap's handler runs, so it is delivered the moment the handler returns,
    with the divide's state in its frame.  As for a real #DE, a blocked or
    ignored SIGFPE is unblocked and reset to the default action first.
    """
    COUNTERS.divide_errors += 1
    frame = machine.frame
    rip = frame.rip
    bit = 1 << (_sys.SIGFPE - 1)
    action = _sys.get_action(_sys.SIGFPE)
    if action.handler == _sys.SIG_IGN or frame.sigmask & bit:
        action.handler = _sys.SIG_DFL
        _sys.set_action(_sys.SIGFPE, action)
        frame.sigmask &= ~bit
    info = (_sys.SIGFPE.to_bytes(4, "little") + bytes(4) + _sys.FPE_INTDIV.to_bytes(4, "little")
            + bytes(4) + rip.to_bytes(8, "little")).ljust(128, b"\0")
    _sys.queue_to_self(_sys.SIGFPE, info)


def deliver_fault(signo: int, info: int, machine: FrameMachine, fault: InstructionFault) -> None:
    """An exception of the instruction itself (the native engine's #GP, #XM, #MF, #UD, #AC), as
    the kernel would deliver it: the frame untouched (rip at the instruction), the fault's signal
    with its si_code and si_addr.  A SIGSEGV or SIGBUS is the very signal being handled: its
    siginfo is rewritten and it goes where a genuine fault goes (`forward`); another signal is
    queued to this thread, as for a divide error."""
    frame = machine.frame
    address = frame.rip if fault.si_addr is None else fault.si_addr
    if fault.signo == signo:
        frame.si_code = fault.si_code
        frame.si_addr = address
        forward(signo, info, machine, ACTIVE)
        return
    bit = 1 << (fault.signo - 1)
    action = _sys.get_action(fault.signo)
    if action.handler == _sys.SIG_IGN or frame.sigmask & bit:
        action.handler = _sys.SIG_DFL
        _sys.set_action(fault.signo, action)
        frame.sigmask &= ~bit
    siginfo = (fault.signo.to_bytes(4, "little") + bytes(4) + (fault.si_code & 0xFFFFFFFF).to_bytes(4, "little")
               + bytes(4) + address.to_bytes(8, "little")).ljust(128, b"\0")
    _sys.queue_to_self(fault.signo, siginfo)


# -- messages ---------------------------------------------------------------------------------------

def _write_stderr(text: str) -> None:
    """One line straight to fd 2: never through sys.stderr, whose lock the thread may hold."""
    data = text.encode("utf-8", "replace")
    try:
        while data:
            data = data[os.write(2, data):]
    except OSError:
        pass


def touched_registers(machine: FrameMachine, code: bytes, address: int) -> str:
    """The window registers the instruction's memory operand covers, as ``name=value`` pairs."""
    state = ACTIVE
    if state is None:
        return "?"
    try:
        import iced_x86
        from iced_x86 import OpKind, Register
        from regmap.x86.operands import REGISTER_NAMES
        ins = iced_x86.Decoder(64, code, ip=address).decode()
        if not any(ins.op_kind(i) == OpKind.MEMORY for i in range(ins.op_count)):
            return "no memory operand"
        size = iced_x86.MemorySizeInfo(ins.memory_size).size or 1
        ea = ins.memory_displacement
        for reg in (ins.memory_base, ins.memory_index):
            if reg not in (Register.NONE, Register.RIP, Register.EIP):
                (basis, hi, lo), = state.layout.registers.slices(REGISTER_NAMES[reg])
                value = machine.read_register(basis) >> lo & ((1 << (hi - lo + 1)) - 1)
                ea += value * (ins.memory_index_scale if reg == ins.memory_index else 1)
        ea &= (1 << 64) - 1
        names = []
        for place in state.layout.placements():
            if place.address < ea + size and ea < place.address + place.size:
                value = machine.read_register(place.name) if place.name in _frame.GREG_INDEX \
                    else None
                names.append(place.name if value is None else f"{place.name}={value:#x}")
        where = f"window {ea:#x}+{size}"
        return f"{where}: {', '.join(names) or 'no placed register'}"
    except Exception as error:  # noqa: BLE001
        return f"(registers unknown: {error})"


def diagnose(error: UnsupportedInstruction, machine: FrameMachine) -> None:
    _write_stderr(
        f"regmap: unsupported instruction at {error.address:#x}: {error.code.hex(' ')}  "
        f"({error.disassembly}) touches {touched_registers(machine, error.code, error.address)}"
        f" [{error.reason}]; treated as a genuine fault\n")


def internal_error(signo: int, info: int, ctx: int, error: BaseException) -> None:
    """A bug in regmap (or an exception raised into the handler): report, then forward."""
    COUNTERS.internal_errors += 1
    try:
        machine = FRAMES.get(ctx) or FrameMachine(ctx, info)
        rip = machine.frame.rip
        _write_stderr(f"regmap: internal error handling signal {signo} at rip {rip:#x}: "
                      f"{type(error).__name__}: {error}; treated as a genuine fault\n")
        forward(signo, info, machine, ACTIVE)
    except BaseException:  # noqa: BLE001
        # Last resort: the default action, through a re-fault.
        try:
            _sys.set_action(signo, _sys.KernelSigaction())
        except BaseException:  # noqa: BLE001
            pass


# -- tracing ----------------------------------------------------------------------------------------

class TraceEvent(NamedTuple):
    """One emulated window access."""
    thread: int          # native thread id
    rip: int             # the instruction's address
    disassembly: str
    address: int         # window address
    size: int
    write: bool
    names: str           # the register(s) those window bytes are
    before: int
    after: int | None    # None for a read

    def __str__(self) -> str:
        change = f"{self.before:#x} -> {self.after:#x}" if self.write else f"{self.before:#x}"
        kind = "write" if self.write else "read "
        return (f"[{self.thread}] {self.rip:#x}  {self.disassembly:40s} {kind} "
                f"[{self.address:#x}]+{self.size} {self.names} = {change}")


def emit_trace(step) -> None:
    sink = TRACE
    if sink is None or not step.accesses:
        return
    thread = threading.get_native_id()
    for access in step.accesses:
        event = TraceEvent(thread, step.address, step.disassembly, access.address, access.size,
                           access.write, access.names, access.before, access.after)
        try:
            sink(event)
        except Exception as error:  # noqa: BLE001 - a broken trace sink must not stop emulation
            _write_stderr(f"regmap: trace callback failed: {type(error).__name__}: {error}\n")


def file_sink(stream):
    def write(event: TraceEvent) -> None:
        stream.write(f"regmap: {event}\n")
        stream.flush()
    return write


# -- alternate signal stacks ----------------------------------------------------------------------

ALTSTACKS: dict[int, int] = {}   # native thread id -> base of the region regmap gave it


def _new_altstack_region() -> int:
    """A region from a thread that has exited, or a fresh one.

    Threads at their first fault look for one at the same time, and the
    existence check lets the GIL go: a region is claimed by taking it out of
    ALTSTACKS (one atomic pop), never by deleting an entry another thread may
    have claimed since.
    """
    if len(ALTSTACKS) >= 16:
        for tid in list(ALTSTACKS):
            if not os.path.exists(f"/proc/self/task/{tid}"):
                base = ALTSTACKS.pop(tid, None)
                if base is not None:
                    return base
    return _sys.map_stack(ALTSTACK_SIZE, ALTSTACK_GUARD)


def give_altstack(frame) -> None:
    """Give the interrupted thread (which has no alternate signal stack) one of regmap's.

    sigreturn re-installs the alternate stack recorded in the frame's
    uc_stack, so that is where it is set: the thread has it from the moment
    this handler returns.
    """
    try:
        tid = _sys.gettid()
        base = ALTSTACKS.get(tid)   # a region this very thread id had before: free now
        if base is None:
            base = _new_altstack_region()
        frame.ss_sp = base + ALTSTACK_GUARD
        frame.ss_size = ALTSTACK_SIZE
        frame.ss_flags = 0
        ALTSTACKS[tid] = base
    except OSError:
        pass  # the handler still runs, on the thread's own stack


def ensure_altstack(state: State) -> None:
    """At map time: make sure the calling thread's alternate stack can run the handler."""
    current = _sys.get_altstack()
    if current.flags & _sys.SS_ONSTACK:
        return
    if not current.flags & _sys.SS_DISABLE and current.size >= ALTSTACK_MIN:
        return
    tid = _sys.gettid()
    base = ALTSTACKS.get(tid)
    if base is None:
        base = _new_altstack_region()
    old = _sys.set_altstack(base + ALTSTACK_GUARD, ALTSTACK_SIZE)
    ALTSTACKS[tid] = base
    state.altstack = (threading.get_ident(), old, base)


def restore_altstack(state: State) -> None:
    """At unmap time, on the thread that mapped: put its previous alternate stack back."""
    if state.altstack is None:
        return
    ident, old, base = state.altstack
    if ident != threading.get_ident():
        return  # another thread's alternate stack cannot be changed from here; ours stays
    current = _sys.get_altstack()
    if current.sp == base + ALTSTACK_GUARD and not current.flags & _sys.SS_ONSTACK:
        _sys.set_altstack(old.sp, old.size, old.flags & _sys.SS_DISABLE)


# -- install and remove ----------------------------------------------------------------------------

def forget_fast_paths() -> None:
    """Sites keep the last emulator's compiled functions: a new emulator decodes afresh."""
    for site in list(CODE_SITES.values()):
        site.fast, site.code = None, b""


def install(emulator, layout) -> State:
    global ACTIVE
    with _LOCK:
        if ACTIVE is not None:
            if ACTIVE.layout is layout and (emulator is None or emulator is ACTIVE.emulator):
                return ACTIVE
            if emulator is None:
                from regmap.x86 import Emulator
                emulator = Emulator(layout)
            patch.restore_all()   # translations name the old layout's registers
            state = State(emulator, layout, ACTIVE.previous)
            state.installed, state.altstack = ACTIVE.installed, ACTIVE.altstack
            state.address, state.beneath, state.handed_over = (ACTIVE.address, ACTIVE.beneath,
                                                               ACTIVE.handed_over)
            forget_fast_paths()
            ACTIVE = state
            return state
        if emulator is None:
            from regmap.x86 import Emulator
            emulator = Emulator(layout)
        callback = HANDLER_TYPE(on_signal)
        _CALLBACKS.append(callback)
        find_interpreter_code()
        address = ctypes.cast(callback, ctypes.c_void_p).value
        state = State(emulator, layout, {})
        state.address = address
        forget_fast_paths()
        ensure_altstack(state)
        ACTIVE = state  # before the handler can run
        try:
            for signo in SIGNALS:
                install_on_top(state, signo)
            state.beneath = dict(state.previous)
        except BaseException:
            for signo, previous in state.previous.items():
                _sys.set_action(signo, previous)
            restore_altstack(state)
            ACTIVE = None
            raise
        return state


def install_on_top(state: State, signo: int) -> None:
    """Install regmap's handler for `signo` over whatever is there, which becomes `previous`."""
    state.previous[signo] = _sys.install_handler(signo, state.address, HANDLER_FLAGS, HANDLER_MASK)
    state.installed[signo] = _sys.get_action(signo).key()
    state.handed_over.discard(signo)
    PREVIOUS[signo] = state.previous[signo]


def uninstall() -> bool:
    """Put back the dispositions (and the mapping thread's altstack) regmap replaced."""
    global ACTIVE
    with _LOCK:
        state = ACTIVE
        if state is None:
            return False
        patch.restore_all()       # while the handler is there for the sites that fault again
        for signo, previous in state.previous.items():
            current = _sys.get_action(signo)
            if current.key() != state.installed[signo] and current.handler != previous.handler:
                # Someone installed a handler over regmap's: leave theirs (it may chain to ours,
                # which stays alive and forwards to what regmap replaced).
                continue
            _sys.set_action(signo, previous)
        restore_altstack(state)
        patch.uninstall_trap_handler()
        ACTIVE = None
        FRAMES.clear()
        return True


def is_installed() -> bool:
    return ACTIVE is not None


# -- counters ------------------------------------------------------------------------------------

class Stats(NamedTuple):
    """A snapshot of the in-process runtime's counters."""
    emulated: int                 # faults served: window accesses emulated
    forwarded: int                # signals passed on as genuine (any reason)
    sent: int                     # of those, signals sent by a process rather than the CPU
    divide_errors: int            # SIGFPE delivered for an emulated divide
    unsupported: int              # window instructions regmap could not emulate
    internal_errors: int
    by_mnemonic: dict[str, int]
    by_site: dict[int, int]       # instruction address -> faults served there
    translated: tuple = ()        # regmap.x86.translate.Translation of each rewritten site

    @property
    def faults(self) -> int:
        return self.emulated

    def __str__(self) -> str:
        lines = [f"regmap: {self.emulated} faults emulated, {self.forwarded} forwarded, "
                 f"{self.divide_errors} divide errors, {self.unsupported} unsupported"]
        for mnemonic, count in sorted(self.by_mnemonic.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {mnemonic:12s} {count}")
        for address, count in sorted(self.by_site.items(), key=lambda kv: -kv[1])[:20]:
            lines.append(f"  {address:#018x} {count}")
        for translation in self.translated:
            lines.append(f"  translated {translation}")
        return "\n".join(lines)


def snapshot() -> Stats:
    by_site: dict[int, int] = {}
    by_mnemonic: dict[str, int] = {}
    for address, (count, mnemonic) in list(RETIRED_SITES.items()):
        if count:
            by_site[address] = by_site.get(address, 0) + count
            by_mnemonic[mnemonic or "?"] = by_mnemonic.get(mnemonic or "?", 0) + count
    for address, site in list(CODE_SITES.items()):
        if site.count:
            by_site[address] = by_site.get(address, 0) + site.count
            name = site.mnemonic or "?"
            by_mnemonic[name] = by_mnemonic.get(name, 0) + site.count
    c = COUNTERS
    return Stats(sum(by_site.values()), c.forwarded, c.sent, c.divide_errors, c.unsupported,
                 c.internal_errors, by_mnemonic, by_site, patch.translated())


def reset() -> None:
    global COUNTERS
    for site in list(CODE_SITES.values()):
        site.count = 0
    RETIRED_SITES.clear()
    COUNTERS = Counters()


def set_translate(after: int) -> None:
    """Translate a site once it has faulted `after` times (0: never)."""
    global TRANSLATE_AT
    TRANSLATE_AT = max(0, int(after))


def set_trace(target) -> None:
    global TRACE
    if target is None:
        TRACE = None
    elif callable(target) and not hasattr(target, "write"):
        TRACE = target
    elif hasattr(target, "write"):
        TRACE = file_sink(target)
    else:
        raise TypeError("set_trace takes None, a callable or a file-like object with write()")


def platform_problem() -> str | None:
    return None if sys.platform.startswith("linux") else sys.platform
