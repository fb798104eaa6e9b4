"""Straight-line Python for the common forms: the fast path of `Emulator.step`.

The generic path builds a `Cpu`, buffers every write and dispatches through
operand objects: right for every instruction, but many calls more than an
`add rax, [8]` needs.  For a form whose semantics are a move (general or
vector, without an opmask), an ALU or unary operation, a conditional move or
set, xadd, xchg, cmpxchg, push, pop, call or jmp through the window, or a
packed-integer operation, this module writes a small function over the
machine's register *namespace* — an object whose attribute ``rax`` is the
basis register rax — with the layout, operand widths, zero-extension rules and
flag formulas (those of `regmap.x86.flags`, inlined) all resolved when the
form is compiled.  ``rep movs`` out of the window into memory has a hand-written
one (`_rep_movs_out`).

The window address may be a constant (``[8]``, the way programs name mapped
registers) or computed from registers (``[rdi]``): then the compiled code
computes it, and keeps one compiled body per window address seen
(`_dispatcher`).  A function that cannot finish the instruction exactly raises
`Declined` before it changes anything, and the generic path runs; a form that
faults raises what the generic path raises (#GP for a misaligned operand,
`MemoryFault` from the machine for a stack that is not there).  Divides,
selector loads, the rflags and mxcsr slots and partial writes of the rip slot
stay on the generic path.
"""
from __future__ import annotations

from types import CodeType, FunctionType

from iced_x86 import EncodingKind, Mnemonic as M

from regmap.errors import GeneralProtection, LayoutError, MemoryFault
from regmap.x86 import flags, undefined
from regmap.x86.operands import ImmediateOperand, MemoryOperand, RegisterOperand, SelectorOperand
from regmap.x86.semantics import vector
from regmap.x86.semantics.packed import PACKED, destination_and_sources

MASK64 = (1 << 64) - 1

_GENERIC_ONLY_SLOTS = frozenset({"rflags", "mxcsr"})
_SLOTS_OF_GENERIC_PATH = _GENERIC_ONLY_SLOTS | {"rip"}
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


class Declined(Exception):
    """Raised by a fast function before it changes anything: this time, the generic path."""


def decline(r, m) -> None:
    raise Declined


# Forms whose window address comes from registers keep a compiled body per address seen, up to
# this many; past it they start over (an instruction that walks the window is rare).
DISPATCH_ADDRESSES = 64


def compile_form(form, layout):
    """A function `fast(registers, machine)` with exactly `step`'s effect on `form`, or None.

    `registers` is the machine's register namespace (``registers.rax``);
    `machine` is used only for the real memory of push, pop and call.  A form
    whose window address is computed from registers checks it in the compiled
    code and raises `Declined` (having changed nothing) for an address its
    compiled body does not cover.
    """
    if form.mnemonic in _MOVS:
        return _rep_movs_out(form, layout)
    if form.mnemonic in _LOGIC and not undefined.always_clears(form.code, flags.AF):
        return None    # AF is undefined there: the host was not seen to clear it (the generic path asks it)
    op = _window_candidate(form)
    if op is None or any(isinstance(other, SelectorOperand) for other in form.ops):
        return None  # a selector load can #GP
    if op.base is None and op.index is None:
        return _compile_at(form, layout, op.displacement & op.address_mask)
    if form.mnemonic == M.POP and "rsp" in (op.base.basis if op.base else None,
                                           op.index.basis if op.index else None):
        return None  # pop computes that address after moving rsp
    if not any(_lines_at(form, layout, address) for address in
               range(0, min(layout.size, 64 * op.size), op.size)):
        return None  # no body at any address: the form itself is not compiled
    return _dispatcher(form, layout, op)


_MOVS = frozenset((M.MOVSB, M.MOVSW, M.MOVSD, M.MOVSQ))
_LOGIC = frozenset((M.AND, M.OR, M.XOR, M.TEST))


