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

from regmap.errors import LayoutError, UnsupportedInstruction
from regmap.x86 import host
from regmap.x86.native import elements, engine, region as _region
from regmap.x86.native.fast import compile_native
from regmap.x86.native.plan import Plan, plan_for

M64 = (1 << 64) - 1
_WINDOW_BASIS: dict[int, tuple[str, ...]] = {}


def execute(cpu, form) -> None:
    """The semantics of every form the native engine runs (`Form.execute`)."""
    plan: Plan = form.native
    problem = host.platform_problem()
    if problem:
        raise UnsupportedInstruction(form.address, form.code, form.disassembly, problem)
    if plan.refusal:
        raise UnsupportedInstruction(form.address, form.code, form.disassembly, plan.refusal)
    r = _region.ensure()
    if plan.kind == "vsib":
        active = plan.active(cpu)
        if plan.element_wise(cpu, active, r):   # window and real memory mixed, or a hole
            return elements.run(cpu, form, plan, r, active)
    reads, writes, code, bias = plan.locate(cpu, form.memory[0].operand, r, form)
    layout = cpu.layout
    # a hole faults (LayoutError) before anything runs: where the instruction reads, or surely stores
    for start, size, _ in reads + [write for write in writes if write[2]]:
        layout.resolve(start, size)
    transfer = plan.transfer("fcw" in layout.registers.registers)
    before = [cpu.reg(name) for name in transfer.names]
    window = _window(cpu, plan, reads, writes)
    run = before.copy()
    index = transfer.index
    if plan.swap:                            # rsp is the stub's during the run; its value is here
        run[index[plan.swap]] = before[index["rsp"]]
    for name, amount in bias.items():
        run[index[name]] = (run[index[name]] + amount) & M64
    try:
        after, stored = engine.run_transfer(r, code, transfer, run,
                                            plan.signals(before[index["rflags"]], before[index["mxcsr"]]),
                                            window, writes, lambda: f"{form.code.hex(' ')} ({form.disassembly})",
                                            form.address)
    except engine.NativeFault as fault:
        raise engine.delivered(fault, form, r) from None
    plan.ran()
    if "rsp" in index:
        after[index["rsp"]] = after[index[plan.swap]] if plan.swap else before[index["rsp"]]
    if plan.swap:
        after[index[plan.swap]] = before[index[plan.swap]]
    for name in bias:
        after[index[name]] = before[index[name]]     # the pointer is only an address (xlat, maskmovq)
    commit(cpu, transfer.names, before, after, writes, window, stored)


def _window(cpu, plan: Plan, reads, writes) -> list[tuple[int, bytes]]:
    """The window bytes the instruction may access, as ``(address, bytes)`` pieces: what it reads
    (through the `Cpu`, so a trace sees it) and what it may leave unchanged where it stores."""
    if plan.whole:
        image = cpu.layout.image({b: cpu._window_reg(b) for b in _window_basis(cpu.layout)})
        for start, size, _ in reads:
            cpu.window_read(start, size)        # for a trace
        return [(0, image)]
    pieces = [(start, cpu.window_read(start, size).to_bytes(size, "little")) for start, size, _ in reads]
    for start, size, _ in writes:
        try:
            pieces.append((start, cpu._peek_window(start, size).to_bytes(size, "little")))
        except LayoutError:
            pieces.insert(0, (start, bytes(size)))  # a hole: zeros; a store there faults when committed
    return pieces


def _window_basis(layout) -> tuple[str, ...]:
    names = _WINDOW_BASIS.get(id(layout))
    if names is None:
        names = tuple(dict.fromkeys(s.basis for s in layout.registers.slices(layout.window) if s.basis))
        _WINDOW_BASIS[id(layout)] = names
    return names


def commit(cpu, names, before, after, writes, window, stored) -> None:
    """Stage the instruction's effect in `cpu`: changed registers, then its window stores (an
    unconditional one whole, a conditional one where the bytes changed)."""
    for name, old, new in zip(names, before, after):
        if new != old:
            cpu.set_reg(name, new)
    for (start, size, always), new in zip(writes, stored):
        if always:
            cpu.window_write(start, size, int.from_bytes(new, "little"))
            continue
        old = _bytes_at(window, start, size)
        for run_start, run_end in engine.changed_runs(old, new):
            cpu.window_write(start + run_start, run_end - run_start,
                             int.from_bytes(new[run_start:run_end], "little"))


def _bytes_at(window, start: int, size: int) -> bytes:
    """What the shadow page held at start..+size before the run (zero where nothing was put)."""
    data = bytearray(size)
    for at, piece in window:
        low, high = max(at, start), min(at + len(piece), start + size)
        if low < high:
            data[low - start:high - start] = piece[low - at:high - at]
    return bytes(data)


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
    semantics and its fast path (`fast.compile_native`, None for a shape it does not take).
    False if it has no memory operand the engine knows."""
    plan = plan_for(instruction, form.code)
    if plan.kind == "explicit" and not any(instruction.op_kind(i) == OpKind.MEMORY
                                           for i in range(instruction.op_count)):
        return False
    operand = factory.memory(instruction) if plan.kind == "explicit" else None
    form.native = plan
    form.memory = (NativeOperand(plan, operand),)
    form.execute = execute
    form.fast = compile_native(form, factory.layout)
    return True
