"""Which elements a masked memory access touches: gathers, scatters, masked loads and stores.

A masked-off element is not accessed, so it never faults: the SDM says so of VMASKMOV and
VPMASKMOV ("faults will not occur due to referencing any memory location if the corresponding
mask bit for that memory location is 0"), of gathers and scatters (only elements whose mask bit
is set are loaded or stored), and of the AVX-512 masked moves (memory fault suppression, at
element granularity).  In the window that means a masked-off element in a layout hole does not
fault, and one masked on does, whether the instruction stores a changed value there or not.

The mask is per element of the *memory* operand: bit i of an opmask, or the top bit of element
i of a VEX vector mask (element size the memory element's).
"""
from __future__ import annotations

from iced_x86 import EncodingKind, MemorySizeInfo, Mnemonic, Register, RegisterExt

# mask in the vector register operand 1 (load: dest, mask, mem; store: mem, mask, src)
_VECTOR_MASKED = {Mnemonic.VMASKMOVPS, Mnemonic.VMASKMOVPD, Mnemonic.VPMASKMOVD, Mnemonic.VPMASKMOVQ}
# the AVX-512 moves whose memory operand is elementwise under an opmask (SDM exception classes
# E1, E4 moves, E10 scalar moves: fault suppression supported)
_OPMASK_MOVES = {Mnemonic.VMOVAPS, Mnemonic.VMOVAPD, Mnemonic.VMOVUPS, Mnemonic.VMOVUPD,
                 Mnemonic.VMOVDQA32, Mnemonic.VMOVDQA64, Mnemonic.VMOVDQU8, Mnemonic.VMOVDQU16,
                 Mnemonic.VMOVDQU32, Mnemonic.VMOVDQU64, Mnemonic.VMOVSS, Mnemonic.VMOVSD, Mnemonic.VMOVSH}


class Mask:
    """Where a form's mask is: ``("k", n)`` or ``("vector", n)``, and its memory element's size."""

    __slots__ = ("kind", "number", "element")

    def __init__(self, kind: str, number: int, element: int):
        self.kind, self.number, self.element = kind, number, element

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
    if (instr.mnemonic in _OPMASK_MOVES and instr.encoding == EncodingKind.EVEX
            and instr.op_mask != Register.NONE):
        return Mask("k", instr.op_mask - Register.K0, MemorySizeInfo(instr.memory_size).element_size or 1)
    return None


def pieces(mask: Mask, cpu, start: int, size: int) -> list[tuple[int, int]]:
    """``(address, size)`` of the masked-on elements of the operand at start..+size, adjacent
    elements joined."""
    count = size // mask.element
    bits = mask.bits(cpu, count)
    out: list[tuple[int, int]] = []
    for i in range(count):
        if bits >> i & 1:
            at = start + i * mask.element
            if out and out[-1][0] + out[-1][1] == at:
                out[-1] = (out[-1][0], out[-1][1] + mask.element)
            else:
                out.append((at, mask.element))
    return out
