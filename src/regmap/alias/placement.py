"""``layout NAME : BYTES { ADDRESS: REG, REG; ... }``: a memory map, solved as one ``def``.

Each line of a layout places registers one after another from an address; every
byte no line places is a hole.  The statement declares ``NAME`` as an alias of
``8 * BYTES`` bits and defines it, as a ``def`` written by hand would, as the
concatenation of the placed registers and ``unk`` gaps, most significant first:
``layout w : 4 { 0: al; 2: ah; }`` is ``def w [unk:8; reg ah; unk:8; reg al]``
(``unk:8`` being an 8-bit gap, ``Unk(width=8)``).
"""
from __future__ import annotations

from bisect import bisect_left, insort
from typing import NamedTuple, Sequence

from regmap.alias.model import Def, Reg, Unk
from regmap.errors import AliasError

__all__ = ["Placed", "layout_def"]


class Placed(NamedTuple):
    """Register ``name`` at window bytes ``address .. address + size - 1``."""
    name: str
    address: int
    size: int
    location: str | None = None

    def span(self) -> str:
        return f"{self.name} at {self.address:#x}..{self.address + self.size - 1:#x}"


def layout_def(name: str, size: int, placed: Sequence[Placed], location: str | None = None) -> Def:
    """The equation of a ``size``-byte layout ``name`` that places ``placed``.

    The first placement (in the order given) that runs past the end or overlaps an
    earlier one raises :class:`AliasError` at its location.
    """
    _check(name, size, placed)
    by_address = sorted(range(len(placed)), key=lambda i: placed[i].address)
    parts: list = []
    top = size                        # parts are listed from the top of the window down
    for i in reversed(by_address):
        place = placed[i]
        end = place.address + place.size
        if end < top:
            parts.append(Unk(location, width=8 * (top - end)))
        parts.append(Reg(place.name, place.location))
        top = place.address
    if top:
        parts.append(Unk(location, width=8 * top))
    return Def(name, tuple(parts), location)


def _check(name: str, size: int, placed: Sequence[Placed]) -> None:
    """The first placement, in text order, that runs past the end or overlaps an earlier one."""
    taken: list[tuple[int, int]] = []        # (address, index) of the placements so far, sorted
    for i, place in enumerate(placed):
        end = place.address + place.size
        if end > size:
            raise AliasError(f"{place.span()} runs past the end of the {size}-byte layout {name}",
                             place.location)
        at = bisect_left(taken, (place.address, i))
        # earlier placements are disjoint, so only the nearest one on either side can overlap
        for _, j in taken[max(at - 1, 0):at + 1]:
            other = placed[j]
            if other.address < end and place.address < other.address + other.size:
                where = f" (placed at {other.location})" if other.location else ""
                raise AliasError(f"{place.span()} overlaps {other.span()}{where}", place.location)
        insort(taken, (place.address, i))
