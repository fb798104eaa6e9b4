"""The SIGSEGV/SIGBUS handler: emulate window accesses, pass every other fault on untouched.

The handler is a ctypes callback installed with ``sigaction`` (SA_SIGINFO |
SA_ONSTACK | SA_RESTART | SA_NODEFER; SIGFPE blocked while it runs).  SIGSEGV
and SIGBUS stay deliverable while it emulates, so that a fault of the copy
routine (`usercopy`) re-enters it and is recovered; the moment it decides a
signal is genuine it blocks them (`genuine.forward`), as they were before.
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
import sys
import threading
from typing import NamedTuple

from regmap.accesses import format_access
from regmap.errors import (DivideError, InstructionFault, MemoryFault, NotWindowAccess, RegmapError,
                           UnsupportedInstruction)
from regmap.runtime import (_sys, dispatch, genuine, liveflags, patch, sites, threadstate, trampolines,
                            usercopy)
from regmap.runtime.altstack import (ALTSTACK_SIZE, ensure_altstack, give_altstack,  # noqa: F401
                                     restore_altstack)
from regmap.runtime.frame import CODE_SITES, RETIRED_SITES, FrameMachine
from regmap.runtime.genuine import PREVIOUS, deliver_divide_error, diagnose, forward
from regmap.runtime.sites import MEMORY
from regmap.x86 import stub
from regmap.x86.compiler import Declined

# returns where the entry's machine code goes on to: the program's handler, or 0 (`genuine.forward`)
HANDLER_TYPE = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)

SIGNALS = (_sys.SIGSEGV, _sys.SIGBUS)
# SIGSEGV and SIGBUS are not blocked while the handler runs (SA_NODEFER, and not in the mask):
# the copy routine's faults must reach it (`usercopy`).  SIGFPE is, so that a divide error's
# queued SIGFPE arrives when the handler returns.
HANDLER_FLAGS = _sys.SA_SIGINFO | _sys.SA_ONSTACK | _sys.SA_RESTART | _sys.SA_NODEFER
HANDLER_MASK = (_sys.SIGFPE,)


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
        self.address = 0                # the handler's address, for re-installing it (guard.py)
        # whether known sites' faults are sent to trampolines by machine code (`dispatch`):
        # not with a stand-in emulator, whose answers are the point
        self.dispatching = False
        # What the first installation replaced, and the signals already handed over to
        # `previous` (see `forward`).
        self.beneath: dict[int, _sys.KernelSigaction] = dict(previous)
        self.handed_over: set[int] = set()


ACTIVE: State | None = None
FRAMES: dict[int, FrameMachine] = {}
MAX_FRAMES = 4096
# The runtime's emulator keeps few decoded forms: a site with a fast path keeps its function
# in the site cache and needs its form again only on the generic path.
RUNTIME_FORMS = 8192
TRACE = None            # None, or a callable taking one TraceEvent per window access
TRANSLATE_AT = 0        # faults at a site before it is translated (regmap.runtime.patch); 0: never
_CALLBACKS: list = []   # every callback ever installed stays alive: a thread may still be in one
_LOCK = threading.Lock()


# -- the handler --------------------------------------------------------------------------------

def on_signal(signo: int, info: int, ctx: int, _jumps=genuine.JUMPS) -> int | None:
    """The callback: serve the signal; the handler regmap forwards it to, if any, is jumped to by
    the entry's machine code after this has returned (`genuine.forward`)."""
    serve(signo, info, ctx)
    return genuine.take_jump() if _jumps[0] else None


