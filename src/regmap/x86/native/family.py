"""The native engine as a semantic family: `execute(cpu, form)` for forms without Python semantics.

The thread's state is read through the `Cpu` (so every backend provides it the
same way: a signal frame's XSAVE image, a tracee's NT_X86_XSTATE, a dict), the
window image is built from the layout, the instruction runs on the host CPU with
its window operand on the shadow page, and the difference is committed like any
other instruction's effect: register writes first, then the window bytes the
instruction stored, through the layout (so the rip, rflags and mxcsr slots keep
their rules).  A fault of the instruction itself becomes `InstructionFault`,
delivered by the backend at the instruction's own address.
"""
from __future__ import annotations

from iced_x86 import OpKind

from regmap.errors import InstructionFault, LayoutError, UnsupportedInstruction
from regmap.x86.native import engine, host, region as _region
from regmap.x86.native.plan import Plan, plan_for
from regmap.x86.native.state import NativeState

M64 = (1 << 64) - 1
# rflags bits an instruction may change: CF PF AF ZF SF DF OF (AC, ID are not a data instruction's)
RESULT_FLAGS = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800
_X87 = ("fcw", "fsw", "ftw")
_GPRS = _region.GPRS
_WINDOW_BASIS: dict[int, tuple[str, ...]] = {}
_BLANK = NativeState(stack=None)       # what an instruction does not use: copied, not rebuilt


def execute(cpu, form) -> None:
    """The semantics of every form the native engine runs (`Form.execute`)."""
    plan: Plan = form.native
    problem = host.platform_problem()
    if problem:
        raise UnsupportedInstruction(form.address, form.code, form.disassembly, problem)
    if plan.refusal:
        raise UnsupportedInstruction(form.address, form.code, form.disassembly, plan.refusal)
    r = _region.ensure()
    reads, writes, code, bias = plan.locate(cpu, form.memory[0].operand, r, form)
    layout = cpu.layout
    for start, size, _ in reads:
        layout.resolve(start, size)          # a hole faults (LayoutError) before anything runs
    before = gather(cpu, plan, reads, writes)
    run = before.copy()
    run.gpr["rsp"] = r.stack_top             # the engine's own stack: a signal frame always fits
    if plan.swap:
        run.gpr[plan.swap] = before.gpr["rsp"]
    for name, amount in bias.items():
        run.gpr[name] = (run.gpr[name] + amount) & M64
    try:
        after = engine.execute(code, run, lambda: f"{form.code.hex(' ')} ({form.disassembly})",
                               vectors=plan.vectors, x87=plan.x87)
    except engine.NativeFault as fault:
        raise _delivered(fault, form, r) from None
    after.gpr["rsp"] = after.gpr[plan.swap] if plan.swap else before.gpr["rsp"]
    if plan.swap:
        after.gpr[plan.swap] = before.gpr[plan.swap]
    for name in bias:
        after.gpr[name] = before.gpr[name]      # the pointer is only an address (xlat, maskmovq)
    for name in _GPRS:
        if name not in plan.gprs:
            after.gpr[name] = before.gpr[name]  # not the instruction's: whatever the block held
    commit(cpu, plan, before, after, writes)


def gather(cpu, plan: Plan, reads, writes) -> NativeState:
    """The part of the thread's state the instruction may use, and the window bytes it accesses."""
    state = _BLANK.copy()
    gpr = state.gpr
    for name in plan.gprs:
        gpr[name] = cpu.reg(name)
    state.rflags = cpu.reg("rflags")
    state.mxcsr = cpu.reg("mxcsr")
    for i in plan.vectors:
        state.zmm[i] = cpu.reg(f"zmm{i}")
    if host.vector_width() == 512:
        for i in plan.opmasks:
            state.k[i] = cpu.reg(f"k{i}")
    if plan.x87 and "fcw" in cpu.layout.registers.registers:
        state.fcw, state.fsw, state.ftw = (cpu.reg(name) for name in _X87)
        state.st = [cpu.reg(f"st{i}") for i in range(8)]
    if plan.whole:
        state.shadow = cpu.layout.image({b: cpu._window_reg(b) for b in _window_basis(cpu.layout)})
        for start, size, _ in reads:
            cpu.window_read(start, size)        # for a trace
        return state
    shadow = bytearray(len(state.shadow))
    for start, size, _ in reads:
        shadow[start:start + size] = cpu.window_read(start, size).to_bytes(size, "little")
    for start, size, _ in writes:
        try:
            shadow[start:start + size] = cpu._peek_window(start, size).to_bytes(size, "little")
        except LayoutError:
            pass                                # a hole: a store there faults when committed
    state.shadow = bytes(shadow)
    return state


