"""BT BTS BTR BTC BSF BSR TZCNT LZCNT POPCNT ANDN BLSI BLSR BLSMSK BEXTR BZHI PDEP PEXT CRC32.

The flags the SDM leaves undefined here (and BSF/BSR's destination for a zero
source) are the host CPU's (`regmap.x86.undefined`), or left unchanged where
no machine code runs.
"""
from iced_x86 import Mnemonic as M

from regmap.x86 import flags, undefined
from regmap.x86.operands import ImmediateOperand
from regmap.x86.semantics import mask, semantics, sign

_BIT_UPDATE = {
    M.BT: None,
    M.BTS: lambda unit, bit: unit | bit,
    M.BTR: lambda unit, bit: unit & ~bit,
    M.BTC: lambda unit, bit: unit ^ bit,
}


@semantics(*_BIT_UPDATE)
def bit_test(cpu, form):
    """CF <- the selected bit; BTS/BTR/BTC then set, clear or flip it.

    With a register offset and a memory base the operand is a bit string:
    the offset is signed and may reach units before or after the one
    addressed, so `bt [0], rcx` with rcx = 64 tests bit 0 of the rcx slot.
    The unit's address wraps as the operand's does (at 32 bits under 67h).
    """
    base, offset_operand = form.ops
    width, size = base.width, base.width // 8
    offset = offset_operand.read(cpu)
    address = None
    if base.is_memory and not isinstance(offset_operand, ImmediateOperand):
        offset = sign(offset, offset_operand.width)
        address = base.address_beyond(cpu, (offset >> (width.bit_length() - 1)) * size)
    bit = 1 << (offset & (width - 1))
    unit = base.read(cpu) if address is None else base.read_at(cpu, address, size)
    # the host's run sees the unit alone: its offset within the unit, not beyond it
    within = None if address is None else {offset_operand.basis: offset & (width - 1)}
    host = undefined.answer(cpu, form, unit if base.is_memory else 0, within)
    cpu.set_flags(flags.settled((flags.CF, flags.CF if unit & bit else 0),
                                flags.OF | flags.SF | flags.AF | flags.PF, host))
    update = _BIT_UPDATE[form.mnemonic]
    if update is None:
        return
    if address is None:
        base.write(cpu, update(unit, bit))
    else:
        base.write_at(cpu, address, size, update(unit, bit))


@semantics(M.BSF, M.BSR)
def bit_scan(cpu, form):
    """A zero source sets ZF; the destination is then undefined: the host's, or left alone
    where no machine code runs (as Intel and AMD CPUs are known to do)."""
    dest, source = form.ops
    value = source.read(cpu)
    host = undefined.answer_with(cpu, form, (source, value))
    unknown = flags.CF | flags.OF | flags.SF | flags.AF | flags.PF
    if value == 0:
        if host is not None:      # the whole register: a 32-bit one may or may not be extended
            cpu.set_reg(dest.basis, host.register(dest.basis))
        cpu.set_flags(flags.settled((flags.ZF, flags.ZF), unknown, host))
        return
    index = (value & -value).bit_length() - 1 if form.mnemonic == M.BSF else value.bit_length() - 1
    dest.write(cpu, index)
    cpu.set_flags(flags.settled((flags.ZF, 0), unknown, host))


@semantics(M.TZCNT, M.LZCNT)
def count_zeros(cpu, form):
    dest, source = form.ops
    width, value = source.width, source.read(cpu)
    if form.mnemonic == M.TZCNT:
        count = (value & -value).bit_length() - 1 if value else width
    else:
        count = width - value.bit_length()
    host = undefined.answer_with(cpu, form, (source, value))
    dest.write(cpu, count)
    cpu.set_flags(flags.settled((flags.CF | flags.ZF, (0 if value else flags.CF) | (0 if count else flags.ZF)),
                                flags.OF | flags.SF | flags.PF | flags.AF, host))


@semantics(M.POPCNT)
def popcnt(cpu, form):
    dest, source = form.ops
    value = source.read(cpu)
    dest.write(cpu, bin(value).count("1"))
    cpu.set_flags((flags.STATUS, 0 if value else flags.ZF))


def _sign_zero(result: int, width: int) -> int:
    return flags.szp(result, width) & (flags.SF | flags.ZF)


