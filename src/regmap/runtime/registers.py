"""`regmap.registers`: typed handles on the window for native code.

Every register (or alias) that occupies whole bytes of the window gets a
handle: ``registers.RDI.address == 0x38``, ``.size == 8``, ``.ctype`` (an
unsigned integer type of that size, or a byte array for wider registers) and
``.pointer`` (a ctypes pointer of that type at the address) to pass to, or
build, native code.  Names are case-insensitive: ``registers.rdi``,
``registers["RDI"]``.  The handles follow the layout that is mapped (the
default layout while nothing is).

Dereferencing a handle's pointer from Python reads or writes the *calling
thread's* register as the CPU sees it inside ctypes' copy routine, which is
rarely what Python code means; the handles are for native code.
"""
from __future__ import annotations

import ctypes
from typing import Iterator

_INT_TYPES = {1: ctypes.c_uint8, 2: ctypes.c_uint16, 4: ctypes.c_uint32, 8: ctypes.c_uint64}


class RegisterHandle:
    """One register's place in the window."""

    __slots__ = ("name", "address", "size", "ctype")

    def __init__(self, name: str, address: int, size: int):
        self.name, self.address, self.size = name, address, size
        self.ctype = _INT_TYPES.get(size) or ctypes.c_uint8 * size

    @property
    def pointer(self):
        """A ctypes ``POINTER(ctype)`` at the register's window address."""
        return ctypes.cast(ctypes.c_void_p(self.address), ctypes.POINTER(self.ctype))

    @property
    def end(self) -> int:
        return self.address + self.size

    def __int__(self) -> int:
        return self.address

    __index__ = __int__

    def __eq__(self, other) -> bool:
        return isinstance(other, RegisterHandle) and \
            (self.name, self.address, self.size) == (other.name, other.address, other.size)

    def __hash__(self) -> int:
        return hash((self.name, self.address, self.size))

    def __repr__(self) -> str:
        return f"<register {self.name} at {self.address:#x}, {self.size} bytes>"


def handles_for(layout) -> dict[str, RegisterHandle]:
    """Every name of the layout's register file that is whole, contiguous bytes of the window."""
    registers = layout.registers
    where: dict[str, list[tuple[int, int, int]]] = {}   # basis -> [(lo bit, hi bit, address)]
    for place in layout.placements():
        address = place.address + place.size
        for basis, hi, lo in layout.resolve(place.address, place.size):
            address -= (hi - lo + 1) // 8
            where.setdefault(basis, []).append((lo, hi, address))
    found: dict[str, RegisterHandle] = {}
    for name in registers.registers:
        if name == layout.window:
            continue
        slices = registers.slices(name)
        if len(slices) != 1 or slices[0].basis is None:
            continue
        basis, hi, lo = slices[0]
        if (hi - lo + 1) % 8:
            continue
        for start, end, address in where.get(basis, ()):
            if start <= lo and hi <= end and (lo - start) % 8 == 0:
                found[name] = RegisterHandle(name, address + (lo - start) // 8, (hi - lo + 1) // 8)
                break
    return found


class Registers:
    """The handles of the mapped layout (or the default one), by name, attribute, or iteration."""

    def __init__(self):
        self._layout = None
        self._handles: dict[str, RegisterHandle] | None = None

    def _current(self) -> dict[str, RegisterHandle]:
        from regmap.runtime import current_layout
        layout = current_layout()
        if self._handles is None or layout is not self._layout:
            self._handles = handles_for(layout)
            self._layout = layout
        return self._handles

    @property
    def layout(self):
        self._current()
        return self._layout

    def __getitem__(self, name: str) -> RegisterHandle:
        try:
            return self._current()[name.lower()]
        except KeyError:
            raise KeyError(f"{name!r} is not placed in layout {self.layout.name!r}") from None

    def __getattr__(self, name: str) -> RegisterHandle:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{name!r} is not placed in layout {self.layout.name!r}") from None

    def __contains__(self, name: str) -> bool:
        return isinstance(name, str) and name.lower() in self._current()

    def __iter__(self) -> Iterator[RegisterHandle]:
        return iter(sorted(self._current().values(), key=lambda h: (h.address, -h.size, h.name)))

    def __len__(self) -> int:
        return len(self._current())

    def names(self) -> list[str]:
        return [handle.name for handle in self]

    def at(self, address: int) -> list[RegisterHandle]:
        """The handles that cover window byte `address`, widest first."""
        return [h for h in self if h.address <= address < h.end]

    def __dir__(self):
        return sorted(set(super().__dir__()) | {name.upper() for name in self._current()})

    def __repr__(self) -> str:
        return f"<regmap registers: {len(self)} names in layout {self.layout.name!r}>"


registers = Registers()
