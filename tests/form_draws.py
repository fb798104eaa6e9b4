"""The draws `forms.generate` hands off: string instructions and VSIB (gather/scatter) operands.

A string instruction's memory operands are implicit (rsi, rdi, rcx under rep), so it is drawn as
pointers and a count, not as an encoded address; a VSIB operand is one address per element, each
a whole number of index steps from a common origin in the window.  Both return a `forms.Form`, or
None for a draw to try again.
"""
from __future__ import annotations

from iced_x86 import Decoder, EncodingKind, Instruction, MemorySizeExt, OpKind, Register, RegisterExt

from forms import (BASIS_OF_GPR64, GPR64, KREG, XMM, YMM, ZMM, STRING_ROLES, VSIB_INDEX, Chooser,
                   Form, Impossible, encode_as)


# ---------------------------------------------------------------------------------------------
# string instructions: rsi and/or rdi point into the window (or one of them at the scratch stack)

def draw_string(c: Chooser, code, op, info, regions, aligned, addr32):
    import native_cpu as N
    reads_rsi, uses_rdi, writes_rdi, conditional = STRING_ROLES[info.string]
    size = MemorySizeExt.size(op.memory_size)
    pointers = (["rsi"] if reads_rsi else []) + (["rdi"] if uses_rdi else [])
    a32 = c.integer(0, 7) == 7 if addr32 is None else addr32
    prefix = c.choice(("", "rep", "rep") + (("repne",) if conditional else ()))
    count = c.integer(1, 6) if prefix else 1
    df = c.integer(0, 3) == 3
    # which pointers address the window; any other points at the scratch stack
    sides = {p: "window" for p in pointers}
    if len(pointers) == 2 and c.integer(0, 2) == 0:
        sides[c.choice(pointers)] = "stack"
    fixed: dict[str, int] = {}
    bias: dict[str, int] = {}
    first_offset = None
    is_aligned = True
    span = count * size
    previous = None                 # (region, low) of the source, for an overlapping destination
    overlap = len(pointers) == 2 and c.boolean()
    for p in pointers:
        if sides[p] == "stack":
            start = N.STACK_TOP - 256 + c.integer(0, 128)
            fixed[p] = start + (span - size if df else 0)
            continue
        fits = [r for r in regions if r.end - r.start >= span]
        if not fits:
            return None
        want_aligned = c.boolean() if aligned is None else aligned
        if overlap and previous is not None:
            # source and destination a few elements (or bytes) apart: the copy sees its own stores
            region, base = previous
            step = size if want_aligned else 1
            low = base + step * c.choice([d for d in range(-count, count + 1) if d] or [1])
            if not region.start <= low <= region.end - span:
                return None
        else:
            region = c.choice(fits)
            low = None
        lo, hi = region.start, region.end - span
        if low is None and want_aligned:
            candidates = range((lo + size - 1) // size * size, hi + 1, size)
            if not candidates:
                return None
            low = c.choice(candidates)
        elif low is None:
            low = c.integer(lo, hi)
            if size > 1 and low % size == 0 and aligned is False:
                low = low + 1 if low + 1 <= hi else low - 1
                if low < lo or low % size == 0:
                    return None
        previous = (region, low)
        pointer = low + (span - size if df else 0)
        fixed[p] = pointer
        bias[p] = N.SHADOW_BASE
        is_aligned = is_aligned and low % size == 0
        if first_offset is None:
            first_offset = pointer
    if first_offset is None:
        return None
    if prefix:
        fixed["rcx"] = count
    if a32:
        for name in list(fixed):
            fixed[name] = (fixed[name] & 0xFFFFFFFF) | (c.immediate(32) << 32)
    data = bytes(([0x67] if a32 else []) + ([0xF3] if prefix == "rep" else [0xF2] if prefix == "repne" else [])
                 + ([0x66] if op.operand_size == 16 else []) + ([0x48] if op.operand_size == 64 else [])
                 + [op.op_code])
    decoded = Decoder(64, data, ip=0x400000).decode()
    if decoded.code != code or decoded.len != len(data):
        return None
    return Form(code, data, first_offset, size, fixed, decoded, "string" + ("/a32" if a32 else ""), is_aligned,
                bias, (0x400, 0x400 if df else 0))


# ---------------------------------------------------------------------------------------------
# VSIB (gathers and scatters): every element's address base + index[i] * scale + disp in the window


def vsib_elements(instr: Instruction) -> tuple[int, int, int]:
    """(element count, element bytes, index bits) of a gather or scatter."""
    elem = MemorySizeExt.size(instr.memory_size)
    index_bits = 32 if instr.is_vsib32 else 64
    index_reg_bits = RegisterExt.size(instr.memory_index) * 8
    data = [instr.op_register(i) for i in range(instr.op_count)
            if instr.op_kind(i) == OpKind.REGISTER and RegisterExt.is_vector_register(instr.op_register(i))]
    data_bits = RegisterExt.size(data[0]) * 8
    return min(data_bits // (elem * 8), index_reg_bits // index_bits), elem, index_bits


def vsib_addresses(instr: Instruction, regs: dict[str, int]) -> list[int]:
    """The effective address of each element of a gather or scatter, given basis register values."""
    count, _elem, index_bits = vsib_elements(instr)
    vector = regs.get(f"zmm{RegisterExt.number(instr.memory_index)}", 0)
    base = 0
    if instr.memory_base != Register.NONE:
        base = regs.get(BASIS_OF_GPR64[RegisterExt.full_register(instr.memory_base)], 0)
    out = []
    for i in range(count):
        index = (vector >> (index_bits * i)) & ((1 << index_bits) - 1)
        if index >> (index_bits - 1):
            index -= 1 << index_bits
        out.append((base + index * instr.memory_index_scale + instr.memory_displacement) & (2**64 - 1))
    return out


def draw_vsib(c: Chooser, code, op, info, instr, kinds, used_regs, regions, aligned, avoid):
    pool_name, index_bits = VSIB_INDEX[kinds[info.memory_operand]]
    evex = op.encoding == EncodingKind.EVEX
    pool = {"XMM": XMM, "YMM": YMM, "ZMM": ZMM}[pool_name][:32 if evex else 16]
    taken = {RegisterExt.number(r) for r in used_regs if RegisterExt.is_vector_register(r)}
    index = c.choice([r for r in pool if RegisterExt.number(r) not in taken])   # distinct, or #UD
    if evex:
        instr.op_mask = c.choice(KREG[1:])                                       # gathers need a mask
    scale = c.choice((1, 2, 4, 8))
    instr.memory_index = index
    instr.memory_index_scale = scale
    count, elem, _ = vsib_elements(instr)
    fits = [r for r in regions if r.end - r.start >= elem * 2]
    if not fits:
        raise Impossible(f"{info.name}: no window region for its elements")
    region = c.choice(fits)
    want_aligned = c.boolean() if aligned is None else aligned
    # the elements' common origin (base + disp), then each element a whole number of steps from it
    origin = c.integer(region.start, region.end - elem)
    origin -= origin % elem
    if not want_aligned and elem > 1:
        origin += 1
        if origin > region.end - elem:
            return None
    step = max(1, elem // scale)          # keeps an element aligned if the origin is
    lo = -((origin - region.start) // (scale * step))
    hi = (region.end - elem - origin) // (scale * step)
    if lo > hi:
        return None
    indexes = [step * c.integer(lo, hi) for _ in range(count)]
    vector = 0
    for i, v in enumerate(indexes):
        vector |= (v & ((1 << index_bits) - 1)) << (index_bits * i)
    filler = c.immediate(64)
    for chunk in range(count * index_bits // 64, 8):
        vector |= filler << (64 * chunk)
    fixed = {f"zmm{RegisterExt.number(index)}": vector & (2**512 - 1)}
    ok = [r for r in range(16) if BASIS_OF_GPR64[GPR64[r]] not in avoid]
    if c.integer(0, 3) and ok:
        b = c.choice(ok)
        disp = c.displacement()
        instr.memory_base = GPR64[b]
        fixed[BASIS_OF_GPR64[GPR64[b]]] = (origin - disp) & (2**64 - 1)
        instr.memory_displ_size = 0 if disp == 0 else 1 if -128 <= disp <= 127 else 4
        shape = "vsib+base"
    else:
        disp = origin
        instr.memory_base = Register.NONE
        instr.memory_displ_size = 4
        shape = "vsib"
    instr.memory_displacement = disp & (2**64 - 1)
    encoded = encode_as(instr, code)
    if encoded is None or encoded[1].memory_index != index:
        return None
    data, decoded = encoded
    if (decoded.memory_displacement - disp) % 2**64 or decoded.memory_base != instr.memory_base:
        return None
    first = origin + indexes[0] * scale
    return Form(code, data, first, elem, fixed, decoded, shape, first % elem == 0)