def _rep_movs_out(form, layout):
    """``rep movs`` copying out of the window into real memory, in one write.

    The source bytes are the register image as the instruction began (read
    before anything changes), written to memory in one call; then rcx, rsi,
    rdi and rip.  Anything else -- another direction, a source running past
    the window or over the rip, rflags or mxcsr slot, a destination in the
    window -- is `Declined`, as is a write that fails: the generic path then
    copies again (the same bytes: nothing it reads has changed) and stops
    where the CPU stops.
    """
    if form.repeat != "rep" or len(form.ops) != 2:
        return None
    dest, source = form.ops
    if (source.segment_base is not None or dest.segment_base is not None
            or source.pointer.width != 64 or dest.pointer.width != 64):
        return None
    size, window, next_ip, resolve = source.size, layout.size, form.next_ip, layout.resolve
    direction, clear_rf = flags.DF, flags.CLEAR_RF

    def fast(r, m):
        count, start, to = r.rcx, r.rsi, r.rdi
        total = count * size
        f = r.rflags
        if (f & direction or not 0 < total <= window or start + total > window
                or to < window or to + total > MASK64):
            raise Declined
        try:
            slices = resolve(start, total)
        except LayoutError:
            raise Declined from None
        value = 0
        for basis, hi, lo in slices:
            if basis in _SLOTS_OF_GENERIC_PATH:
                raise Declined
            width = hi - lo + 1
            value = value << width | getattr(r, basis) >> lo & (1 << width) - 1
        try:
            m.write_memory(to, value.to_bytes(total, "little"))
        except MemoryFault:
            raise Declined from None
        r.rcx, r.rsi, r.rdi, r.rip, r.rflags = 0, start + total, to + total, next_ip, f & clear_rf
    return fast


def _window_candidate(form):
    """The one explicit memory operand that may be the window (no segment base), or None."""
    memory = [op for op in form.ops if op.is_memory]
    if len(memory) != 1 or not isinstance(memory[0], MemoryOperand):
        return None
    if memory[0].segment_base is not None:
        return None
    return memory[0]


def _compile_at(form, layout, address: int):
    """The form's straight-line function with its window operand at `address`, or None."""
    lines = _lines_at(form, layout, address)
    if lines is None:
        return None
    if any("next_ip" in line for line in lines):
        # the instruction's own address is rip: the code does not depend on where it is
        lines.insert(0, f"next_ip = (r.rip + {len(form.code)}) & 0xFFFFFFFFFFFFFFFF")
    return _function("def fast(r, m):\n    " + "\n    ".join(lines) + "\n", form.disassembly)


def _lines_at(form, layout, address: int):
    op = _window_candidate(form)
    if not layout.contains(address, op.size):
        return None
    try:
        slices = layout.resolve(address, op.size)
    except LayoutError:  # a hole: the generic path reports it
        return None
    if any(basis in _GENERIC_ONLY_SLOTS for basis, _, _ in slices):
        return None
    if form.mnemonic in vector.MOVES and not _plain_vector_move(form):
        return None
    if form.mnemonic in PACKED and not _plain_packed(form):
        return None
    misaligned = _misaligned(form, address, op.size)
    if misaligned:
        return [f"raise GeneralProtection({misaligned!r})"]   # as the generic path, from here
    body = _body(form, slices, layout.registers.width)
    if body is None:
        return None
    lines = [line for line in body if line]
    if form.mnemonic in _STACK_FORMS:
        # rsp in the window makes the stack registers too (`pop [0x130]` with rsp = 0x48 reads
        # r9): the generic path's stack slots go through the layout, these lines to real memory
        at = next(i for i, line in enumerate(lines) if line.startswith("sp = ")) + 1
        lines.insert(at, f"if sp < {layout.size}: raise Declined")
    if not any(line.lstrip().startswith("r.rip =") for line in lines):
        lines.append("r.rip = next_ip")
    if not any(line.startswith("r.rflags = ") for line in lines):  # unindented: always runs
        lines.append(f"r.rflags &= {flags.CLEAR_RF:#x}")
    return lines


# The generated functions' globals, shared by all of them.
_GLOBALS: dict = {"__builtins__": __builtins__}
# Generated source -> the function it defines.  A function depends on the form's bytes and
# window address only (the next rip is rip + the length), so every site of the same
# instruction shares one function.  Bounded: past MAX_FUNCTIONS the oldest half is forgotten
# (the sites that hold them keep them).
FUNCTIONS: dict[str, FunctionType] = {}
MAX_FUNCTIONS = 4096


