"""Straight-line Python for the common forms: the fast path of `Emulator.step`.

The generic path builds a `Cpu`, buffers every write and dispatches through
operand objects: right for every instruction, but many calls more than an
`add rax, [8]` needs.  For a form whose window operand has a constant
address (``[8]``, the way programs name mapped registers) and whose semantics
are a move (general or vector, without an opmask), an ALU or unary operation,
a conditional move or set, this module
writes a small function over the machine's register *namespace* — an object
whose attribute ``rax`` is the basis register rax — with the layout, operand
widths, zero-extension rules and flag formulas (those of `regmap.x86.flags`,
inlined) all resolved when the form is compiled.

Forms that can fail (divides, real memory, #GP, selector loads), that touch the rflags or
mxcsr slots, or that write the rip slot partially stay on the generic path.
"""
from __future__ import annotations

from iced_x86 import Mnemonic as M

from regmap.errors import LayoutError
from regmap.x86 import flags
from regmap.x86.operands import ImmediateOperand, MemoryOperand, RegisterOperand, SelectorOperand
from regmap.x86.semantics import vector

_GENERIC_ONLY_SLOTS = frozenset({"rflags", "mxcsr"})
_STATUS = flags.STATUS

# mnemonic -> (result expression over a, b and the carry c; flag formula; writes the destination)
_BINARY = {
    M.MOV: ("b", None, True),
    M.MOVZX: ("b", None, True),
    M.ADD: ("a + b", "add", True),
    M.ADC: ("a + b + c", "add", True),
    M.SUB: ("a - b", "sub", True),
    M.SBB: ("a - b - c", "sub", True),
    M.CMP: ("a - b", "sub", False),
    M.AND: ("a & b", "logic", True),
    M.OR: ("a | b", "logic", True),
    M.XOR: ("a ^ b", "logic", True),
    M.TEST: ("a & b", "logic", False),
}
_UNARY = {
    M.INC: ("a + 1", "inc"),
    M.DEC: ("a - 1", "dec"),
    M.NEG: ("-a", "neg"),
    M.NOT: ("~a", None),
}

# The generated code's names: r the register namespace, a and b the operands, c the carry in,
# res the masked result, f the rflags read.
# SF, ZF and PF of `res` (width {w}); the rest per family, the formulas of regmap.x86.flags.
_SZP = "((res >> {w8}) & 0x80) | (0 if res else 0x40) | PARITY[res & 0xFF]"
_FLAG_FORMULAS = {
    "add": ("{szp} | ({carry_sum} >> {w} & 1) | ((((a ^ res) & (b ^ res)) >> {w1} & 1) << 11)"
            " | ((a ^ b ^ res) & 0x10)", _STATUS),
    "sub": ("{szp} | (a < {borrow}) | ((((a ^ b) & (a ^ res)) >> {w1} & 1) << 11)"
            " | ((a ^ b ^ res) & 0x10)", _STATUS),
    "logic": ("{szp}", _STATUS),
    "inc": ("{szp} | ((((a ^ res) & (1 ^ res)) >> {w1} & 1) << 11) | ((a ^ 1 ^ res) & 0x10)",
            _STATUS & ~flags.CF),
    "dec": ("{szp} | ((((a ^ 1) & (a ^ res)) >> {w1} & 1) << 11) | ((a ^ 1 ^ res) & 0x10)",
            _STATUS & ~flags.CF),
    "neg": ("{szp} | (a != 0) | (((a & res) >> {w1} & 1) << 11) | ((a ^ res) & 0x10)", _STATUS),
}

