"""Element shuffles, interleaves, inserts and extracts: `pinsrq xmm0, [0x38], 1` puts rdi in xmm0's top.

Legacy SSE forms are ``dest <- f(dest, source)`` and need a 16-byte aligned
128-bit memory operand (#GP otherwise); VEX forms take a separate first
source and clear the destination above the operand.  256-bit forms work on
each 128-bit lane alone, as the SDM specifies.
"""
from iced_x86 import EncodingKind, Mnemonic as M

from regmap.x86.semantics import mask, semantics
from regmap.x86.semantics.packed import destination_and_sources, legacy_alignment


def _elements(value: int, width: int, count: int) -> list[int]:
    return [value >> (i * width) & mask(width) for i in range(count)]


def _join(elements: list[int], width: int) -> int:
    return sum(element << (i * width) for i, element in enumerate(elements))


def _lanes(value: int, total: int) -> list[int]:
    return _elements(value, 128, total // 128)


# shuffle by immediate: mnemonic -> (element width, which elements of a 128-bit lane it permutes)
_SHUFFLES = {M.PSHUFD: (32, range(4)), M.VPSHUFD: (32, range(4)),
             M.PSHUFLW: (16, range(4)), M.VPSHUFLW: (16, range(4)),
             M.PSHUFHW: (16, range(4, 8)), M.VPSHUFHW: (16, range(4, 8))}


@semantics(*_SHUFFLES)
def shuffle(cpu, form):
    """Each selected element takes the element the immediate's 2-bit field names; others stay."""
    dest, source, order = form.ops
    legacy_alignment(cpu, form, source)
    width, selected = _SHUFFLES[form.mnemonic]
    control, lanes = order.read(cpu) & 0xFF, []
    for lane in _lanes(source.read(cpu), dest.width):
        elements = _elements(lane, width, 128 // width)
        picked = list(elements)
        for slot, index in enumerate(selected):
            picked[index] = elements[selected[0] + (control >> (2 * slot) & 3)]
        lanes.append(_join(picked, width))
    dest.write(cpu, _join(lanes, 128))


_UNPACKS = {
    **{m: (w, False) for m, w in ((M.PUNPCKLBW, 8), (M.PUNPCKLWD, 16), (M.PUNPCKLDQ, 32), (M.PUNPCKLQDQ, 64),
                                  (M.VPUNPCKLBW, 8), (M.VPUNPCKLWD, 16), (M.VPUNPCKLDQ, 32),
                                  (M.VPUNPCKLQDQ, 64))},
    **{m: (w, True) for m, w in ((M.PUNPCKHBW, 8), (M.PUNPCKHWD, 16), (M.PUNPCKHDQ, 32), (M.PUNPCKHQDQ, 64),
                                 (M.VPUNPCKHBW, 8), (M.VPUNPCKHWD, 16), (M.VPUNPCKHDQ, 32),
                                 (M.VPUNPCKHQDQ, 64))},
}


@semantics(*_UNPACKS)
def unpack(cpu, form):
    """Interleave the low (or high) halves of two sources, element by element, lane by lane."""
    dest, first, second = destination_and_sources(form)
    legacy_alignment(cpu, form, second)
    width, high = _UNPACKS[form.mnemonic]
    half = 64 // width
    lanes = []
    for a, b in zip(_lanes(first.read(cpu), dest.width), _lanes(second.read(cpu), dest.width)):
        a_elements, b_elements = _elements(a, width, 2 * half), _elements(b, width, 2 * half)
        start = half if high else 0
        woven = [e for pair in zip(a_elements[start:start + half], b_elements[start:start + half]) for e in pair]
        lanes.append(_join(woven, width))
    dest.write(cpu, _join(lanes, 128))


_INSERTS = {M.PINSRB: 8, M.PINSRW: 16, M.PINSRD: 32, M.PINSRQ: 64,
            M.VPINSRB: 8, M.VPINSRW: 16, M.VPINSRD: 32, M.VPINSRQ: 64}


@semantics(*_INSERTS)
def insert(cpu, form):
    """Replace one element of an xmm register with a register's or memory's low bits."""
    if form.instruction.encoding == EncodingKind.LEGACY:
        dest, source, index = form.ops
        base = dest
    else:
        dest, base, source, index = form.ops
    width = _INSERTS[form.mnemonic]
    slot = (index.read(cpu) % (128 // width)) * width
    value = base.read(cpu) & mask(128)
    dest.write(cpu, value & ~(mask(width) << slot) | (source.read(cpu) & mask(width)) << slot)


_EXTRACTS = {M.PEXTRB: 8, M.PEXTRW: 16, M.PEXTRD: 32, M.PEXTRQ: 64,
             M.VPEXTRB: 8, M.VPEXTRW: 16, M.VPEXTRD: 32, M.VPEXTRQ: 64}


@semantics(*_EXTRACTS)
def extract(cpu, form):
    """One element of an xmm register to memory, or zero-extended into a general register."""
    dest, source, index = form.ops
    width = _EXTRACTS[form.mnemonic]
    slot = (index.read(cpu) % (128 // width)) * width
    dest.write(cpu, source.read(cpu) >> slot & mask(width))
