"""PUSH, POP, PUSHF, POPF, ENTER and LEAVE.

The stack is memory like any other: real memory, or the window when rsp points into page 0
(`Form.read_memory`/`write_memory` decide by address), so `push rax` with rsp = 0x48 sets r8.
"""
from iced_x86 import Code, Mnemonic as M

from regmap.errors import UnsupportedInstruction
from regmap.x86 import flags
from regmap.x86.operands import ImmediateOperand, SelectorOperand
from regmap.x86.semantics import mask, semantics


def _stack_size(form) -> int:
    """The bytes one push or pop moves: the stack operand size (8, or 2 with 66h), not the
    operand's (`push 5` pushes a sign-extended qword)."""
    return abs(form.instruction.stack_pointer_increment)


@semantics(M.PUSH)
def push(cpu, form):
    source, = form.ops
    if isinstance(source, SelectorOperand):
        # Intel cores store 16 bits of a selector push, AMD the zero-extended qword: no one answer
        raise UnsupportedInstruction(form.address, form.code, form.disassembly,
                                     "push of a segment register (Intel and AMD differ)")
    size = _stack_size(form)
    if isinstance(source, ImmediateOperand):
        value = form.instruction.immediate(0)          # iced-x86 sign-extends it to 64 bits
    else:
        value = source.read(cpu)  # `push [rsp slot]` pushes the old rsp
    push_value(cpu, form, value, size)


def push_value(cpu, form, value: int, size: int) -> None:
    rsp = (cpu.reg("rsp") - size) & mask(64)
    form.write_memory(cpu, rsp, size, value)
    cpu.set_reg("rsp", rsp)


def pop_value(cpu, form, size: int) -> int:
    rsp = cpu.reg("rsp")
    value = form.read_memory(cpu, rsp, size)
    cpu.set_reg("rsp", (rsp + size) & mask(64))
    return value


@semantics(M.POP)
def pop(cpu, form):
    """The destination's address is computed after rsp is incremented (SDM, POP)."""
    dest, = form.ops
    if isinstance(dest, SelectorOperand):
        raise UnsupportedInstruction(form.address, form.code, form.disassembly,
                                     "pop of a segment register")
    value = pop_value(cpu, form, _stack_size(form))
    cpu.addresses.pop(dest, None)
    dest.write(cpu, value)


@semantics(M.PUSHF, M.PUSHFQ)
def pushf(cpu, form):
    """What PUSHFQ stores: RF and VM read as 0 (the kernel's RF of a faulting instruction is not
    the program's), as the rflags slot reads."""
    push_value(cpu, form, cpu.rflags() & ~flags.PUSHFQ_HIDDEN, _stack_size(form))


@semantics(M.POPF, M.POPFQ)
def popf(cpu, form):
    """Only what POPF may change at CPL 3 changes (`Cpu.commit` keeps the others, as for a write
    to the rflags slot); a 16-bit POPF leaves bits 16 and up alone."""
    size = _stack_size(form)
    value = pop_value(cpu, form, size)
    if size == 2:
        value |= cpu.rflags() & ~0xFFFF
    cpu.set_reg("rflags", value)


@semantics(M.ENTER)
def enter(cpu, form):
    """ENTER size, level (SDM pseudo-code, 64-bit stack): push rbp, copy level-1 frame
    pointers from the enclosing frame, push the new frame pointer, then allocate."""
    width = 2 if form.instruction.code == Code.ENTERW_IMM16_IMM8 else 8
    allocation = form.instruction.immediate(0) & 0xFFFF
    level = form.instruction.immediate(1) & 31
    push_value(cpu, form, cpu.reg("rbp"), width)
    frame = cpu.reg("rsp")
    if level:
        pointer = cpu.reg("rbp")
        for _ in range(1, level):
            pointer = (pointer - width) & mask(64)
            push_value(cpu, form, form.read_memory(cpu, pointer, width), width)
        push_value(cpu, form, frame, width)
    if width == 8:
        cpu.set_reg("rbp", frame)
    else:
        cpu.set_reg("rbp", (cpu.reg("rbp") & ~0xFFFF) | (frame & 0xFFFF))
    cpu.set_reg("rsp", (cpu.reg("rsp") - allocation) & mask(64))


@semantics(M.LEAVE)
def leave(cpu, form):
    """LEAVE: rsp = rbp, then pop rbp (bp with 66h: rbp's upper bits stay)."""
    width = 2 if form.instruction.code == Code.LEAVEW else 8
    cpu.set_reg("rsp", cpu.reg("rbp"))
    value = pop_value(cpu, form, width)
    cpu.set_reg("rbp", value if width == 8 else (cpu.reg("rbp") & ~0xFFFF) | value)

