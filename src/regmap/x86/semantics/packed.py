"""Packed-integer SSE/AVX operations with a window operand: `paddq xmm0, [0]` adds rax and rcx in.

Every operation here works lane by lane, so the family is a table: mnemonic
-> (lane width, what one lane computes).  The legacy form is
``dest <- dest OP source`` with a 16-byte aligned memory operand (#GP
otherwise); the VEX form is ``dest <- first OP second`` and clears the
destination above the operand width.
"""
from iced_x86 import EncodingKind, Mnemonic as M

from regmap.errors import GeneralProtection
from regmap.x86 import flags
from regmap.x86.semantics import mask, semantics, sign


def _wrap(operation):
    return lambda a, b, width: operation(a, b) & mask(width)


def _signed(operation):
    return lambda a, b, width: operation(sign(a, width), sign(b, width)) & mask(width)


def _saturate_unsigned(operation):
    return lambda a, b, width: min(max(operation(a, b), 0), mask(width))


def _saturate_signed(operation):
    def lane(a, b, width):
        low, high = -(1 << (width - 1)), (1 << (width - 1)) - 1
        return min(max(operation(sign(a, width), sign(b, width)), low), high) & mask(width)
    return lane


def _all_ones_if(predicate, signed=False):
    def lane(a, b, width):
        if signed:
            a, b = sign(a, width), sign(b, width)
        return mask(width) if predicate(a, b) else 0
    return lane


_ADD, _SUB = (lambda a, b: a + b), (lambda a, b: a - b)
_WHOLE = 128  # bitwise operations: one lane as wide as the register (any width works)

PACKED = {
    **{m: (w, _wrap(_ADD)) for m, w in ((M.PADDB, 8), (M.PADDW, 16), (M.PADDD, 32), (M.PADDQ, 64),
                                        (M.VPADDB, 8), (M.VPADDW, 16), (M.VPADDD, 32), (M.VPADDQ, 64))},
    **{m: (w, _wrap(_SUB)) for m, w in ((M.PSUBB, 8), (M.PSUBW, 16), (M.PSUBD, 32), (M.PSUBQ, 64),
                                        (M.VPSUBB, 8), (M.VPSUBW, 16), (M.VPSUBD, 32), (M.VPSUBQ, 64))},
    **{m: (w, _saturate_unsigned(_ADD)) for m, w in ((M.PADDUSB, 8), (M.PADDUSW, 16),
                                                     (M.VPADDUSB, 8), (M.VPADDUSW, 16))},
    **{m: (w, _saturate_unsigned(_SUB)) for m, w in ((M.PSUBUSB, 8), (M.PSUBUSW, 16),
                                                     (M.VPSUBUSB, 8), (M.VPSUBUSW, 16))},
    **{m: (w, _saturate_signed(_ADD)) for m, w in ((M.PADDSB, 8), (M.PADDSW, 16),
                                                   (M.VPADDSB, 8), (M.VPADDSW, 16))},
    **{m: (w, _saturate_signed(_SUB)) for m, w in ((M.PSUBSB, 8), (M.PSUBSW, 16),
                                                   (M.VPSUBSB, 8), (M.VPSUBSW, 16))},
    **{m: (_WHOLE, _wrap(lambda a, b: a & b)) for m in (M.PAND, M.VPAND, M.ANDPS, M.VANDPS, M.ANDPD, M.VANDPD)},
    **{m: (_WHOLE, _wrap(lambda a, b: a | b)) for m in (M.POR, M.VPOR, M.ORPS, M.VORPS, M.ORPD, M.VORPD)},
    **{m: (_WHOLE, _wrap(lambda a, b: a ^ b)) for m in (M.PXOR, M.VPXOR, M.XORPS, M.VXORPS, M.XORPD, M.VXORPD)},
    **{m: (_WHOLE, _wrap(lambda a, b: ~a & b)) for m in (M.PANDN, M.VPANDN, M.ANDNPS, M.VANDNPS,
                                                        M.ANDNPD, M.VANDNPD)},
    **{m: (w, _all_ones_if(lambda a, b: a == b)) for m, w in (
        (M.PCMPEQB, 8), (M.PCMPEQW, 16), (M.PCMPEQD, 32), (M.PCMPEQQ, 64),
        (M.VPCMPEQB, 8), (M.VPCMPEQW, 16), (M.VPCMPEQD, 32), (M.VPCMPEQQ, 64))},
    **{m: (w, _all_ones_if(lambda a, b: a > b, signed=True)) for m, w in (
        (M.PCMPGTB, 8), (M.PCMPGTW, 16), (M.PCMPGTD, 32), (M.PCMPGTQ, 64),
        (M.VPCMPGTB, 8), (M.VPCMPGTW, 16), (M.VPCMPGTD, 32), (M.VPCMPGTQ, 64))},
    **{m: (w, _wrap(min)) for m, w in ((M.PMINUB, 8), (M.PMINUW, 16), (M.PMINUD, 32),
                                        (M.VPMINUB, 8), (M.VPMINUW, 16), (M.VPMINUD, 32))},
    **{m: (w, _wrap(max)) for m, w in ((M.PMAXUB, 8), (M.PMAXUW, 16), (M.PMAXUD, 32),
                                        (M.VPMAXUB, 8), (M.VPMAXUW, 16), (M.VPMAXUD, 32))},
    **{m: (w, _signed(min)) for m, w in ((M.PMINSB, 8), (M.PMINSW, 16), (M.PMINSD, 32),
                                          (M.VPMINSB, 8), (M.VPMINSW, 16), (M.VPMINSD, 32))},
    **{m: (w, _signed(max)) for m, w in ((M.PMAXSB, 8), (M.PMAXSW, 16), (M.PMAXSD, 32),
                                          (M.VPMAXSB, 8), (M.VPMAXSW, 16), (M.VPMAXSD, 32))},
    **{m: (w, _wrap(lambda a, b: (a + b + 1) >> 1)) for m, w in ((M.PAVGB, 8), (M.PAVGW, 16),
                                                                 (M.VPAVGB, 8), (M.VPAVGW, 16))},
    **{m: (w, _signed(lambda a, b: a * b)) for m, w in ((M.PMULLW, 16), (M.PMULLD, 32),
                                                        (M.VPMULLW, 16), (M.VPMULLD, 32))},
    **{m: (16, lambda a, b, width: (sign(a, 16) * sign(b, 16) >> 16) & 0xFFFF) for m in (M.PMULHW, M.VPMULHW)},
    **{m: (16, lambda a, b, width: (a * b) >> 16) for m in (M.PMULHUW, M.VPMULHUW)},
    **{m: (64, lambda a, b, width: (a & 0xFFFF_FFFF) * (b & 0xFFFF_FFFF)) for m in (M.PMULUDQ, M.VPMULUDQ)},
    **{m: (64, lambda a, b, width: (sign(a & 0xFFFF_FFFF, 32) * sign(b & 0xFFFF_FFFF, 32)) & mask(64))
       for m in (M.PMULDQ, M.VPMULDQ)},
}


