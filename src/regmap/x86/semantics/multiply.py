"""MUL IMUL DIV IDIV MULX.

Undefined flags (SF ZF AF PF after a multiply, all six after a divide) are
the host CPU's (`regmap.x86.undefined`), or left unchanged where no machine
code runs: see `regmap.x86.flags`.
"""
from iced_x86 import Mnemonic as M

from regmap.errors import DivideError
from regmap.x86 import flags, undefined
from regmap.x86.semantics import mask, semantics, sign

_HIGH_HALF = {16: "dx", 32: "edx", 64: "rdx"}
_MULTIPLY_UNDEFINED = flags.SF | flags.ZF | flags.AF | flags.PF


def _overflow_flags(overflow: bool) -> tuple[int, int]:
    return flags.CF | flags.OF, (flags.CF | flags.OF) if overflow else 0


def _store_double(cpu, form, width: int, product: int) -> None:
    """AX <- product (8-bit), else rDX:rAX <- product."""
    if width == 8:
        form.register("ax").write(cpu, product)
    else:
        form.accumulator(width).write(cpu, product & mask(width))
        form.register(_HIGH_HALF[width]).write(cpu, product >> width)


@semantics(M.MUL)
def mul(cpu, form):
    source, = form.ops
    width = source.width
    factor = source.read(cpu)
    product = form.accumulator(width).read(cpu) * factor
    host = undefined.answer_with(cpu, form, (source, factor))
    _store_double(cpu, form, width, product)
    cpu.set_flags(flags.settled(_overflow_flags(product >> width != 0), _MULTIPLY_UNDEFINED, host))


@semantics(M.IMUL)
def imul(cpu, form):
    if len(form.ops) == 1:
        source, = form.ops
        width = source.width
        factor = source.read(cpu)
        product = sign(form.accumulator(width).read(cpu), width) * sign(factor, width)
        host = undefined.answer_with(cpu, form, (source, factor))
        _store_double(cpu, form, width, product & mask(2 * width))
    else:
        dest, *factors = form.ops
        width = dest.width
        a, b = (factors if len(factors) == 2 else (dest, factors[0]))
        first, second = a.read(cpu), b.read(cpu)
        product = sign(first, width) * sign(second, width)
        host = undefined.answer_with(cpu, form, (a, first), (b, second))
        dest.write(cpu, product)
    truncated = sign(product & mask(width), width)
    cpu.set_flags(flags.settled(_overflow_flags(truncated != product), _MULTIPLY_UNDEFINED, host))


def _dividend(cpu, form, width: int) -> int:
    if width == 8:
        return form.register("ax").read(cpu)
    high = form.register(_HIGH_HALF[width]).read(cpu)
    return high << width | form.accumulator(width).read(cpu)


def _store_quotient(cpu, form, width: int, quotient: int, remainder: int) -> None:
    if width == 8:
        form.register("ax").write(cpu, (remainder & 0xFF) << 8 | (quotient & 0xFF))
    else:
        form.accumulator(width).write(cpu, quotient)
        form.register(_HIGH_HALF[width]).write(cpu, remainder)


@semantics(M.DIV)
def div(cpu, form):
    source, = form.ops
    width = source.width
    divisor = source.read(cpu)
    if divisor == 0:
        raise DivideError("divide by zero")
    quotient, remainder = divmod(_dividend(cpu, form, width), divisor)
    if quotient > mask(width):
        raise DivideError("quotient too large")
    host = undefined.answer_with(cpu, form, (source, divisor))      # only now: the host must not fault
    _store_quotient(cpu, form, width, quotient, remainder)
    cpu.set_flags(flags.settled((0, 0), flags.STATUS, host))


@semantics(M.IDIV)
def idiv(cpu, form):
    source, = form.ops
    width = source.width
    raw = source.read(cpu)
    divisor = sign(raw, width)
    if divisor == 0:
        raise DivideError("divide by zero")
    dividend = sign(_dividend(cpu, form, width), 2 * width)
    quotient = abs(dividend) // abs(divisor)  # truncation toward zero
    if (dividend < 0) != (divisor < 0):
        quotient = -quotient
    remainder = dividend - quotient * divisor
    if not -(1 << (width - 1)) <= quotient < 1 << (width - 1):
        raise DivideError("quotient too large")
    host = undefined.answer_with(cpu, form, (source, raw))      # only now: the host must not fault
    _store_quotient(cpu, form, width, quotient, remainder)
    cpu.set_flags(flags.settled((0, 0), flags.STATUS, host))


@semantics(M.MULX)
def mulx(cpu, form):
    """DEST2 <- low half, then DEST1 <- high half (same register: it holds the high half)."""
    high, low, source = form.ops
    width = high.width
    product = form.register("rdx" if width == 64 else "edx").read(cpu) * source.read(cpu)
    low.write(cpu, product)
    high.write(cpu, product >> width)
