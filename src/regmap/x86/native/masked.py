"""Which elements a masked memory access touches: gathers, scatters, masked loads and stores.

A masked-off element is not accessed, so it never faults: the SDM says so of VMASKMOV and
VPMASKMOV ("faults will not occur due to referencing any memory location if the corresponding
mask bit for that memory location is 0"), of gathers and scatters (only elements whose mask bit
is set are loaded or stored), and of the AVX-512 masked moves (memory fault suppression, at
element granularity).  In the window that means a masked-off element in a layout hole does not
fault, and one masked on does, whether the instruction stores a changed value there or not.

The same suppression holds for the EVEX arithmetic, compare, convert and extend forms whose
memory element i feeds destination element i only (SDM Vol. 2, 2.7: the exception classes "w/ fs",
E2, E4, E5, E6, E11): with a full memory operand a masked-off element is not accessed; with a
broadcast ({1toN}) the one element is read if any of the N mask bits is set.  The forms of the
"NF" classes (permutes, shuffles, unpacks, packs, align, insert/extract, shift counts, pmaddwd...)
read their whole operand: `_SUPPRESSING` names only the vertical ones.  A masked scalar form
(E3, E10) reads its one element under mask bit 0; a broadcast from memory (`vbroadcastf32x4`,
`vpbroadcastd`, E6) element j if a mask bit of a destination element it feeds is set.  An expand (vpexpand*, vexpandp*) reads its first popcnt(k) elements, contiguous; a
compress (vpcompress*, vcompressp*) stores popcnt(k) elements contiguously.
`tests/test_native_fault_suppression.py` checks every such form against the host CPU across a
guard page.

The mask is per element of the *memory* operand: bit i of an opmask, or the top bit of element
i of a VEX vector mask (element size the memory element's; for a form that can broadcast, its
broadcast element: `vpdpbusd`'s mask is per dword of its bytes).
"""
from __future__ import annotations

from iced_x86 import (EncodingKind, MemorySizeExt, MemorySizeInfo, Mnemonic, OpCodeInfo, OpCodeOperandKind, OpKind,
                      Register, RegisterExt)

# mask in the vector register operand 1 (load: dest, mask, mem; store: mem, mask, src)
_VECTOR_MASKED = {Mnemonic.VMASKMOVPS, Mnemonic.VMASKMOVPD, Mnemonic.VPMASKMOVD, Mnemonic.VPMASKMOVQ}
# the AVX-512 moves whose memory operand is elementwise under an opmask (SDM exception classes
# E1, E4 moves, E10 scalar moves: fault suppression supported)
_OPMASK_MOVES = {Mnemonic.VMOVAPS, Mnemonic.VMOVAPD, Mnemonic.VMOVUPS, Mnemonic.VMOVUPD,
                 Mnemonic.VMOVDQA32, Mnemonic.VMOVDQA64, Mnemonic.VMOVDQU8, Mnemonic.VMOVDQU16,
                 Mnemonic.VMOVDQU32, Mnemonic.VMOVDQU64, Mnemonic.VMOVSS, Mnemonic.VMOVSD, Mnemonic.VMOVSH}
_EXPANDS = {Mnemonic.VPEXPANDB, Mnemonic.VPEXPANDW, Mnemonic.VPEXPANDD, Mnemonic.VPEXPANDQ,
            Mnemonic.VEXPANDPS, Mnemonic.VEXPANDPD}
_COMPRESSES = {Mnemonic.VPCOMPRESSB, Mnemonic.VPCOMPRESSW, Mnemonic.VPCOMPRESSD, Mnemonic.VPCOMPRESSQ,
               Mnemonic.VCOMPRESSPS, Mnemonic.VCOMPRESSPD}