def serve(signo: int, info: int, ctx: int, _frames=FRAMES, _sites=CODE_SITES) -> None:
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
            if runaway(frame, ctx):
                give_up(signo)
            elif not usercopy.recover(frame) and not (
                    trampolines.TABLE and trampolines.genuine_fault(signo, info, machine, state)):
                forward(signo, info, machine, state)
            return
        # The CPU was executing the instruction at rip when it faulted on a data access, so the
        # instruction's bytes are readable: compare them in place with what the site last held.
        site = _sites.get(frame.rip)
        if site is not None:
            fast = site.fast
            # (the fault that makes a site hot takes the general path: `emulate`)
            hot = site.translation is None and TRANSLATE_AT and site.count + 1 >= TRANSLATE_AT
            if fast is not None and MEMORY[site.address:site.end] == site.code and TRACE is None \
                    and not hot:
                try:
                    fast(frame, machine)
                except (Declined, NotWindowAccess):
                    # not an address its compiled code covers, or not a window access at all
                    # (a misaligned SSE operand's #GP): the general path decides, and forwards
                    emulate(signo, info, machine, state)
                    return
                site.count += 1
                plan(site, frame, state)
                return
        emulate(signo, info, machine, state)
    except MemoryFault as fault:
        genuine.deliver_memory_fault(signo, info, machine, fault, ACTIVE)
    except UnsupportedInstruction as error:
        state = ACTIVE
        diagnose(error, machine, None if state is None else state.layout)
        forward(signo, info, machine, ACTIVE)
    except DivideError:
        deliver_divide_error(machine)
    except InstructionFault as fault:
        genuine.deliver_fault(signo, info, machine, fault, ACTIVE)
    except BaseException as error:  # noqa: BLE001 - nothing may escape a signal handler
        internal_error(signo, info, ctx, error)


def emulate(signo: int, info: int, machine: FrameMachine, state: State) -> None:
    """The general path: the emulator's `step`, then what the site should remember."""
    if runaway(machine.frame, machine.ctx):
        give_up(signo)
        return
    if usercopy.recover(machine.frame):
        return   # the copy routine faulted (a #GP, or a stack inside the window)
    machine.fetch_direct = True
    machine.site = None
    machine.original = None
    if (patch.PATCHES or patch.BUSY) and patch.settle(machine.frame):
        return
    if trampolines.TABLE and trampolines.fault_inside(signo, info, machine, state):
        return
    flags_before = machine.frame.rflags
    # a register-addressed site about to be hot: its window address, before the instruction
    # changes the registers (through the window, it may change those of its own address)
    address = hot_address(machine.frame.rip, machine.read_register) if TRANSLATE_AT else None
    try:
        if TRACE is None:
            step = state.step(machine)
        else:
            step = state.step(machine, True)
            emit_trace(step)
    except NotWindowAccess:
        if machine.original is not None:    # a stub's copy faulted outside the window
            trampolines.deliver(signo, info, machine, state)
            return
        # another thread may have begun rewriting the site after `settle` looked (the emulator
        # then fetched its int3 or jmp): it runs again, whatever the site holds by then
        if (patch.PATCHES or patch.BUSY) and patch.settle(machine.frame):
            return
        if not retry_longer(machine, state):
            forward(signo, info, machine, state)
        return
    if (machine.frame.rflags ^ flags_before) & liveflags.CARRIED:
        liveflags.set_live(machine.frame.rflags)    # sigreturn takes NT and ID from the handler
    site = machine.site
    if site is None or site.address != step.address:
        site = CODE_SITES.get(step.address) or sites.new_site(step.address)
    site.count += 1
    if site.code != step.code:
        site.decoded(step.code, step.mnemonic, fast_path(state, step))
    if site.translation is None and TRANSLATE_AT and site.count >= TRANSLATE_AT:
        patch.hot_site(site, state.layout, TRACE, address)
    if state.dispatching and TRACE is None and machine.original is not None:
        # a stub's copy faulted (another window address): its next such faults are served by
        # the handler's machine code, at the copy's address
        dispatch.learn(trampolines.copy_site(machine.original, site), machine.frame, state.layout)
    else:
        plan(site, machine.frame, state)


def plan(site, frame, state: State) -> None:
    """Let the site's next faults be served by the handler's machine code (`dispatch.learn`),
    once translation has had its chance at it: a site it rewrites stops faulting, and once sent
    to a trampoline from the handler, its faults would no longer reach the count."""
    if state.dispatching and TRACE is None and (site.translation is not None or not TRANSLATE_AT):
        dispatch.learn(site, frame, state.layout)