@semantics(M.ANDN)
def andn(cpu, form):
    dest, first, second = form.ops
    b = second.read(cpu)
    result = ~first.read(cpu) & b & mask(dest.width)
    host = undefined.answer_with(cpu, form, (second, b))
    dest.write(cpu, result)
    cpu.set_flags(flags.settled((flags.SF | flags.ZF | flags.CF | flags.OF | flags.AF,
                                 _sign_zero(result, dest.width)), flags.AF | flags.PF, host))


_LOWEST_BIT = {
    M.BLSI: lambda v: v & -v,
    M.BLSR: lambda v: v & (v - 1),
    M.BLSMSK: lambda v: v ^ (v - 1),
}


@semantics(*_LOWEST_BIT)
def lowest_set_bit(cpu, form):
    """BLSI isolates, BLSR resets, BLSMSK masks up to the lowest set bit."""
    dest, source = form.ops
    width, value = dest.width, source.read(cpu)
    result = _LOWEST_BIT[form.mnemonic](value) & mask(width)
    host = undefined.answer_with(cpu, form, (source, value))
    dest.write(cpu, result)
    carry = bool(value) if form.mnemonic == M.BLSI else not value
    sign_zero = _sign_zero(result, width) & (flags.SF if form.mnemonic == M.BLSMSK else ~0)
    cpu.set_flags(flags.settled((flags.SF | flags.ZF | flags.CF | flags.OF,
                                 sign_zero | (flags.CF if carry else 0)), flags.AF | flags.PF, host))


@semantics(M.BEXTR)
def bextr(cpu, form):
    dest, source, control = form.ops
    width, ctl = dest.width, control.read(cpu)
    start, length = ctl & 0xFF, ctl >> 8 & 0xFF
    value = source.read(cpu)  # read whatever the start: a source in a hole faults
    result = (value >> start) & mask(min(length, width)) if start < width else 0
    host = undefined.answer_with(cpu, form, (source, value))
    dest.write(cpu, result)
    cpu.set_flags(flags.settled((flags.ZF | flags.CF | flags.OF, 0 if result else flags.ZF),
                                flags.AF | flags.SF | flags.PF, host))


@semantics(M.BZHI)
def bzhi(cpu, form):
    dest, source, index_operand = form.ops
    width, index = dest.width, index_operand.read(cpu) & 0xFF
    value = source.read(cpu)
    result = value & mask(index) if index < width else value
    host = undefined.answer_with(cpu, form, (source, value))
    dest.write(cpu, result)
    cpu.set_flags(flags.settled((flags.SF | flags.ZF | flags.CF | flags.OF,
                                 _sign_zero(result, width) | (flags.CF if index > width - 1 else 0)),
                                flags.AF | flags.PF, host))


def _mask_bits(select: int):
    """(n, bit) for the n-th set bit of `select`, lowest first."""
    n = 0
    while select:
        bit = select & -select
        yield n, bit
        n += 1
        select ^= bit


@semantics(M.PDEP)
def pdep(cpu, form):
    """Deposit the low bits of the source at the set bits of the mask."""
    dest, source, selector = form.ops
    value = source.read(cpu)
    dest.write(cpu, sum(bit for n, bit in _mask_bits(selector.read(cpu)) if value >> n & 1))


@semantics(M.PEXT)
def pext(cpu, form):
    """Gather the source bits at the set bits of the mask into the low bits."""
    dest, source, selector = form.ops
    value = source.read(cpu)
    dest.write(cpu, sum(1 << n for n, bit in _mask_bits(selector.read(cpu)) if value & bit))


# CRC-32C (Castagnoli), bit-reflected polynomial, as the CRC32 instruction computes it.
_CRC32C_POLYNOMIAL = 0x82F63B78


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = crc >> 1 ^ (_CRC32C_POLYNOMIAL if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


@semantics(M.CRC32)
def crc32(cpu, form):
    """Accumulate CRC-32C of the source bytes into DEST[31:0] (no pre/post inversion)."""
    dest, source = form.ops
    crc, value = dest.read(cpu) & 0xFFFF_FFFF, source.read(cpu)
    for _ in range(source.width // 8):
        crc = crc >> 8 ^ _CRC32C[(crc ^ value) & 0xFF]
        value >>= 8
    dest.write(cpu, crc)