# Condition codes (iced-x86 numbering) as expressions over f = rflags.
_SIGN_NE_OVERFLOW = "((f >> 7 ^ f >> 11) & 1)"
_CONDITIONS = {
    1: "f & 0x800", 2: "not f & 0x800", 3: "f & 1", 4: "not f & 1", 5: "f & 0x40",
    6: "not f & 0x40", 7: "f & 0x41", 8: "not f & 0x41", 9: "f & 0x80", 10: "not f & 0x80",
    11: "f & 4", 12: "not f & 4", 13: _SIGN_NE_OVERFLOW, 14: f"not {_SIGN_NE_OVERFLOW}",
    15: f"(f & 0x40 or {_SIGN_NE_OVERFLOW})", 16: f"not (f & 0x40 or {_SIGN_NE_OVERFLOW})",
}
_CMOV = frozenset(getattr(M, "CMOV" + cc) for cc in
                  ("O", "NO", "B", "AE", "E", "NE", "BE", "A", "S", "NS", "P", "NP", "L", "GE", "LE", "G"))
_SET = frozenset(getattr(M, "SET" + cc) for cc in
                 ("O", "NO", "B", "AE", "E", "NE", "BE", "A", "S", "NS", "P", "NP", "L", "GE", "LE", "G"))


def compile_form(form, layout):
    """A function `fast(registers)` with exactly `step`'s effect on `form`, or None.

    `registers` is the machine's register namespace (``registers.rax``).
    """
    window = _constant_window_operand(form, layout)
    if window is None:
        return None
    address, slices = window
    if any(basis in _GENERIC_ONLY_SLOTS for basis, _, _ in slices):
        return None
    if form.mnemonic in vector.MOVES and not _plain_vector_move(form, address):
        return None
    if any(isinstance(op, SelectorOperand) for op in form.ops):
        return None  # a selector load can #GP
    body = _body(form, slices, layout.registers.width)
    if body is None:
        return None
    lines = [line for line in body if line]
    if not any(line.startswith("r.rip =") for line in lines):
        lines.append(f"r.rip = {form.next_ip:#x}")
    source = "def fast(r):\n    " + "\n    ".join(lines) + "\n"
    namespace = {"PARITY": flags.PARITY}
    exec(compile(source, f"<regmap fast path: {form.disassembly}>", "exec"), namespace)
    fast = namespace["fast"]
    fast.source = source
    return fast


def _body(form, slices, widths):
    ops, mnemonic = form.ops, form.mnemonic
    rip_slot = any(basis == "rip" for basis, _, _ in slices)
    if rip_slot:
        # Reading the rip slot gives the next instruction's address; a whole write jumps.
        if mnemonic != M.MOV or len(slices) != 1 or slices[0] != ("rip", 63, 0):
            return None
        dest, source = ops
        if dest.is_memory:
            return [f"r.rip = {_read(source, slices, widths, form)}"]
        return _write(dest, slices, f"{form.next_ip:#x}", widths)
    if mnemonic in vector.MOVES:
        return _arithmetic(form, slices, widths, "b", None, True, ("a", "b"))
    if mnemonic in _BINARY and len(ops) == 2:
        expression, formula, writes = _BINARY[mnemonic]
        return _arithmetic(form, slices, widths, expression, formula, writes, ("a", "b"))
    if mnemonic in _UNARY and len(ops) == 1:
        expression, formula = _UNARY[mnemonic]
        return _arithmetic(form, slices, widths, expression, formula, True, ("a",))
    if mnemonic in (M.MOVSX, M.MOVSXD) and len(ops) == 2:
        dest, source = ops
        sign_bit = 1 << (source.width - 1)
        return [f"b = {_read(source, slices, widths, form)}",
                f"res = ((b ^ {sign_bit:#x}) - {sign_bit:#x}) & {(1 << dest.width) - 1:#x}",
                *_write(dest, slices, "res", widths)]
    if mnemonic in _CMOV and len(ops) == 2:
        dest, source = ops
        return ["f = r.rflags", f"b = {_read(source, slices, widths, form)}",
                f"res = b if {_CONDITIONS[form.condition_code]} else {_read(dest, slices, widths, form)}",
                *_write(dest, slices, "res", widths)]
    if mnemonic in _SET and len(ops) == 1:
        return ["f = r.rflags", f"res = 1 if {_CONDITIONS[form.condition_code]} else 0",
                *_write(ops[0], slices, "res", widths)]
    return None