def hot_address(rip: int, read) -> int | None:
    """The window address of the register-addressed instruction at `rip` if this fault may make
    its site hot, from the registers `read(name)` gives; else None."""
    site = CODE_SITES.get(rip)
    count = 0 if site is None else site.count       # (a new site: no read, no decode)
    if (site is not None and site.translation is not None) or count + 1 < TRANSLATE_AT:
        return None
    code = site.code if site is not None and site.code else _sys.read_code(rip, 15)
    return stub.window_address(rip, code, read)


def fast_path(state: State, step):
    """The emulator's straight-line function for the instruction just run, if it has one.

    (`Emulator.form_at(address, code)` returns the cached decoded form; its
    ``fast(registers, machine)``, over the machine's register namespace (the
    frame), is what ``step`` itself runs for that form.)
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
        for old in list(FRAMES)[:MAX_FRAMES // 4]:   # the oldest quarter: no cliff for the rest
            del FRAMES[old]
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


# SIGSEGV and SIGBUS reach the handler while it emulates, so a fault of its own re-enters it.
# One level is the copy routine's fault, two or three a trace callback's native code using the
# window (15-31 KiB each at most); a handler that goes on faulting inside itself is a bug, and
# is stopped here, before CPython's recursion limit refuses to enter the callback at all (ctypes
# would then print the RecursionError and return, and the fault would repeat forever).
NESTING_LIMIT = 128 * 1024


def runaway(frame, ctx: int) -> bool:
    """Whether this frame lies that deep in the thread's alternate stack (the kernel records the
    stack's settings in the frame, not whether the interrupted code was on it)."""
    depth = frame.ss_sp + frame.ss_size - ctx
    return not frame.ss_flags & _sys.SS_DISABLE and NESTING_LIMIT < depth <= frame.ss_size


def give_up(signo: int) -> None:
    """The default action for the fault signals: the faulting instruction runs again and the
    kernel ends the process with its signal, as without regmap."""
    genuine.COUNTERS.internal_errors += 1
    genuine.write_stderr(f"regmap: signal {signo} inside regmap's own handler, nested too deep; "
                         "treated as a genuine fault\n")
    for fault_signal in SIGNALS:
        _sys.set_action(fault_signal, _sys.KernelSigaction())