def _window_basis(layout) -> tuple[str, ...]:
    names = _WINDOW_BASIS.get(id(layout))
    if names is None:
        names = tuple(dict.fromkeys(s.basis for s in layout.registers.slices(layout.window) if s.basis))
        _WINDOW_BASIS[id(layout)] = names
    return names


def commit(cpu, plan: Plan, before: NativeState, after: NativeState, ranges) -> None:
    """Stage the instruction's effect in `cpu`: changed registers, then its window stores."""
    for name, value in after.gpr.items():
        if value != before.gpr[name]:
            cpu.set_reg(name, value)
    if (after.rflags ^ before.rflags) & RESULT_FLAGS:
        cpu.set_reg("rflags", (before.rflags & ~RESULT_FLAGS) | (after.rflags & RESULT_FLAGS))
    if after.mxcsr != before.mxcsr:
        cpu.set_reg("mxcsr", after.mxcsr)
    beyond = -1 << host.vector_width()     # bits this CPU lacks: kept, unless a VEX write zeroes them
    for i in plan.vectors:
        value = after.zmm[i] if i in plan.zeroed else after.zmm[i] | (before.zmm[i] & beyond)
        if value != before.zmm[i]:
            cpu.set_reg(f"zmm{i}", value)
    if host.vector_width() == 512:
        for i in plan.opmasks:
            if after.k[i] != before.k[i]:
                cpu.set_reg(f"k{i}", after.k[i])
    if plan.x87 and "fcw" in cpu.layout.registers.registers:
        for name in _X87:
            if getattr(after, name) != getattr(before, name):
                cpu.set_reg(name, getattr(after, name))
        for i in range(8):
            if after.st[i] != before.st[i]:
                cpu.set_reg(f"st{i}", after.st[i])
    for start, size, always in ranges:
        new = after.shadow[start:start + size]
        if always:
            cpu.window_write(start, size, int.from_bytes(new, "little"))
            continue
        old = before.shadow[start:start + size]
        for run_start, run_end in _changed_runs(old, new):
            cpu.window_write(start + run_start, run_end - run_start,
                             int.from_bytes(new[run_start:run_end], "little"))


class NativeOperand:
    """A native form's memory operand as the emulator's window check sees it."""

    __slots__ = ("plan", "operand")
    is_memory = True

    def __init__(self, plan: Plan, operand):
        self.plan, self.operand = plan, operand

    def in_window(self, cpu) -> bool:
        return self.plan.in_window(cpu, self.operand)


def prepare(form, instruction, factory) -> bool:
    """Make ``form`` a native form if the engine can run it: its plan, its window operand, its
    semantics.  False if it has no memory operand the engine knows."""
    plan = plan_for(instruction, form.code)
    if plan.kind == "explicit" and not any(instruction.op_kind(i) == OpKind.MEMORY
                                           for i in range(instruction.op_count)):
        return False
    operand = factory.memory(instruction) if plan.kind == "explicit" else None
    form.native = plan
    form.memory = (NativeOperand(plan, operand),)
    form.execute = execute
    return True


def _changed_runs(old: bytes, new: bytes):
    """(start, end) of each run of bytes that differ."""
    i, n = 0, len(old)
    while i < n:
        if old[i] != new[i]:
            j = i
            while j < n and old[j] != new[j]:
                j += 1
            yield i, j
            i = j
        else:
            i += 1


def _delivered(fault: engine.NativeFault, form, r) -> Exception:
    """The CPU's exception as the program would see it: at the instruction's own address."""
    if not fault.in_instruction:
        return UnsupportedInstruction(form.address, form.code, form.disassembly,
                                      f"the host CPU refused the thread's state: {fault}")
    address = fault.address
    if r.insn <= address < r.insn + 16:
        address = form.address
    elif r.shadow - 0x1000 <= address < r.shadow + 0x2000:
        address = (address - r.shadow) & M64          # an access that ran off the window
    return InstructionFault(f"{form.disassembly}: {fault.signal_name} (si_code {fault.si_code})",
                            fault.signo, fault.si_code, address)

