"""Genuine faults: what regmap's handler does with a signal that is not a window access.

A fault regmap cannot or must not emulate goes on exactly as it would have
without regmap (`forward`): to the handler regmap replaced, or back to the
kernel's default action through a re-fault.  An emulated divide by zero
becomes the SIGFPE the CPU's #DE would have raised (`deliver_divide_error`).
An instruction regmap cannot emulate gets one diagnostic line first
(`diagnose`).  Everything here runs inside the signal handler: no exception
may escape, and output goes straight to fd 2.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading

from regmap.errors import UnsupportedInstruction
from regmap.procmaps import mappings
from regmap.runtime import _sys
from regmap.runtime.frame import GREG_INDEX, TRAP_PF, FrameMachine

# A previous handler is called with the GIL held, as a C signal handler would run: nothing
# else in the process moves while it looks at the faulting state.
PREVIOUS_TYPE = ctypes.PYFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class Counters:
    __slots__ = ("forwarded", "sent", "divide_errors", "unsupported", "internal_errors", "by_signal")

    def __init__(self):
        self.forwarded = self.sent = self.divide_errors = self.unsupported = 0
        self.internal_errors = 0
        self.by_signal: dict[int, int] = {}

    def clear(self) -> None:
        self.__init__()

    def count_forwarded(self, signo: int) -> None:
        self.forwarded += 1
        self.by_signal[signo] = self.by_signal.get(signo, 0) + 1


COUNTERS = Counters()
# What the last installation replaced: a signal that reaches the handler after unmapping (it
# was on its way, or a handler installed over regmap's chains to it) is forwarded there.
PREVIOUS: dict[int, _sys.KernelSigaction] = {signo: _sys.KernelSigaction() for signo in (7, 11)}
# Not blocked while regmap's handler emulates (handler.HANDLER_FLAGS); blocked again as soon as
# it hands a signal on, so that anything it queues waits for its return and a fault of its own
# from then on ends the process, as without regmap.
FAULT_SIGNALS = (_sys.SIGSEGV, _sys.SIGBUS)


def forward(signo: int, info: int, machine: FrameMachine, state) -> None:
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

    Otherwise (a native library's handler, which may recover and return, or
    ``siglongjmp`` away): the signal mask it asked for (its sa_mask, the signal
    itself unless SA_NODEFER) and SA_RESETHAND's reset are made here, and the
    handler's entry jumps to it with the same three arguments once the Python
    part has returned (`take_jump`): nothing of regmap's is left on the stack
    beneath it.  Whatever it changes in the frame takes effect when it returns,
    and regmap stays installed.
    """
    _sys.block_signals(FAULT_SIGNALS)   # from here on a fault inside the handler kills, as before
    COUNTERS.count_forwarded(signo)
    previous = previous_action(signo, state)
    code = machine.si_code()
    from_cpu = 0 < code <= _sys.SI_KERNEL
    if not from_cpu:
        COUNTERS.sent += 1
    handler = previous.handler
    if from_cpu and ends_the_process(previous):
        hand_over(signo, previous, state)
        return
    if handler == _sys.SIG_IGN:
        return
    if handler == _sys.SIG_DFL:
        hand_over(signo, previous, state)
        _sys.queue_to_self(signo, machine.siginfo())
        return
    enter_previous(previous, signo, machine.frame.sigmask)
    _JUMP.target = handler
    JUMPS[0] += 1


_JUMP = threading.local()      # per thread: where the handler's entry goes on to, once back
# how many are left to take, a hint (0: the handler need not look); threads may race on it,
# and a target it missed is only a forwarded fault that faults once more and is forwarded again
JUMPS = [0]


def take_jump() -> int:
    """The address `forward` left for this thread's handler entry to jump to (0: none), taken."""
    target = getattr(_JUMP, "target", 0)
    if target:
        _JUMP.target = 0
        JUMPS[0] -= 1
    return target


def call_previous(previous: _sys.KernelSigaction, signo: int, info: int, ctx: int, sigmask: int) -> None:
    """Call the native handler regmap's replaced with the signal mask it asked for: the
    interrupted thread's ``sigmask``, its sa_mask, and the signal itself unless SA_NODEFER.
    A one-shot handler (SA_RESETHAND) leaves the default action behind it, as the kernel does."""
    old_mask = enter_previous(previous, signo, sigmask)
    try:
        PREVIOUS_TYPE(previous.handler)(signo, info, ctx)
    finally:
        _sys.set_thread_mask(old_mask)


def enter_previous(previous: _sys.KernelSigaction, signo: int, sigmask: int) -> int:
    """What the kernel does on the way into `previous`'s handler: the signal mask it asked for,
    and a one-shot handler's reset.  The mask before (sigreturn puts back the frame's own)."""
    if previous.flags & _sys.SA_RESETHAND:
        reset = _sys.KernelSigaction.from_buffer_copy(previous)
        reset.handler = _sys.SIG_DFL
        _sys.set_action(signo, reset)
    mask = sigmask | previous.mask
    mask = mask & ~(1 << signo - 1) if previous.flags & _sys.SA_NODEFER else mask | 1 << signo - 1
    return _sys.set_thread_mask(mask)


def previous_action(signo: int, state) -> _sys.KernelSigaction:
    """Whoever would have had `signo` without regmap."""
    if state is None:
        return PREVIOUS[signo]
    if signo in state.handed_over:
        # The handler regmap handed this signal to put regmap back and raised it again
        # (faulthandler does, when it was enabled over regmap): on to what regmap replaced.
        return state.beneath[signo]
    return state.previous[signo]