def internal_error(signo: int, info: int, ctx: int, error: BaseException) -> None:
    """A bug in regmap (or an exception raised into the handler): report, then forward."""
    genuine.COUNTERS.internal_errors += 1
    try:
        machine = FRAMES.get(ctx) or FrameMachine(ctx, info)
        rip = machine.frame.rip
        genuine.write_stderr(f"regmap: internal error handling signal {signo} at rip {rip:#x}: "
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

    def __str__(self) -> str:      # the trace line of `regmap exec --trace`, the access's own form
        return f"[{self.thread}] {self.rip:#x}  {self.disassembly}  {format_access(self)}"


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
            genuine.write_stderr(f"regmap: trace callback failed: {type(error).__name__}: {error}\n")


def file_sink(stream):
    def write(event: TraceEvent) -> None:
        stream.write(f"regmap: {event}\n")
        stream.flush()
    return write


# -- install and remove ----------------------------------------------------------------------------

def forget_fast_paths() -> None:
    """Sites keep the last emulator's compiled functions: a new emulator decodes afresh."""
    for site in list(CODE_SITES.values()):
        site.fast, site.code = None, b""


def install(emulator, layout) -> State:
    global ACTIVE
    with _LOCK:
        if ACTIVE is not None and ACTIVE.layout is layout \
                and (emulator is None or emulator is ACTIVE.emulator):
            return ACTIVE
        dispatching = emulator is None      # (regmap's own emulator: fast faults may serve it)
        if emulator is None:
            from regmap.x86 import Emulator
            emulator = Emulator(layout, max_forms=RUNTIME_FORMS)
        if ACTIVE is not None:
            patch.restore_all()   # translations name the old layout's registers
            dispatch.forget()     # and so do the trampolines of known sites
            state = State(emulator, layout, ACTIVE.previous)
            state.dispatching = dispatching
            state.installed, state.altstack = ACTIVE.installed, ACTIVE.altstack
            state.address, state.beneath, state.handed_over = (ACTIVE.address, ACTIVE.beneath,
                                                               ACTIVE.handed_over)
            forget_fast_paths()
            ACTIVE = state
            return state
        usercopy.routine()      # generated now, not at the first fault
        callback = HANDLER_TYPE(on_signal)
        _CALLBACKS.append(callback)
        genuine.find_interpreter_code()
        # installed behind a prologue that keeps a thread state for a thread Python never saw,
        # itself behind the machine code that serves known sites
        address = dispatch.entry(threadstate.entry(ctypes.cast(callback, ctypes.c_void_p).value))
        state = State(emulator, layout, {})
        state.address = address
        state.dispatching = dispatching
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
        dispatch.forget()
        for signo, previous in state.previous.items():
            current = _sys.get_action(signo)
            if current.key() != state.installed[signo] and current.handler != previous.handler:
                # Someone installed a handler over regmap's: leave theirs (it may chain to ours,
                # which stays alive and forwards to what regmap replaced).
                continue
            _sys.set_action(signo, previous)
        restore_altstack(state)
        patch.uninstall_trap_handler()
        trampolines.uninstall_handlers()
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
    dispatched: int = 0           # of `emulated`, faults sent to a trampoline by machine code

    @property
    def faults(self) -> int:
        return self.emulated

    @property
    def translated_by_kind(self) -> dict[str, int]:
        """How many sites were translated each way: "in place", "trampoline"."""
        counts: dict[str, int] = {}
        for translation in self.translated:
            counts[translation.kind] = counts.get(translation.kind, 0) + 1
        return counts

    def __str__(self) -> str:
        lines = [f"regmap: {self.emulated} faults emulated, {self.forwarded} forwarded, "
                 f"{self.divide_errors} divide errors, {self.unsupported} unsupported"]
        for mnemonic, count in sorted(self.by_mnemonic.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {mnemonic:12s} {count}")
        for address, count in sorted(self.by_site.items(), key=lambda kv: -kv[1])[:20]:
            lines.append(f"  {address:#018x} {count}")
        if self.translated:
            lines.append("  translated sites: " + ", ".join(
                f"{count} {kind}" for kind, count in sorted(self.translated_by_kind.items())))
        for translation in self.translated:
            lines.append(f"  translated {translation}")
        return "\n".join(lines)


def snapshot() -> Stats:
    by_site: dict[int, int] = {}
    by_mnemonic: dict[str, int] = {}
    by_mnemonic.update(sites.RETIRED)     # sites forgotten even by address
    for address, (count, mnemonic) in list(RETIRED_SITES.items()):
        if count:
            by_site[address] = by_site.get(address, 0) + count
            by_mnemonic[mnemonic or "?"] = by_mnemonic.get(mnemonic or "?", 0) + count
    for address, site in list(CODE_SITES.items()):
        if site.count:
            by_site[address] = by_site.get(address, 0) + site.count
            name = site.mnemonic or "?"
            by_mnemonic[name] = by_mnemonic.get(name, 0) + site.count
    dispatched = 0
    for address, mnemonic, count in dispatch.counts():
        dispatched += count
        address = trampolines.site_of(address)       # (a stub's copy counts for its site)
        by_site[address] = by_site.get(address, 0) + count
        by_mnemonic[mnemonic or "?"] = by_mnemonic.get(mnemonic or "?", 0) + count
    c = genuine.COUNTERS
    return Stats(sum(by_mnemonic.values()), c.forwarded, c.sent, c.divide_errors, c.unsupported,
                 c.internal_errors, by_mnemonic, by_site, patch.translated(), dispatched)


def reset() -> None:
    for site in list(CODE_SITES.values()):
        site.count = site.seen = 0
    RETIRED_SITES.clear()
    sites.RETIRED.clear()
    genuine.COUNTERS.clear()
    dispatch.reset()


def set_translate(after: int) -> None:
    """Translate a site once it has faulted `after` times (0: never)."""
    global TRANSLATE_AT
    TRANSLATE_AT = max(0, int(after))


def set_trace(target) -> None:
    global TRACE
    if target is not None:
        dispatch.forget()      # every access is traced: every fault through Python
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
