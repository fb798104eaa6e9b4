"""Operands, built once per decoded instruction and bound to what they name.

A register operand knows its basis register and bit range; a memory operand
knows how to compute its effective address and sends window addresses
through the layout, others to real memory; an immediate is a constant.
"""
from __future__ import annotations

import iced_x86
from iced_x86 import MemorySizeInfo, OpKind, Register

from regmap import alias
from regmap.x86.selectors import check_load

MASK64 = (1 << 64) - 1

REGISTER_NAMES = {value: name.lower() for name, value in vars(Register).items()
                  if isinstance(value, int) and not name.startswith("_")}
# iced-x86 spells the low bytes of r8..r15 "r8l"; the register files say "r8b".
REGISTER_NAMES.update({Register.R8L + n: f"r{8 + n}b" for n in range(8)})

_IMMEDIATE_KINDS = frozenset({
    OpKind.IMMEDIATE8, OpKind.IMMEDIATE8_2ND, OpKind.IMMEDIATE16, OpKind.IMMEDIATE32,
    OpKind.IMMEDIATE64, OpKind.IMMEDIATE8TO16, OpKind.IMMEDIATE8TO32, OpKind.IMMEDIATE8TO64,
    OpKind.IMMEDIATE32TO64})
# A relative branch's operand is its target address (iced-x86 has added next_ip already).
_NEAR_BRANCH_KINDS = frozenset({OpKind.NEAR_BRANCH16, OpKind.NEAR_BRANCH32, OpKind.NEAR_BRANCH64})


class RegisterOperand:
    """A register: bits lo..lo+width-1 of one basis register.

    `extend` is the width a write clears up to: a 32-bit general register
    write zero-extends to 64 bits, a VEX/EVEX vector write to the whole
    basis register; other writes merge.
    """
    __slots__ = ("name", "basis", "lo", "width", "mask", "extend")
    is_memory = False

    def __init__(self, name: str, basis: str, lo: int, width: int, extend: int):
        self.name, self.basis, self.lo, self.width = name, basis, lo, width
        self.mask = (1 << width) - 1
        self.extend = max(extend, width)

    def read(self, cpu) -> int:
        return (cpu.reg(self.basis) >> self.lo) & self.mask

    def write(self, cpu, value: int) -> None:
        clear = ((1 << self.extend) - 1) << self.lo if self.extend > self.width else self.mask << self.lo
        cpu.set_reg(self.basis, (cpu.reg(self.basis) & ~clear) | ((value & self.mask) << self.lo))

    def __repr__(self) -> str:
        return self.name


class SelectorOperand(RegisterOperand):
    """A segment register: a write is a selector load, which refuses what the CPU refuses."""
    __slots__ = ()

    def write(self, cpu, value: int) -> None:
        check_load(self.name, value & self.mask)
        super().write(cpu, value)


SEGMENT_REGISTERS = frozenset(("cs", "ds", "es", "fs", "gs", "ss"))


class ImmediateOperand:
    __slots__ = ("value", "width")
    is_memory = False

    def __init__(self, value: int, width: int):
        self.value, self.width = value, width

    def read(self, cpu) -> int:
        return self.value

    def __repr__(self) -> str:
        return hex(self.value)


class _MemoryAccess:
    """What every memory operand does with its address: the window through the layout, the rest
    through real memory.  Subclasses say how the address is found."""
    __slots__ = ()
    is_memory = True

    def in_window(self, cpu) -> bool:
        return cpu.layout.contains(self.address(cpu), self.size)

    def read(self, cpu) -> int:
        return self.read_at(cpu, self.address(cpu), self.size)

    def write(self, cpu, value: int) -> None:
        self.write_at(cpu, self.address(cpu), self.size, value)

    @staticmethod
    def read_at(cpu, address: int, size: int) -> int:
        if cpu.layout.contains(address, size):
            return cpu.window_read(address, size)
        return cpu.memory_read(address, size)

    @staticmethod
    def write_at(cpu, address: int, size: int, value: int) -> None:
        value &= (1 << 8 * size) - 1
        if cpu.layout.contains(address, size):
            cpu.window_write(address, size, value)
        else:
            cpu.memory_write(address, size, value)


