"""SSE/AVX data movement with a window operand: `movdqu xmm0, [0]` loads rax:rcx.

A legacy SSE write to an xmm register keeps the bits above 128; a VEX write
clears everything above the operand (the operand decides, see
`regmap.x86.operands`).  The aligned forms raise #GP on a misaligned address,
as the CPU does.
"""
from iced_x86 import MemorySizeInfo, Mnemonic as M

from regmap.errors import GeneralProtection
from regmap.x86.semantics import EVEX_READY, semantics

_UNALIGNED = (M.MOVD, M.MOVQ, M.VMOVD, M.VMOVQ, M.MOVDQU, M.VMOVDQU, M.MOVUPS, M.VMOVUPS,
              M.MOVUPD, M.VMOVUPD, M.LDDQU, M.VLDDQU, M.MOVSS, M.VMOVSS, M.MOVSD, M.VMOVSD)
_ALIGNED = (M.MOVDQA, M.VMOVDQA, M.MOVAPS, M.VMOVAPS, M.MOVAPD, M.VMOVAPD, M.MOVNTDQ, M.VMOVNTDQ,
            M.MOVNTPS, M.VMOVNTPS, M.MOVNTPD, M.VMOVNTPD, M.MOVNTDQA, M.VMOVNTDQA,
            M.VMOVDQA32, M.VMOVDQA64)
# AVX-512 moves by element size, which opmasks select.
_EVEX_UNALIGNED = (M.VMOVDQU8, M.VMOVDQU16, M.VMOVDQU32, M.VMOVDQU64)


EVEX_READY.update(_UNALIGNED, _ALIGNED, _EVEX_UNALIGNED)
# For the compiled fast path: which mnemonics are whole-operand moves, and which check alignment.
MOVES = frozenset((*_UNALIGNED, *_ALIGNED, *_EVEX_UNALIGNED))
ALIGNED = frozenset(_ALIGNED)


@semantics(*_UNALIGNED, *_ALIGNED, *_EVEX_UNALIGNED)
def vector_move(cpu, form):
    dest, source = form.ops
    selector = form.op_mask.read(cpu) if form.op_mask is not None else None
    width = min(dest.width, source.width)
    if selector is not None and not selector & ((1 << width // _element_width(form)) - 1):
        # Every element masked off: no memory access at all, so no alignment check either.
        if not dest.is_memory:  # a scalar load (vmovsd) still clears the bits above its element
            dest.write(cpu, 0 if form.zeroing else dest.read(cpu) & ((1 << width) - 1))
        return
    if form.mnemonic in _ALIGNED:
        memory = dest if dest.is_memory else source
        if memory.address(cpu) % memory.size:
            raise GeneralProtection(f"{form.disassembly}: operand not {memory.size}-byte aligned")
    if selector is None:
        dest.write(cpu, source.read(cpu))
    elif dest.is_memory:
        _store_selected(cpu, form, dest, source.read(cpu), selector, width)
    else:
        value = _load_selected(cpu, form, source, selector, width) if source.is_memory \
            else source.read(cpu)
        dest.write(cpu, _masked(form, selector, value, dest.read(cpu), width))


def _element_width(form) -> int:
    return MemorySizeInfo(form.instruction.memory_size).element_size * 8


def _selected(form, selector: int, width: int):
    """(byte offset, byte size) of each element the opmask selects."""
    size = _element_width(form) // 8
    return ((index * size, size) for index in range(width // (8 * size)) if selector >> index & 1)


# A masked-off element is never accessed: it cannot fault (a hole, an unmapped page), so memory
# is read and written element by element.
def _load_selected(cpu, form, memory, selector: int, width: int) -> int:
    return sum(memory.read_at(cpu, memory.address_beyond(cpu, offset), size) << 8 * offset
               for offset, size in _selected(form, selector, width))


def _store_selected(cpu, form, memory, value: int, selector: int, width: int) -> None:
    for offset, size in _selected(form, selector, width):
        memory.write_at(cpu, memory.address_beyond(cpu, offset), size, value >> 8 * offset)


def _masked(form, selector: int, new: int, old: int, width: int) -> int:
    """AVX-512 masking: elements whose mask bit is clear keep `old` (merging) or become 0 (zeroing)."""
    element = _element_width(form)
    result = 0
    for index in range(width // element):
        shift = index * element
        chosen = new if selector >> index & 1 else (0 if form.zeroing else old)
        result |= (chosen >> shift & ((1 << element) - 1)) << shift
    return result


@semantics(M.MOVLPS, M.MOVLPD, M.MOVHPS, M.MOVHPD)
def half_move(cpu, form):
    """Load or store one 64-bit half of an xmm register; the other half stays."""
    dest, source = form.ops
    high = form.mnemonic in (M.MOVHPS, M.MOVHPD)
    if dest.is_memory:
        dest.write(cpu, source.read(cpu) >> (64 if high else 0))
    else:
        current = dest.read(cpu)
        value = source.read(cpu)
        dest.write(cpu, (current & 0xFFFF_FFFF_FFFF_FFFF) | value << 64 if high
                   else (current & ~0xFFFF_FFFF_FFFF_FFFF) | value)
