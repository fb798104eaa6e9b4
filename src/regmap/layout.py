"""Page-0 layouts: which register bytes each window address is.

A layout is a register file (see `regmap.alias`) with one extra alias, the
*window*, whose parts are the placed registers: the register of the file's
last ``layout NAME : BYTES { ... }`` statement, or else an alias named
``page`` defined by hand.  Window byte ``a`` is bits ``8a+7 .. 8a`` of the
window: resolving an access is `sub_slices` of it.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

from regmap import alias
from regmap.errors import AliasError, LayoutError

WINDOW_NAME = "page"
LAYOUT_DIR = Path(__file__).with_name("layouts")


class Placement(NamedTuple):
    address: int
    size: int
    name: str


class Layout:
    """A solved layout: `resolve` maps a window range to basis-register slices."""

    def __init__(self, registers: alias.RegisterFile, name: str):
        window = registers.layouts[-1] if registers.layouts else WINDOW_NAME
        if window not in registers.registers:
            raise AliasError(f"layout {name!r} has no layout statement and defines no alias "
                             f"{WINDOW_NAME!r} (the window)")
        bits = registers.width(window)
        if bits % 8:
            raise AliasError(f"layout {name!r}: the window {window!r} is {bits} bits, not whole bytes")
        self.registers = registers
        self.window = window
        self.name = window if registers.layouts else name
        self.size = bits // 8
        self._resolve = functools.lru_cache(maxsize=4096)(self._resolve_uncached)

    def __repr__(self) -> str:
        return f"<Layout {self.name} ({self.size} bytes)>"

    def contains(self, address: int, size: int) -> bool:
        """Whether the whole span lies in the window (holes included)."""
        return 0 <= address and address + size <= self.size

    def resolve(self, address: int, size: int) -> tuple[alias.Slice, ...]:
        """The basis slices, most significant first, that bytes address..address+size-1 are."""
        return self._resolve(address, size)

    def _resolve_uncached(self, address: int, size: int) -> tuple[alias.Slice, ...]:
        if size <= 0 or not self.contains(address, size):
            raise LayoutError(f"{address:#x}+{size} is outside the {self.size}-byte window")
        slices = self.registers.sub_slices(self.window, 8 * (address + size) - 1, 8 * address)
        for piece in slices:
            if piece.basis is None:
                hole = piece.lo // 8
                raise LayoutError(f"{address:#x}+{size}: byte {hole:#x} of the window is a hole "
                                  f"(layout {self.name!r} places no register there)")
        return slices

    def read(self, address: int, size: int, values) -> int:
        """The little-endian value of window bytes address..address+size-1 over basis `values`."""
        result = 0
        for basis, hi, lo in self.resolve(address, size):
            width = hi - lo + 1
            result = (result << width) | ((values.get(basis, 0) >> lo) & ((1 << width) - 1))
        return result

    def write(self, address: int, size: int, value: int, values) -> None:
        """Store `value` into window bytes address..address+size-1, splicing into basis `values`."""
        for basis, hi, lo in reversed(self.resolve(address, size)):
            width = hi - lo + 1
            mask = ((1 << width) - 1) << lo
            values[basis] = (values.get(basis, 0) & ~mask) | ((value << lo) & mask)
            value >>= width

    def image(self, values) -> bytes:
        """The whole window as bytes (holes read as zero)."""
        page = bytearray(self.size)
        for place in self.placements():
            page[place.address:place.address + place.size] = \
                self.read(place.address, place.size, values).to_bytes(place.size, "little")
        return bytes(page)

    def describe(self, address: int, size: int) -> str:
        """A readable name for an access: ``ch``, or ``rcx[31:0] . rax[63:32]``."""
        return describe_slices(self.registers, self.resolve(address, size))

    @functools.cached_property
    def _placements(self) -> tuple[Placement, ...]:
        placed, position = [], self.size * 8
        for basis, hi, lo in self.registers.slices(self.window):
            position -= hi - lo + 1
            if basis is not None:
                name = describe_slices(self.registers, [(basis, hi, lo)])
                placed.append(Placement(position // 8, (hi - lo + 1) // 8, name))
        return tuple(sorted(placed))

    def placements(self) -> list[Placement]:
        """The registers placed in the window, by address (contiguous basis bits are one row)."""
        return list(self._placements)


def describe_slices(registers: alias.RegisterFile, slices) -> str:
    names = []
    for basis, hi, lo in slices:
        name = registers.name_of(basis, hi, lo)
        names.append(name if name is not None else f"{basis}[{hi}:{lo}]")
    return " . ".join(names)


@functools.lru_cache(maxsize=None)
def load_layout(name_or_path: str | None = None) -> Layout:
    """A shipped layout by name (``default``) or a user's layout file by path."""
    name = name_or_path or "default"
    shipped = LAYOUT_DIR / f"{name}.regs"
    if "/" not in name and not name.endswith(".regs") and shipped.exists():
        return Layout(alias.load(str(shipped)), name)
    path = Path(name)
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in LAYOUT_DIR.glob("*.regs")))
        raise LayoutError(f"no layout {name!r}: not a shipped layout ({known}) nor an existing file")
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise LayoutError(f"{name}: not a layout ({kind})")
    return Layout(alias.load(str(path)), path.stem)