class MemoryOperand(_MemoryAccess):
    """[segment: base + index*scale + displacement], `size` bytes."""
    __slots__ = ("size", "width", "base", "index", "scale", "displacement", "segment_base",
                 "address_mask")

    def __init__(self, size, base, index, scale, displacement, segment_base, address_mask):
        self.size, self.width = size, 8 * size
        self.base, self.index, self.scale = base, index, scale
        self.displacement, self.segment_base, self.address_mask = displacement, segment_base, address_mask

    def address(self, cpu) -> int:
        """The effective address, computed once per instruction: register writes made by the
        instruction itself (cmpxchg8b to edx, xadd to its base) do not move its operand."""
        try:
            return cpu.addresses[self]
        except KeyError:
            address = cpu.addresses[self] = self._effective_address(cpu)
            return address

    def address_beyond(self, cpu, distance: int) -> int:
        """The address `distance` bytes (signed) past the operand's, wrapped as the operand's own
        is: with a 67h prefix the sum wraps at 32 bits (`bt [r12d], r10`'s bit string)."""
        return self._effective_address(cpu, distance)

    def _effective_address(self, cpu, distance: int = 0) -> int:
        ea = self.displacement + distance
        if self.base is not None:
            ea += self.base.read(cpu)
        if self.index is not None:
            ea += self.index.read(cpu) * self.scale
        ea &= self.address_mask
        if self.segment_base is not None:
            ea += cpu.reg(self.segment_base)
        return ea & MASK64

    def __repr__(self) -> str:
        return f"mem{self.width}"


class StackSlot(_MemoryAccess):
    """An implicit stack access, rsp (or rbp, for `leave`) plus an offset: only the window check
    sees it.  With rsp in page 0 the stack is the window, so `push rax` is a window access; the
    semantic functions reach the same bytes through `Form.read_memory`/`write_memory`."""
    __slots__ = ("base", "offset", "size", "width")

    def __init__(self, base: str, offset: int, size: int):
        self.base, self.offset, self.size, self.width = base, offset, size, 8 * size

    def address(self, cpu) -> int:
        return (cpu.reg(self.base) + self.offset) & MASK64

    def __repr__(self) -> str:
        return f"stack[{self.base}{self.offset:+#x}]{self.width}"


def stack_slots(ins: iced_x86.Instruction, info_factory) -> tuple:
    """The implicit stack accesses of a push, pop, call, ret, pushf, popf, enter or leave."""
    slots = []
    for used in info_factory.info(ins).used_memory():
        if used.segment == Register.SS and used.base in (Register.RSP, Register.RBP):
            offset = used.displacement - (1 << 64) if used.displacement >> 63 else used.displacement
            slots.append(StackSlot(REGISTER_NAMES[used.base], offset,
                                   MemorySizeInfo(used.memory_size).size))
    return tuple(slots)


class StringOperand(_MemoryAccess):
    """The implicit [rsi] or [rdi] of a string instruction; `step` moves it by one element."""
    __slots__ = ("pointer", "size", "width", "segment_base")

    def __init__(self, pointer: RegisterOperand, size: int, segment_base: str | None):
        self.pointer, self.size, self.width, self.segment_base = pointer, size, 8 * size, segment_base

    def address(self, cpu) -> int:
        address = self.pointer.read(cpu)
        if self.segment_base is not None:
            address += cpu.reg(self.segment_base)
        return address & MASK64

    def advance(self, cpu, backwards: bool) -> None:
        self.pointer.write(cpu, self.pointer.read(cpu) + (-self.size if backwards else self.size))

    def __repr__(self) -> str:
        return f"[{self.pointer.name}]"