# the vertical EVEX forms with memory fault suppression (element i of memory to element i of the
# destination); of the shifts by an immediate (`vpsllw zmm, zmm/m512, imm8`), not their forms that
# take the count from memory (`vpsllw zmm, zmm, xmm/m128`: no immediate)
_SUPPRESSING = {getattr(Mnemonic, name.upper()) for name in """
    vaddpd vaddph vaddps vandnpd vandnps vandpd vandps vblendmpd vblendmps vcmppd vcmpph vcmpps
    vcvtdq2pd vcvtdq2ph vcvtdq2ps vcvtneps2bf16 vcvtpd2dq vcvtpd2ph vcvtpd2ps vcvtpd2qq vcvtpd2udq
    vcvtpd2uqq vcvtph2dq vcvtph2pd vcvtph2ps vcvtph2psx vcvtph2qq vcvtph2udq vcvtph2uqq vcvtph2uw
    vcvtph2w vcvtps2dq vcvtps2pd vcvtps2ph vcvtps2phx vcvtps2qq vcvtps2udq vcvtps2uqq vcvtqq2pd
    vcvtqq2ph vcvtqq2ps vcvttpd2dq vcvttpd2qq vcvttpd2udq vcvttpd2uqq vcvttph2dq vcvttph2qq
    vcvttph2udq vcvttph2uqq vcvttph2uw vcvttph2w vcvttps2dq vcvttps2qq vcvttps2udq vcvttps2uqq
    vcvtudq2pd vcvtudq2ph vcvtudq2ps vcvtuqq2pd vcvtuqq2ph vcvtuqq2ps vcvtuw2ph vcvtw2ph vdivpd
    vdivph vdivps vdpbf16ps vfcmaddcph vfcmulcph vfixupimmpd vfixupimmps vfmadd132pd vfmadd132ph
    vfmadd132ps vfmadd213pd vfmadd213ph vfmadd213ps vfmadd231pd vfmadd231ph vfmadd231ps vfmaddcph
    vfmaddsub132pd vfmaddsub132ph vfmaddsub132ps vfmaddsub213pd vfmaddsub213ph vfmaddsub213ps
    vfmaddsub231pd vfmaddsub231ph vfmaddsub231ps vfmsub132pd vfmsub132ph vfmsub132ps vfmsub213pd
    vfmsub213ph vfmsub213ps vfmsub231pd vfmsub231ph vfmsub231ps vfmsubadd132pd vfmsubadd132ph
    vfmsubadd132ps vfmsubadd213pd vfmsubadd213ph vfmsubadd213ps vfmsubadd231pd vfmsubadd231ph
    vfmsubadd231ps vfmulcph vfnmadd132pd vfnmadd132ph vfnmadd132ps vfnmadd213pd vfnmadd213ph
    vfnmadd213ps vfnmadd231pd vfnmadd231ph vfnmadd231ps vfnmsub132pd vfnmsub132ph vfnmsub132ps
    vfnmsub213pd vfnmsub213ph vfnmsub213ps vfnmsub231pd vfnmsub231ph vfnmsub231ps vfpclasspd
    vfpclassph vfpclassps vgetexppd vgetexpph vgetexpps vgetmantpd vgetmantph vgetmantps vgf2p8mulb
    vmaxpd vmaxph vmaxps vminpd vminph vminps vmulpd vmulph vmulps vorpd vorps vpabsb vpabsd vpabsq
    vpabsw vpaddb vpaddd vpaddq vpaddsb vpaddsw vpaddusb vpaddusw vpaddw vpandd vpandnd vpandnq
    vpandq vpavgb vpavgw vpblendmb vpblendmd vpblendmq vpblendmw vpcmpb vpcmpd vpcmpeqb vpcmpeqd
    vpcmpeqq vpcmpeqw vpcmpgtb vpcmpgtd vpcmpgtq vpcmpgtw vpcmpq vpcmpub vpcmpud vpcmpuq vpcmpuw
    vpcmpw vpdpbusd vpdpbusds vpdpwssd vpdpwssds vplzcntd vplzcntq vpmadd52huq vpmadd52luq vpmaxsb
    vpmaxsd vpmaxsq vpmaxsw vpmaxub vpmaxud vpmaxuq vpmaxuw vpminsb vpminsd vpminsq vpminsw vpminub
    vpminud vpminuq vpminuw vpmovdb vpmovdw vpmovqb vpmovqd vpmovqw vpmovsdb vpmovsdw vpmovsqb
    vpmovsqd vpmovsqw vpmovswb vpmovsxbd vpmovsxbq vpmovsxbw vpmovsxdq vpmovsxwd vpmovsxwq vpmovusdb
    vpmovusdw vpmovusqb vpmovusqd vpmovusqw vpmovuswb vpmovwb vpmovzxbd vpmovzxbq vpmovzxbw
    vpmovzxdq vpmovzxwd vpmovzxwq vpmuldq vpmulhrsw vpmulhuw vpmulhw vpmulld vpmullq vpmullw
    vpmuludq vpopcntb vpopcntd vpopcntq vpopcntw vpord vporq vprold vprolq vprolvd vprolvq vprord
    vprorq vprorvd vprorvq vpshldd vpshldq vpshldvd vpshldvq vpshldvw vpshldw vpshrdd vpshrdq
    vpshrdvd vpshrdvq vpshrdvw vpshrdw vpshufbitqmb vpslld vpsllq vpsllvd vpsllvq vpsllvw vpsllw
    vpsrad vpsraq vpsravd vpsravq vpsravw vpsraw vpsrld vpsrlq vpsrlvd vpsrlvq vpsrlvw vpsrlw vpsubb
    vpsubd vpsubq vpsubsb vpsubsw vpsubusb vpsubusw vpsubw vpternlogd vpternlogq vptestmb vptestmd
    vptestmq vptestmw vptestnmb vptestnmd vptestnmq vptestnmw vpxord vpxorq vrangepd vrangeps
    vrcp14pd vrcp14ps vrcpph vreducepd vreduceph vreduceps vrndscalepd vrndscaleph vrndscaleps
    vrsqrt14pd vrsqrt14ps vrsqrtph vscalefpd vscalefph vscalefps vsqrtpd vsqrtph vsqrtps vsubpd
    vsubph vsubps vxorpd vxorps
""".split()}
# their scalar forms: the one element, under mask bit 0
_SCALARS = {getattr(Mnemonic, name.upper()) for name in """
    vaddsd vaddsh vaddss vcmpsd vcmpss vcvtsd2sh vcvtsd2ss vcvtsh2sd vcvtsh2ss vcvtss2sd vcvtss2sh
    vdivsd vdivsh vdivss vfcmaddcsh vfcmulcsh vfixupimmsd vfixupimmss vfmadd132sd vfmadd132sh
    vfmadd132ss vfmadd213sd vfmadd213sh vfmadd213ss vfmadd231sd vfmadd231sh vfmadd231ss vfmaddcsh
    vfmsub132sd vfmsub132sh vfmsub132ss vfmsub213sd vfmsub213sh vfmsub213ss vfmsub231sd vfmsub231sh
    vfmsub231ss vfmulcsh vfnmadd132sd vfnmadd132sh vfnmadd132ss vfnmadd213sd vfnmadd213sh
    vfnmadd213ss vfnmadd231sd vfnmadd231sh vfnmadd231ss vfnmsub132sd vfnmsub132sh vfnmsub132ss
    vfnmsub213sd vfnmsub213sh vfnmsub213ss vfnmsub231sd vfnmsub231sh vfnmsub231ss vfpclasssd
    vfpclasssh vfpclassss vgetexpsd vgetexpsh vgetexpss vgetmantsd vgetmantsh vgetmantss vmaxsd
    vmaxsh vmaxss vminsd vminsh vminss vmulsd vmulsh vmulss vrangesd vrangess vrcp14sd vrcp14ss
    vrcpsh vreducesd vreducesh vreducess vrndscalesd vrndscalesh vrndscaless vrsqrt14sd vrsqrt14ss
    vrsqrtsh vscalefsd vscalefsh vscalefss vsqrtsd vsqrtsh vsqrtss vsubsd vsubsh vsubss
""".split()}
# the broadcasts from memory: destination element i is memory element i mod n
_REPEATS = {getattr(Mnemonic, name.upper()) for name in """
    vbroadcastf32x2 vbroadcastf32x4 vbroadcastf32x8 vbroadcastf64x2 vbroadcastf64x4 vbroadcasti32x2
    vbroadcasti32x4 vbroadcasti32x8 vbroadcasti64x2 vbroadcasti64x4 vbroadcastsd vbroadcastss
    vpbroadcastb vpbroadcastd vpbroadcastq vpbroadcastw
""".split()}
_SHIFTS = {Mnemonic.VPSLLW, Mnemonic.VPSLLD, Mnemonic.VPSLLQ, Mnemonic.VPSRLW, Mnemonic.VPSRLD, Mnemonic.VPSRLQ,
           Mnemonic.VPSRAW, Mnemonic.VPSRAD, Mnemonic.VPSRAQ}