def _arithmetic(form, slices, widths, expression, formula, writes, names):
    ops = form.ops
    width = ops[0].width
    lines = [f"{name} = {_read(op, slices, widths, form)}" for name, op in zip(names, ops)
             if not (name == "a" and expression == "b")]
    carry = form.mnemonic in (M.ADC, M.SBB)
    if formula or carry:
        lines.append("f = r.rflags")
    if carry:
        lines.append("c = f & 1")
    else:
        expression = expression.replace(" + c", "").replace(" - c", "")
    lines.append(f"res = ({expression}) & {(1 << width) - 1:#x}")
    if writes:
        lines.extend(_write(ops[0], slices, "res", widths, masked=width))
    if formula:
        bits, defined = _FLAG_FORMULAS[formula]
        bits = bits.format(szp=_SZP.format(w8=width - 8), w=width, w1=width - 1,
                           carry_sum="(a + b + c)" if carry else "(a + b)",
                           borrow="b + c" if carry else "b")
        lines.append(f"r.rflags = (f & {~defined & (1 << 64) - 1:#x}) | {bits}")
    return lines


def _constant_window_operand(form, layout):
    memory = [op for op in form.ops if op.is_memory]
    if len(memory) != 1 or not isinstance(memory[0], MemoryOperand):
        return None
    op = memory[0]
    if op.base is not None or op.index is not None or op.segment_base is not None:
        return None
    address = op.displacement & op.address_mask
    if not layout.contains(address, op.size):
        return None
    try:
        return address, layout.resolve(address, op.size)
    except LayoutError:  # a hole: the generic path reports it
        return None


def _plain_vector_move(form, address: int) -> bool:
    """A vector move is a plain move without an opmask and, for the aligned forms, when its
    constant address is aligned (a misaligned one raises #GP on the generic path)."""
    memory, = (op for op in form.ops if op.is_memory)
    return form.op_mask is None and (form.mnemonic not in vector.ALIGNED or address % memory.size == 0)


def _read(op, slices, widths, form) -> str:
    if isinstance(op, ImmediateOperand):
        return f"{op.value:#x}"
    if isinstance(op, RegisterOperand):
        return _bits(op.basis, op.width + op.lo - 1, op.lo, widths)
    parts, shift = [], 0
    for basis, hi, lo in reversed(slices):
        bits = f"{form.next_ip:#x}" if basis == "rip" else _bits(basis, hi, lo, widths)
        parts.append(f"({bits} << {shift})" if shift else bits)
        shift += hi - lo + 1
    return " | ".join(parts)


def _bits(basis: str, hi: int, lo: int, widths) -> str:
    width = hi - lo + 1
    value = f"r.{basis}"
    if lo == 0 and width == widths(basis):
        return value
    if lo:
        value = f"({value} >> {lo})"
    return f"({value} & {(1 << width) - 1:#x})"


def _write(op, slices, value: str, widths, masked: int = 0) -> list[str]:
    """Store `value` (already masked to `masked` bits, if given) into a register or the window."""
    if isinstance(op, RegisterOperand):
        return [_splice(op.basis, op.lo + op.extend - 1, op.lo, value, widths, masked)]
    lines, shift = [], 0
    for basis, hi, lo in reversed(slices):
        lines.append(_splice(basis, hi, lo, f"({value} >> {shift})" if shift else value, widths,
                             masked if not shift else 0))
        shift += hi - lo + 1
    return lines


def _splice(basis: str, hi: int, lo: int, value: str, widths, masked: int = 0) -> str:
    width = hi - lo + 1
    field = value if masked and masked <= width else f"({value} & {(1 << width) - 1:#x})"
    if lo == 0 and width == widths(basis):
        return f"r.{basis} = {field}"
    if lo:
        field = f"({field} << {lo})"
    keep = ((1 << widths(basis)) - 1) & ~(((1 << width) - 1) << lo)
    return f"r.{basis} = (r.{basis} & {keep:#x}) | {field}"