_SEGMENT_BASES = {Register.FS: "fs_base", Register.GS: "gs_base"}
_STRING_KINDS = {OpKind.MEMORY_SEG_RSI: ("rsi", True), OpKind.MEMORY_SEG_ESI: ("esi", True),
                 OpKind.MEMORY_ESRDI: ("rdi", False), OpKind.MEMORY_ESEDI: ("edi", False)}


class OperandFactory:
    """Builds operands for decoded instructions against one register file."""

    def __init__(self, registers: alias.RegisterFile, layout=None):
        self.registers = registers
        self.layout = layout
        self._named: dict[tuple[str, bool], RegisterOperand] = {}

    def register(self, reg: int, vex: bool = False) -> RegisterOperand:
        return self.named(REGISTER_NAMES[reg], vex)

    def named(self, name: str, vex: bool = False) -> RegisterOperand:
        """The operand for register `name` (operands hold no state: one per name is shared)."""
        operand = self._named.get((name, vex))
        if operand is None:
            operand = self._named[(name, vex)] = self._new_named(name, vex)
        return operand

    def _new_named(self, name: str, vex: bool) -> RegisterOperand:
        if name == "rip":
            raise KeyError("rip as an operand")
        if name.startswith("mm"):
            raise KeyError("MMX registers")  # they live in the x87 stack, with its tag word
        if name.startswith("tmm"):
            raise KeyError("AMX tile registers")  # no register file has them: the native table says why
        (basis, hi, lo), = self.registers.slices(name)
        width = hi - lo + 1
        extend = width
        if width == 32 and basis.startswith("r") and self.registers.width(basis) == 64:
            extend = 64
        elif vex and basis.startswith("zmm"):
            extend = self.registers.width(basis)
        kind = SelectorOperand if name in SEGMENT_REGISTERS else RegisterOperand
        return kind(name, basis, lo, width, extend)

    def memory(self, ins: iced_x86.Instruction) -> MemoryOperand:
        size = MemorySizeInfo(ins.memory_size).size
        base = index = None
        displacement = ins.memory_displacement
        if ins.memory_base == Register.RIP or ins.memory_base == Register.EIP:
            pass  # iced-x86 already folded next_ip into the displacement
        elif ins.memory_base != Register.NONE:
            base = self.register(ins.memory_base)
        if ins.memory_index != Register.NONE:
            index = self.register(ins.memory_index)
        segment_base = _SEGMENT_BASES.get(ins.memory_segment)
        thirty_two = ins.memory_displ_size == 4 or any(
            op is not None and op.width == 32 for op in (base, index))
        address_mask = 0xFFFF_FFFF if thirty_two else MASK64
        return MemoryOperand(size, base, index, ins.memory_index_scale, displacement,
                             segment_base, address_mask)

    def operands(self, ins: iced_x86.Instruction, vex: bool) -> tuple:
        result = []
        widths = []
        for i in range(ins.op_count):
            kind = ins.op_kind(i)
            if kind == OpKind.REGISTER:
                op = self.register(ins.op_register(i), vex)
            elif kind == OpKind.MEMORY:
                op = self.memory(ins)
            elif kind in _STRING_KINDS:
                pointer, segmented = _STRING_KINDS[kind]
                # es: cannot be overridden and has base 0; the rsi side honours fs:/gs:
                base = _SEGMENT_BASES.get(ins.memory_segment) if segmented else None
                op = StringOperand(self.named(pointer), MemorySizeInfo(ins.memory_size).size, base)
            elif kind in _IMMEDIATE_KINDS:
                op = None  # sized below, from the other operands
            elif kind in _NEAR_BRANCH_KINDS:
                op = ImmediateOperand(ins.near_branch_target, 64)
            else:
                raise KeyError(f"operand kind {kind}")
            result.append(op)
            widths.append(op.width if op is not None else 0)
        for i, op in enumerate(result):
            if op is None:
                width = max(widths) or 8
                result[i] = ImmediateOperand(ins.immediate(i) & ((1 << width) - 1), width)
        return tuple(result)
