"""SHL/SAL SHR SAR ROL ROR RCL RCR SHLD SHRD SARX SHLX SHRX RORX, after the SDM pseudo-code.

A masked count of zero changes nothing, flags included.  What the SDM leaves
undefined for a non-zero count -- AF of every shift, OF beyond a 1-bit shift or
rotate, CF of SHL/SHR by the operand's width or more, the result and every
flag of a 16-bit SHLD/SHRD by more than 16 -- is what the host CPU gives
(`regmap.x86.undefined`; CPUs disagree there, and an Intel CPU even with
itself between forms).  Where no machine code runs, regmap's own choices
stand: AF and a shift's undefined OF unchanged, rotates' OF for every count
from the result (ROL/RCL: MSB xor CF; ROR/RCR: the two top bits, the count-1
rule applied to the final state), a whole-turn RCL/RCR (8- and 16-bit counts
that are multiples of 9 and 17) changing nothing, and the 16-bit SHLD/SHRD
below.
"""
from iced_x86 import Mnemonic as M

from regmap.x86 import flags, undefined
from regmap.x86.semantics import mask, semantics, sign


def _count_mask(width: int) -> int:
    return 0x3F if width == 64 else 0x1F


def _msb(value: int, width: int) -> int:
    return value >> (width - 1) & 1


def _result_flags(result: int, width: int, carry: int, overflow: int | None) -> tuple[int, int]:
    defined = flags.CF | flags.SF | flags.ZF | flags.PF
    bits = carry * flags.CF | flags.szp(result, width)
    if overflow is not None:
        defined |= flags.OF
        bits |= overflow * flags.OF
    return defined, bits


@semantics(M.SHL, M.SAL, M.SHR, M.SAR)
def shift(cpu, form):
    dest, count_operand = form.ops
    width = dest.width
    count = count_operand.read(cpu) & _count_mask(width)
    value = dest.read(cpu)
    if count == 0:
        dest.write(cpu, value)  # a 32-bit register destination is still zero-extended
        return
    if form.mnemonic in (M.SHL, M.SAL):
        shifted = value << count
        result, carry = shifted & mask(width), shifted >> width & 1
        overflow = _msb(result, width) ^ carry
    elif form.mnemonic == M.SHR:
        result, carry = value >> count, value >> (count - 1) & 1
        overflow = _msb(value, width)
    else:
        signed = sign(value, width)
        result, carry = (signed >> count) & mask(width), signed >> (count - 1) & 1
        overflow = 0
    unknown = flags.AF | (flags.OF if count > 1 else 0) \
        | (flags.CF if count >= width and form.mnemonic != M.SAR else 0)
    host = undefined.answer_with(cpu, form, (dest, value))
    dest.write(cpu, result)
    cpu.set_flags(flags.settled(_result_flags(result, width, carry, overflow if count == 1 else None),
                                unknown, host))


@semantics(M.ROL, M.ROR)
def rotate(cpu, form):
    dest, count_operand = form.ops
    width = dest.width
    masked = count_operand.read(cpu) & _count_mask(width)
    value = dest.read(cpu)
    if masked == 0:
        dest.write(cpu, value)
        return
    count = masked % width
    if form.mnemonic == M.ROL:
        result = (value << count | value >> (width - count)) & mask(width)
        carry = result & 1
        overflow = _msb(result, width) ^ carry
    else:
        result = (value >> count | value << (width - count)) & mask(width)
        carry = _msb(result, width)
        overflow = _msb(result, width) ^ (result >> (width - 2) & 1)
    host = undefined.answer_with(cpu, form, (dest, value)) if masked > 1 else None
    dest.write(cpu, result)
    cpu.set_flags(flags.settled((flags.CF | flags.OF, carry * flags.CF | overflow * flags.OF),
                                flags.OF, host))


@semantics(M.RCL, M.RCR)
def rotate_through_carry(cpu, form):
    """A (width+1)-bit rotate of CF:DEST; 8- and 16-bit counts are taken modulo 9 and 17."""
    dest, count_operand = form.ops
    width = dest.width
    masked = count_operand.read(cpu) & _count_mask(width)
    value, carry_in = dest.read(cpu), cpu.flag(flags.CF)
    if masked == 0:
        dest.write(cpu, value)
        return
    count = masked % (width + 1)
    host = undefined.answer_with(cpu, form, (dest, value)) if masked > 1 else None
    if count == 0:  # 8- and 16-bit: a whole turn leaves DEST and CF as they were (OF undefined)
        dest.write(cpu, value)
        cpu.set_flags(flags.settled((0, 0), flags.OF, host))
        return
    wide = carry_in << width | value
    if form.mnemonic == M.RCL:
        wide = (wide << count | wide >> (width + 1 - count)) & mask(width + 1)
    else:
        wide = (wide >> count | wide << (width + 1 - count)) & mask(width + 1)
    result, carry = wide & mask(width), wide >> width
    if form.mnemonic == M.RCL:
        overflow = _msb(result, width) ^ carry
    else:
        overflow = _msb(result, width) ^ (result >> (width - 2) & 1)
    dest.write(cpu, result)
    cpu.set_flags(flags.settled((flags.CF | flags.OF, carry * flags.CF | overflow * flags.OF),
                                flags.OF, host))


@semantics(M.SHLD, M.SHRD)
def double_shift(cpu, form):
    """SHLD shifts bits of SRC into DEST from the right, SHRD from the left.

    A 16-bit count above 16 leaves the result and every flag undefined in the
    SDM: they are the host CPU's.  Where no machine code runs, regmap shifts
    the 48-bit DEST:SRC:DEST (SHLD) or SRC:DEST with DEST above (SHRD).
    """
    dest, source, count_operand = form.ops
    width = dest.width
    count = count_operand.read(cpu) & _count_mask(width)
    value = dest.read(cpu)
    if count == 0:
        dest.write(cpu, value)
        return
    fill = source.read(cpu)
    if form.mnemonic == M.SHLD:
        wide = (value << 2 * width | fill << width | value) << count
        result, carry = wide >> 2 * width & mask(width), wide >> 3 * width & 1
    else:
        wide = value << 2 * width | fill << width | value
        result, carry = wide >> count & mask(width), wide >> (count - 1) & 1
    overflow = _msb(result, width) ^ _msb(value, width)
    update = _result_flags(result, width, carry, overflow if count == 1 else None)
    unknown = flags.AF | (flags.OF if count > 1 else 0)
    host = undefined.answer_with(cpu, form, (dest, value))
    if count > width and host is not None:     # 16 bits only: the result is the host's too
        unknown = flags.STATUS
        result = host.memory if dest.is_memory else host.register(dest.basis) >> dest.lo
    dest.write(cpu, result & mask(width))
    cpu.set_flags(flags.settled(update, unknown, host))


@semantics(M.SARX, M.SHLX, M.SHRX)
def shift_without_flags(cpu, form):
    dest, source, count_operand = form.ops
    width = dest.width
    count = count_operand.read(cpu) & _count_mask(width)
    value = source.read(cpu)
    if form.mnemonic == M.SHLX:
        dest.write(cpu, value << count)
    elif form.mnemonic == M.SHRX:
        dest.write(cpu, value >> count)
    else:
        dest.write(cpu, sign(value, width) >> count)


@semantics(M.RORX)
def rorx(cpu, form):
    dest, source, count_operand = form.ops
    width = dest.width
    count = count_operand.read(cpu) & _count_mask(width)
    value = source.read(cpu)
    dest.write(cpu, value >> count | value << (width - count))
