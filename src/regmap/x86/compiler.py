"""Straight-line Python for the common forms: the fast path of `Emulator.step`.

The generic path builds a `Cpu`, buffers every write and dispatches through
operand objects: right for every instruction, but a dozen calls more than an
`add rax, [8]` needs.  For a form whose window operand has a constant address
(``[8]``, the way programs name mapped registers) and whose semantics are a
plain move, ALU operation or unary operation, this module writes a small
function that reads the basis registers, computes, and writes them back
through the machine directly: the layout, the operand widths and the
zero-extension rules are all resolved when the form is compiled.

Forms whose window span includes the rip or rflags slots, or that can fail
(divide errors, real-memory accesses), stay on the generic path.
"""
from __future__ import annotations

from iced_x86 import Mnemonic as M

from regmap.x86 import flags
from regmap.x86.operands import ImmediateOperand, MemoryOperand, RegisterOperand

_SPECIAL_SLOTS = frozenset({"rip", "rflags", "mxcsr"})

# mnemonic -> (result expression over a, b, c; flags function or None; writes the destination)
_BINARY = {
    M.MOV: ("b", None, True),
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
_FLAG_UPDATES = {
    "add": "flags.add(a, b, a + b + c, {w})",
    "sub": "flags.sub(a, b, c, {w})",
    "logic": "flags.logic(r, {w})",
    "inc": "flags.without(flags.add(a, 1, a + 1, {w}), flags.CF)",
    "dec": "flags.without(flags.sub(a, 1, 0, {w}), flags.CF)",
    "neg": "flags.sub(0, a, 0, {w})",
}


def compile_form(form, layout):
    """A function `fast(machine)` executing `form`, or None when the generic path must."""
    widths = layout.registers.width
    window = _constant_window_operand(form, layout)
    if window is None:
        return None
    address, slices = window
    if any(basis in _SPECIAL_SLOTS for basis, _, _ in slices):
        return None
    ops = form.ops
    if form.mnemonic in _BINARY and len(ops) == 2:
        expression, flag_kind, writes = _BINARY[form.mnemonic]
        operands = {"a": ops[0], "b": ops[1]}
    elif form.mnemonic in _UNARY and len(ops) == 1:
        expression, flag_kind = _UNARY[form.mnemonic]
        writes, operands = True, {"a": ops[0]}
    else:
        return None
    width = ops[0].width
    lines = []
    for name, op in operands.items():
        if name == "a" and form.mnemonic == M.MOV:
            continue
        lines.append(f"{name} = {_read(op, slices, widths)}")
    uses_carry = form.mnemonic in (M.ADC, M.SBB)
    lines.append(f"f = read('rflags')" if flag_kind or uses_carry else "")
    lines.append(f"c = f & {flags.CF}" if uses_carry else "c = 0")
    lines.append(f"r = ({expression}) & {(1 << width) - 1:#x}")
    if writes:
        lines.extend(_write(ops[0], slices, "r", widths))
    if flag_kind:
        update = _FLAG_UPDATES[flag_kind].format(w=width)
        lines.append(f"mask, bits = {update}")
        lines.append("write('rflags', (f & ~mask) | bits)")
    lines.append(f"write('rip', {form.next_ip:#x})")
    body = "\n    ".join(line for line in lines if line)
    source = f"def fast(machine):\n    read, write = machine.read_register, machine.write_register\n    {body}\n"
    namespace = {"flags": flags}
    exec(compile(source, f"<regmap fast path {form.disassembly}>", "exec"), namespace)
    fast = namespace["fast"]
    fast.source = source
    return fast


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
    except Exception:  # a hole: the generic path reports it
        return None


def _read(op, slices, widths) -> str:
    if isinstance(op, ImmediateOperand):
        return f"{op.value:#x}"
    if isinstance(op, RegisterOperand):
        return _bits(op.basis, op.width + op.lo - 1, op.lo, widths)
    parts, shift = [], 0
    for basis, hi, lo in reversed(slices):
        bits = _bits(basis, hi, lo, widths)
        parts.append(f"({bits} << {shift})" if shift else bits)
        shift += hi - lo + 1
    return " | ".join(parts)


def _bits(basis: str, hi: int, lo: int, widths) -> str:
    width = hi - lo + 1
    value = f"read({basis!r})"
    if lo == 0 and width == widths(basis):
        return value
    if lo:
        value = f"({value} >> {lo})"
    return f"({value} & {(1 << width) - 1:#x})"


def _write(op, slices, value: str, widths) -> list[str]:
    if isinstance(op, RegisterOperand):
        return [_splice(op.basis, op.lo + op.extend - 1, op.lo, value, widths)]
    lines, shift = [], 0
    for basis, hi, lo in reversed(slices):
        lines.append(_splice(basis, hi, lo, f"({value} >> {shift})" if shift else value, widths))
        shift += hi - lo + 1
    return lines


def _splice(basis: str, hi: int, lo: int, value: str, widths) -> str:
    width = hi - lo + 1
    field = f"(({value}) & {(1 << width) - 1:#x})"
    if lo == 0 and width == widths(basis):
        return f"write({basis!r}, {field})"
    if lo:
        field = f"({field} << {lo})"
    keep = ~(((1 << width) - 1) << lo)
    return f"write({basis!r}, (read({basis!r}) & {keep:#x}) | {field})"