class Mask:
    """Where a form's mask is: ``("k", n)`` or ``("vector", n)``, and its memory element's size."""

    __slots__ = ("kind", "number", "element", "mode", "count")

    def __init__(self, kind: str, number: int, element: int, mode: str = "elements", count: int = 0):
        """``mode``: "elements" (element i accessed if bit i is set), "prefix" (an expand or
        compress: the first popcnt elements), "broadcast" (the one element, if any of ``count``
        bits is set) or "tiled" (element j, if any of ``count`` bits i = j mod the elements is)."""
        self.kind, self.number, self.element, self.mode, self.count = kind, number, element, mode, count

    def bits(self, cpu, count: int) -> int:
        """Bit i set: element i (of ``count``) is masked on."""
        if self.kind == "k":
            return cpu.reg(f"k{self.number}") & ((1 << count) - 1)
        value, width = cpu.reg(f"zmm{self.number}"), self.element * 8
        return sum(1 << i for i in range(count) if value >> (width * i + width - 1) & 1)

    def __repr__(self) -> str:
        return f"Mask({self.kind}{self.number}, {self.element} bytes)"


def mask_of(instr, element: int) -> Mask | None:
    """The mask of a gather, scatter or masked move (``element``: a gather's element size), or
    None if its memory operand is accessed whole."""
    if instr.is_vsib:
        if instr.op_mask != Register.NONE:
            return Mask("k", instr.op_mask - Register.K0, element)
        return Mask("vector", RegisterExt.number(instr.op_register(2)), element)     # VEX: op 2
    if instr.mnemonic in _VECTOR_MASKED:
        size = MemorySizeInfo(instr.memory_size).element_size
        return Mask("vector", RegisterExt.number(instr.op_register(1)), size)
    if instr.encoding != EncodingKind.EVEX or instr.op_mask == Register.NONE:
        return None
    k = instr.op_mask - Register.K0
    if instr.mnemonic in _OPMASK_MOVES:
        return Mask("k", k, MemorySizeInfo(instr.memory_size).element_size or 1)
    if instr.mnemonic in _EXPANDS or instr.mnemonic in _COMPRESSES:
        return Mask("k", k, MemorySizeInfo(instr.memory_size).element_size, "prefix")
    if instr.mnemonic in _SCALARS:
        return Mask("k", k, MemorySizeExt.size(instr.memory_size))
    if instr.mnemonic in _REPEATS and instr.op_count and instr.op_kind(0) == OpKind.REGISTER:
        element = MemorySizeInfo(instr.memory_size).element_size
        return Mask("k", k, element, "tiled", RegisterExt.size(instr.op_register(0)) // element)
    info = OpCodeInfo(instr.code)
    if instr.mnemonic in _SUPPRESSING and not (instr.mnemonic in _SHIFTS and not _has_immediate(info)):
        element = (MemorySizeExt.size(info.broadcast_memory_size) if info.can_broadcast
                   else MemorySizeInfo(instr.memory_size).element_size)
        if instr.is_broadcast:
            return Mask("k", k, element, "broadcast", MemorySizeExt.size(info.memory_size) // element)
        return Mask("k", k, element)
    return None


def _has_immediate(info) -> bool:
    return any(info.op_kind(i) == OpCodeOperandKind.IMM8 for i in range(info.op_count))


def pieces(mask: Mask, cpu, start: int, size: int) -> list[tuple[int, int]]:
    """``(address, size)`` of the masked-on elements of the operand at start..+size, adjacent
    elements joined."""
    if mask.mode == "broadcast":
        return [(start, size)] if mask.bits(cpu, mask.count) else []
    count = size // mask.element
    bits = mask.bits(cpu, count)
    if mask.mode == "prefix":
        used = bin(bits).count("1") * mask.element
        return [(start, used)] if used else []
    if mask.mode == "tiled":        # element i of the destination is memory element i mod count
        wide = mask.bits(cpu, mask.count)
        bits = sum(1 << j for j in range(count) if any(wide >> i & 1 for i in range(j, mask.count, count)))
    out: list[tuple[int, int]] = []
    for i in range(count):
        if bits >> i & 1:
            at = start + i * mask.element
            if out and out[-1][0] + out[-1][1] == at:
                out[-1] = (out[-1][0], out[-1][1] + mask.element)
            else:
                out.append((at, mask.element))
    return out