def ends_the_process(action: _sys.KernelSigaction) -> bool:
    """Whether a fault under `action` ends the process: the default action, an ignored fault
    (the kernel kills for it too), or the interpreter's own handler (faulthandler's traceback,
    then the default action)."""
    handler = action.handler
    return handler in (_sys.SIG_DFL, _sys.SIG_IGN) or is_interpreter_code(handler)


def hand_over(signo: int, previous: _sys.KernelSigaction, state) -> None:
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
        INTERPRETER_CODE[:] = [
            (m.start, m.end) for m in mappings("self")
            if "x" in m.perms and m.path
            and (m.path in names or os.path.basename(m.path).startswith("libpython"))]
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
    queue_as_the_cpu_would(frame, _sys.SIGFPE, _sys.FPE_INTDIV, frame.rip)


def deliver_fault(signo: int, info: int, machine: FrameMachine, fault, state) -> None:
    """An exception of the instruction itself (the native engine's #GP, #XM, #MF, #UD, #AC), as
    the kernel would deliver it: the frame untouched (rip at the instruction), the fault's signal
    with its si_code and si_addr.  A SIGSEGV or SIGBUS is the very signal being handled: its
    siginfo is rewritten and it goes where a genuine fault goes (`forward`); another signal is
    queued to this thread, as for a divide error."""
    frame = machine.frame
    address = frame.rip if fault.si_addr is None else fault.si_addr
    if fault.signo == signo:
        previous = previous_action(signo, state)
        if ends_the_process(previous):
            # `forward` would let the instruction fault again, on the window this time: the
            # process would die with that page fault's siginfo, not this exception's.
            COUNTERS.count_forwarded(signo)
            hand_over(signo, previous, state)
            queue_as_the_cpu_would(frame, signo, fault.si_code, address)
            return
        frame.si_code = fault.si_code
        frame.si_addr = address
        forward(signo, info, machine, state)
        return
    queue_as_the_cpu_would(frame, fault.signo, fault.si_code, address)


def deliver_memory_fault(signo: int, info: int, machine: FrameMachine, fault, state) -> None:
    """Real memory the instruction touches (its stack, a string destination) faulted: deliver
    what the CPU raised for it (`usercopy.CpuFault`: for a push onto a read-only page,
    SEGV_ACCERR at the stack address, where the window fault said SEGV_MAPERR at the window),
    with the trap number, error code and cr2 of that fault in the frame; without a record, the
    signal being handled goes on as it is."""
    cpu = fault.cpu
    if cpu is None:
        forward(signo, info, machine, state)
        return
    if cpu.signo == signo:
        frame = machine.frame
        frame.trapno, frame.err = cpu.trapno, cpu.err
        if cpu.trapno == TRAP_PF:
            frame.cr2 = cpu.si_addr
    deliver_fault(signo, info, machine, cpu, state)


def queue_as_the_cpu_would(frame, signo: int, si_code: int, address: int) -> None:
    """Queue `signo` to this thread with the kernel's siginfo for a CPU exception; as for a real
    one, a blocked or ignored signal is unblocked and reset to the default action first."""
    _sys.block_signals(FAULT_SIGNALS)   # a queued SIGSEGV/SIGBUS waits for the handler's return
    bit = 1 << (signo - 1)
    action = _sys.get_action(signo)
    if action.handler == _sys.SIG_IGN or frame.sigmask & bit:
        action.handler = _sys.SIG_DFL
        _sys.set_action(signo, action)
        frame.sigmask &= ~bit
    siginfo = (signo.to_bytes(4, "little") + bytes(4) + (si_code & 0xFFFFFFFF).to_bytes(4, "little")
               + bytes(4) + address.to_bytes(8, "little")).ljust(128, b"\0")
    _sys.queue_to_self(signo, siginfo)


# -- messages ---------------------------------------------------------------------------------------

def write_stderr(text: str) -> None:
    """One line straight to fd 2: never through sys.stderr, whose lock the thread may hold."""
    data = text.encode("utf-8", "replace")
    try:
        while data:
            data = data[os.write(2, data):]
    except OSError:
        pass


def touched_registers(machine: FrameMachine, code: bytes, address: int, layout) -> str:
    """The window registers the instruction's memory operand covers, as ``name=value`` pairs."""
    if layout is None:
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
                (basis, hi, lo), = layout.registers.slices(REGISTER_NAMES[reg])
                value = machine.read_register(basis) >> lo & ((1 << (hi - lo + 1)) - 1)
                ea += value * (ins.memory_index_scale if reg == ins.memory_index else 1)
        ea &= (1 << 64) - 1
        names = []
        for place in layout.placements():
            if place.address < ea + size and ea < place.address + place.size:
                value = machine.read_register(place.name) if place.name in GREG_INDEX \
                    else None
                names.append(place.name if value is None else f"{place.name}={value:#x}")
        where = f"window {ea:#x}+{size}"
        return f"{where}: {', '.join(names) or 'no placed register'}"
    except Exception as error:  # noqa: BLE001
        return f"(registers unknown: {error})"


def diagnose(error: UnsupportedInstruction, machine: FrameMachine, layout) -> None:
    """One line for an instruction regmap cannot emulate, before it is forwarded."""
    COUNTERS.unsupported += 1
    write_stderr(
        f"regmap: unsupported instruction at {error.address:#x}: {error.code.hex(' ')}  "
        f"({error.disassembly}) touches {touched_registers(machine, error.code, error.address, layout)}"
        f" [{error.reason}]; treated as a genuine fault\n")