def _function(source: str, label: str) -> FunctionType:
    function = FUNCTIONS.get(source)
    if function is None:
        if len(FUNCTIONS) >= MAX_FUNCTIONS:
            for old in list(FUNCTIONS)[:MAX_FUNCTIONS // 2]:
                del FUNCTIONS[old]
        module = compile(source, f"<regmap fast path: {label}>", "exec")
        code = next(c for c in module.co_consts if isinstance(c, CodeType))
        function = FUNCTIONS[source] = FunctionType(code, _GLOBALS)
    return function


def _dispatcher(form, layout, op):
    """`fast` for a form whose window address is computed from registers at run time."""
    bodies: dict[int, object] = {}

    def specialise(address: int):
        if not layout.contains(address, op.size):
            raise Declined  # not the window: a genuine fault, or real memory (generic path)
        if len(bodies) >= DISPATCH_ADDRESSES:
            bodies.clear()
        body = bodies[address] = _compile_at(form, layout, address) or decline
        return body

    widths = layout.registers.width
    terms = [f"{op.displacement:#x}"]
    if op.base is not None:
        terms.append(_read(op.base, (), widths, form))
    if op.index is not None:
        terms.append(f"{_read(op.index, (), widths, form)} * {op.scale}")
    lines = [f"ea = ({' + '.join(terms)}) & {op.address_mask:#x}",
             "body = bodies.get(ea)",
             "if body is None:",
             "    body = specialise(ea)",
             "body(r, m)"]
    source = ("def make(bodies, specialise):\n    def fast(r, m):\n        "
              + "\n        ".join(lines) + "\n    return fast\n")
    fast = _function(source, f"{form.disassembly} (dispatch)")(bodies, specialise)
    fast.bodies = bodies
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
        return _write(dest, slices, "next_ip", widths)
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
    special = _SPECIAL.get(mnemonic)
    return special(form, slices, widths) if special is not None else None


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
        lines.append(f"r.rflags = (f & {~(defined | flags.RF) & MASK64:#x}) | {bits}")
    return lines


def _exchange(form, slices, widths):
    """xchg: each operand gets the other's value (register writes land before window ones)."""
    first, second = form.ops
    window, register = (first, second) if first.is_memory else (second, first)
    return [f"a = {_read(window, slices, widths, form)}",
            f"b = {_read(register, slices, widths, form)}",
            *_write(register, slices, "a", widths), *_write(window, slices, "b", widths)]


def _exchange_add(form, slices, widths):
    """xadd: TEMP <- SRC + DEST; SRC <- DEST; DEST <- TEMP."""
    dest, source = form.ops
    if not dest.is_memory:
        return None
    width = dest.width
    bits, _ = _FLAG_FORMULAS["add"]
    bits = bits.format(szp=_SZP.format(w8=width - 8), w=width, w1=width - 1, carry_sum="(a + b)")
    return [f"a = {_read(dest, slices, widths, form)}", f"b = {_read(source, slices, widths, form)}",
            "f = r.rflags", f"res = (a + b) & {(1 << width) - 1:#x}",
            *_write(source, slices, "a", widths), *_write(dest, slices, "res", widths, masked=width),
            f"r.rflags = (f & {~(_STATUS | flags.RF) & MASK64:#x}) | {bits}"]


def _compare_exchange(form, slices, widths):
    """cmpxchg: equal, DEST <- SRC; else the accumulator <- DEST and DEST is written back."""
    dest, source = form.ops
    if not dest.is_memory:
        return None
    width = dest.width
    accumulator = form.accumulator(width)
    bits, _ = _FLAG_FORMULAS["sub"]
    bits = bits.format(szp=_SZP.format(w8=width - 8), w=width, w1=width - 1, borrow="b")
    indent = "    "
    return [f"a = {_read(accumulator, slices, widths, form)}",
            f"b = {_read(dest, slices, widths, form)}",
            f"s = {_read(source, slices, widths, form)}",
            "f = r.rflags", f"res = (a - b) & {(1 << width) - 1:#x}",
            f"r.rflags = (f & {~(_STATUS | flags.RF) & MASK64:#x}) | {bits}",
            "if a == b:",
            *(indent + line for line in _write(dest, slices, "s", widths)),
            "else:",
            *(indent + line for line in _write(accumulator, slices, "b", widths)),
            *(indent + line for line in _write(dest, slices, "b", widths))]


def _push(form, slices, widths):
    """push [window]: the stack is real memory, written before any register changes."""
    source, = form.ops
    size = source.size
    return [f"v = {_read(source, slices, widths, form)}",  # push [rsp slot] pushes the old rsp
            f"sp = (r.rsp - {size}) & {MASK64:#x}",
            f"m.write_memory(sp, v.to_bytes({size}, 'little'))",
            "r.rsp = sp"]


def _pop(form, slices, widths):
    """pop [window]: rsp moves first, then the window is written (a pop into rsp's slot wins)."""
    dest, = form.ops
    size = dest.size
    return ["sp = r.rsp",
            f"v = int.from_bytes(m.read_memory(sp, {size}), 'little')",
            f"r.rsp = (sp + {size}) & {MASK64:#x}",
            *_write(dest, slices, "v", widths)]


def _jump(form, slices, widths):
    target, = form.ops
    if target.size != 8:
        return None
    return [f"r.rip = {_read(target, slices, widths, form)}"]


def _call(form, slices, widths):
    target, = form.ops
    if target.size != 8:
        return None
    return [f"t = {_read(target, slices, widths, form)}",
            f"sp = (r.rsp - 8) & {MASK64:#x}",
            "m.write_memory(sp, next_ip.to_bytes(8, 'little'))",
            "r.rsp = sp", "r.rip = t"]


# Lane-wise operations as whole-register expressions (SWAR): H is the top bit of every lane.
_PACKED_SWAR = {
    **{m: "((a & ~H) + (b & ~H)) ^ ((a ^ b) & H)" for m in (M.PADDB, M.PADDW, M.PADDD, M.PADDQ,
                                                           M.VPADDB, M.VPADDW, M.VPADDD, M.VPADDQ)},
    **{m: "((a | H) - (b & ~H)) ^ ((a ^ ~b) & H)" for m in (M.PSUBB, M.PSUBW, M.PSUBD, M.PSUBQ,
                                                           M.VPSUBB, M.VPSUBW, M.VPSUBD, M.VPSUBQ)},
}


def _packed(form, slices, widths):
    """Packed-integer operations: lane by lane with packed.PACKED's lane function, or SWAR."""
    dest, first, second = destination_and_sources(form)
    width = dest.width
    lane_width, _ = PACKED[form.mnemonic]
    lane_width = min(lane_width, width)
    lines = [f"a = {_read(first, slices, widths, form)}", f"b = {_read(second, slices, widths, form)}"]
    whole = (1 << width) - 1
    if form.mnemonic in _PACKED_SWAR:
        top = sum(1 << (shift + lane_width - 1) for shift in range(0, width, lane_width))
        lines.append(f"res = ({_PACKED_SWAR[form.mnemonic].replace('H', f'{top:#x}')}) & {whole:#x}")
    else:
        lane_mask = (1 << lane_width) - 1
        lines += ["res = 0",
                  f"for shift in range(0, {width}, {lane_width}):",
                  f"    res |= LANE[{form.mnemonic}](a >> shift & {lane_mask:#x}, "
                  f"b >> shift & {lane_mask:#x}, {lane_width}) << shift"]
    return lines + _write(dest, slices, "res", widths)


def _plain_packed(form) -> bool:
    """No opmask: EVEX forms stay generic."""
    return form.instruction.encoding != EncodingKind.EVEX and form.op_mask is None


def _misaligned(form, address: int, size: int) -> str | None:
    """The #GP message of the generic path for a misaligned operand of this form, or None."""
    if form.mnemonic in vector.ALIGNED and address % size:
        return f"{form.disassembly}: operand not {size}-byte aligned"
    if (form.mnemonic in PACKED and form.instruction.encoding == EncodingKind.LEGACY
            and address % 16):
        return f"{form.disassembly}: a legacy SSE memory operand must be 16-byte aligned"
    return None


_LANES = {mnemonic: lane for mnemonic, (_, lane) in PACKED.items()}
_GLOBALS.update(PARITY=flags.PARITY, LANE=_LANES, GeneralProtection=GeneralProtection,
                Declined=Declined)
_STACK_FORMS = frozenset((M.PUSH, M.POP, M.CALL))
_SPECIAL = {M.XCHG: _exchange, M.XADD: _exchange_add, M.CMPXCHG: _compare_exchange, M.PUSH: _push,
            M.POP: _pop, M.JMP: _jump, M.CALL: _call, **{m: _packed for m in PACKED}}


def _plain_vector_move(form) -> bool:
    """A vector move without an opmask (a misaligned aligned form raises #GP: `_misaligned`)."""
    return form.op_mask is None


def _read(op, slices, widths, form) -> str:
    if isinstance(op, ImmediateOperand):
        return f"{op.value:#x}"
    if isinstance(op, RegisterOperand):
        return _bits(op.basis, op.width + op.lo - 1, op.lo, widths)
    parts, shift = [], 0
    for basis, hi, lo in reversed(slices):
        bits = "next_ip" if basis == "rip" else _bits(basis, hi, lo, widths)
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
