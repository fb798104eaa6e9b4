"""PUSH and POP with a memory operand: the operand may be in the window, the stack is real."""
from iced_x86 import Mnemonic as M

from regmap.x86.semantics import mask, semantics


@semantics(M.PUSH)
def push(cpu, form):
    source, = form.ops
    size = source.width // 8
    value = source.read(cpu)  # `push [rsp slot]` pushes the old rsp
    push_value(cpu, form, value, size)


def push_value(cpu, form, value: int, size: int) -> None:
    rsp = (cpu.reg("rsp") - size) & mask(64)
    form.write_memory(cpu, rsp, size, value)
    cpu.set_reg("rsp", rsp)


@semantics(M.POP)
def pop(cpu, form):
    """The destination's address is computed after rsp is incremented (SDM, POP)."""
    dest, = form.ops
    size = dest.width // 8
    rsp = cpu.reg("rsp")
    value = form.read_memory(cpu, rsp, size)
    cpu.set_reg("rsp", (rsp + size) & mask(64))
    cpu.addresses.pop(dest, None)
    dest.write(cpu, value)