def destination_and_sources(form):
    """(dest, first, second): legacy SSE forms are destructive (``paddd xmm1, m`` reads xmm1),
    VEX/EVEX forms name a separate first source (``vpaddd xmm0, xmm1, m``)."""
    if form.instruction.encoding == EncodingKind.LEGACY:
        dest, second = form.ops
        return dest, dest, second
    return form.ops


def legacy_alignment(cpu, form, operand) -> None:
    """#GP for a legacy SSE 16-byte memory operand that is not 16-byte aligned (VEX forms and
    the element-sized operands of inserts and extracts may be misaligned)."""
    if (form.instruction.encoding == EncodingKind.LEGACY and operand.is_memory
            and operand.width == 128 and operand.address(cpu) % 16):
        raise GeneralProtection(f"{form.disassembly}: a legacy SSE memory operand must be 16-byte aligned")


@semantics(*PACKED)
def packed(cpu, form):
    lane_width, lane = PACKED[form.mnemonic]
    dest, first, second = destination_and_sources(form)
    legacy_alignment(cpu, form, second)
    width = dest.width
    lane_width = min(lane_width, width)
    a, b, result = first.read(cpu), second.read(cpu), 0
    for shift in range(0, width, lane_width):
        result |= lane(a >> shift & mask(lane_width), b >> shift & mask(lane_width), lane_width) << shift
    dest.write(cpu, result)


@semantics(M.PTEST, M.VPTEST)
def ptest(cpu, form):
    """ZF <- (a AND b) = 0, CF <- (NOT a AND b) = 0; AF OF PF SF cleared."""
    first, second = form.ops
    if form.instruction.encoding == EncodingKind.LEGACY and second.is_memory and second.address(cpu) % 16:
        raise GeneralProtection(f"{form.disassembly}: a legacy SSE memory operand must be 16-byte aligned")
    a, b = first.read(cpu), second.read(cpu)
    cpu.set_flags((flags.STATUS, (0 if a & b else flags.ZF) | (0 if ~a & b else flags.CF)))
