"""The register-file model: registers, parts, equations, origins and the solved file.

A register file is a set of registers, some marked as aliases, and a system of
equations ``define(x, parts)`` saying that ``x`` is the concatenation of
``parts``, most significant first (BAP Core Theory's ``Theory.Alias``).  Every
register not marked as an alias is a basis register.  Solving the system
expresses every register as an MSB-first tuple of :class:`Slice` of basis
registers; after that every lookup is a dictionary access.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Iterable, Mapping, MutableMapping, NamedTuple, Sequence, Union

from regmap.errors import AliasError

__all__ = [
    "Register", "Reg", "Bit", "Unk", "UNK", "Part", "Def", "define",
    "Slice", "Sub", "Sup", "Set", "Origin", "RegisterFile", "format_slices",
]


class Register(NamedTuple):
    """A declared register: canonical (lower-case) name, width in bits, alias mark."""
    name: str
    width: int
    is_alias: bool = False


@dataclass(frozen=True, slots=True)
class Reg:
    """``reg x``: the whole of register ``x`` as a part."""
    name: str
    location: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Bit:
    """``bit f``: a 1-bit register ``f`` as a part."""
    name: str
    location: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Unk:
    """``unk``: an unnamed part; its bits are not constrained by the equation.

    Without a ``width`` it is as wide as the equation's other parts (which must then
    share one width); ``Unk(width=96)`` is a gap of 96 bits in any equation."""
    location: str | None = field(default=None, compare=False, repr=False)
    width: int | None = None


UNK = Unk()
Part = Union[Reg, Bit, Unk]


class Def(NamedTuple):
    """The equation ``name = parts[0] . parts[1] . ...`` (most significant part first)."""
    name: str
    parts: tuple
    location: str | None = None
    name_location: str | None = None


def define(x: str, parts: Iterable[Part], location: str | None = None) -> Def:
    """``def x parts``: ``x`` is the concatenation of ``parts``, most significant first."""
    return Def(x, tuple(parts), location)


class Slice(NamedTuple):
    """Bits ``hi..lo`` (inclusive) of basis register ``basis``.

    ``basis is None`` marks a hole (bits only ever covered by ``unk``); ``hi``
    and ``lo`` then count bits of the register whose slices these are.
    """
    basis: str | None
    hi: int
    lo: int

    @property
    def width(self) -> int:
        return self.hi - self.lo + 1


@dataclass(frozen=True)
class Sub:
    """The register is bits ``hi..lo`` of the basis register ``reg``."""
    reg: str
    hi: int
    lo: int
    base_width: int | None = field(default=None, compare=False, repr=False)

    @property
    def is_alias(self) -> bool:
        """True when the register is a synonym of the whole base register."""
        return self.lo == 0 and self.base_width is not None and self.hi == self.base_width - 1


def _names(args) -> tuple:
    if len(args) == 1 and not isinstance(args[0], str):
        return tuple(args[0])
    return tuple(args)


@dataclass(frozen=True, init=False)
class Sup:
    """The register is the concatenation of whole basis registers, MSB first.

    ``Sup(("r25", "r24"))`` and ``Sup("r25", "r24")`` are the same origin."""
    regs: tuple

    def __init__(self, *regs):
        object.__setattr__(self, "regs", _names(regs))


@dataclass(frozen=True, init=False)
class Set:
    """The register is the concatenation of 1-bit basis registers (flags), MSB first.

    ``Set(("n", "z"))`` and ``Set("n", "z")`` are the same origin."""
    bits: tuple

    def __init__(self, *bits):
        object.__setattr__(self, "bits", _names(bits))


Origin = Union[Sub, Sup, Set, tuple]


def format_slices(slices: Sequence[Slice], widths: Mapping[str, int]) -> str:
    """``rcx[31:0] . rax[63:32]``; a whole basis register prints as its name, a hole as ``unk[hi:lo]``."""
    out = []
    for basis, hi, lo in slices:
        if basis is None:
            out.append(f"unk[{hi}:{lo}]" if hi != lo else f"unk[{hi}]")
        elif lo == 0 and hi == widths[basis] - 1:
            out.append(basis)
        elif hi == lo:
            out.append(f"{basis}[{hi}]")
        else:
            out.append(f"{basis}[{hi}:{lo}]")
    return " . ".join(out)


class RegisterFile:
    """A solved register file.  Build one with :meth:`build`, :func:`regmap.alias.parse` or
    :func:`regmap.alias.load`.

    Every name argument is case-insensitive; unknown names raise :class:`AliasError`.
    """

    __slots__ = ("registers", "basis", "equations", "layouts", "_slices", "_steps", "_los",
                 "_origins", "_names", "_locations")

    def __init__(self, registers, equations, slices, locations=None, layouts=()):
        self.registers: dict[str, Register] = registers
        self.equations: tuple[Def, ...] = tuple(equations)
        self.layouts: tuple[str, ...] = tuple(layouts)    # registers that `layout` statements made
        self.basis: tuple[str, ...] = tuple(n for n, r in registers.items() if not r.is_alias)
        self._locations = dict(locations or {})
        self._slices: dict[str, tuple[Slice, ...]] = slices
        self._steps: dict[str, tuple] = {}
        self._los: dict[str, list[int]] = {}
        self._origins: dict[str, Origin | None] = {}
        for name, sl in slices.items():
            steps = []
            los = []
            pos = registers[name].width
            for basis, hi, lo in sl:
                w = hi - lo + 1
                pos -= w
                los.append(-pos)
                if basis is not None:
                    steps.append((basis, lo, (1 << w) - 1, pos))
            self._steps[name] = tuple(steps)
            self._los[name] = los
            self._origins[name] = self._origin(name, sl)
        names: dict[tuple, str] = {}
        for name in self.basis:
            names[self._slices[name][0]] = name
        for name, sl in slices.items():
            if len(sl) == 1 and sl[0].basis is not None:
                names.setdefault(sl[0], name)
        self._names = names

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def build(cls, registers: Iterable, equations: Iterable = (), *,
              locations: Mapping[str, str] | None = None,
              layouts: Iterable[str] = ()) -> "RegisterFile":
        """Solve a register file given programmatically.

        ``registers`` are :class:`Register` (or ``(name, width, is_alias)`` tuples),
        ``equations`` are :class:`Def` or ``(name, parts)`` pairs.  ``locations`` maps
        register names to the ``file:line:col`` of their declaration, for messages.
        ``layouts`` names the registers that are page layouts (see :mod:`regmap.layout`).
        """
        from regmap.alias.solver import solve
        regs: dict[str, Register] = {}
        for r in registers:
            name, width, *rest = r
            is_alias = bool(rest[0]) if rest else False
            if not isinstance(name, str) or not name:
                raise AliasError(f"register name must be a non-empty string, not {name!r}")
            key = name.lower()
            loc = (locations or {}).get(key)
            if key in regs:
                raise AliasError(f"register {key} is declared twice", loc)
            if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
                raise AliasError(f"register {key} must have a positive width, not {width!r}", loc)
            regs[key] = Register(key, width, is_alias)
        eqs = []
        for eq in equations:
            if not isinstance(eq, Def):
                name, parts = eq
                eq = Def(name, tuple(parts))
            eqs.append(eq)
        defs, slices = solve(regs, eqs, locations or {})
        return cls(regs, defs, slices, locations, layouts)

    # -- lookups ------------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        if name in self._slices:
            return name
        key = name.lower() if isinstance(name, str) else name
        if key not in self._slices:
            raise AliasError(f"unknown register {name!r}")
        return key

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name.lower() in self._slices

    def __len__(self) -> int:
        return len(self.registers)

    def __iter__(self):
        return iter(self.registers)

    def __repr__(self) -> str:
        return f"<RegisterFile: {len(self.registers)} registers, {len(self.basis)} basis>"

    def canonical(self, name: str) -> str:
        """The canonical (lower-case) name of a register."""
        return self._key(name)

    def width(self, name: str) -> int:
        return self.registers[self._key(name)].width

    def is_basis(self, name: str) -> bool:
        return not self.registers[self._key(name)].is_alias

    def location(self, name: str) -> str | None:
        """Where the register was declared (``file:line:col``), if known."""
        return self._locations.get(self._key(name))

    def slices(self, name: str) -> tuple[Slice, ...]:
        """The MSB-first slices of basis registers that register ``name`` is."""
        return self._slices[self._key(name)]

    def unalias(self, name: str) -> Origin | None:
        """``None`` for a basis register; else a :class:`Sub`, :class:`Sup` or :class:`Set`.

        Any other shape (a hole, or parts of several basis registers that are not all
        whole) is returned as the tuple of its slices, as :meth:`slices` gives it.
        """
        return self._origins[self._key(name)]

    def sub_slices(self, name: str, hi: int, lo: int) -> tuple[Slice, ...]:
        """The MSB-first slices that bits ``hi..lo`` (inclusive) of register ``name`` are."""
        key = self._key(name)
        width = self.registers[key].width
        if not (0 <= lo <= hi < width):
            raise AliasError(f"bits {hi}..{lo} are not within {key} ({width} bits)")
        sl = self._slices[key]
        neg_los = self._los[key]          # -(position of each slice's lowest bit), ascending
        i = bisect_left(neg_los, -hi)
        out = []
        while i < len(sl):
            basis, shi, slo = sl[i]
            rlo = -neg_los[i]
            if rlo + (shi - slo) < lo:
                break
            a = max(rlo, lo)
            b = min(rlo + shi - slo, hi)
            out.append(Slice(basis, slo + (b - rlo), slo + (a - rlo)))
            i += 1
        return tuple(out)

    def name_of(self, basis: str, hi: int, lo: int) -> str | None:
        """The register that is exactly bits ``hi..lo`` of ``basis``: the basis register
        itself if it fits, else the first declared.  ``None`` when no register is."""
        key = basis.lower() if isinstance(basis, str) else basis
        return self._names.get((key, hi, lo))

    def describe(self, name: str) -> str:
        """``ah`` -> ``rax[15:8]``; ``w`` -> ``r25 . r24``."""
        return format_slices(self.slices(name), {n: r.width for n, r in self.registers.items()})

    # -- values -------------------------------------------------------------------------------

    def read(self, name: str, values: Mapping[str, int]) -> int:
        """The value of register ``name`` given basis values (missing ones read as 0)."""
        steps = self._steps.get(name)
        if steps is None:
            steps = self._steps[self._key(name)]
        v = 0
        get = values.get
        for basis, shift, mask, pos in steps:
            v |= ((get(basis, 0) >> shift) & mask) << pos
        return v

    def write(self, name: str, value: int, values: MutableMapping[str, int]) -> None:
        """Splice ``value`` into the basis values as register ``name``; other bits are kept.

        Bits of a hole are dropped.  If the register holds the same basis bits twice, the
        less significant occurrence wins.
        """
        steps = self._steps.get(name)
        if steps is None:
            steps = self._steps[self._key(name)]
        for basis, shift, mask, pos in steps:
            old = values.get(basis, 0)
            values[basis] = (old & ~(mask << shift)) | (((value >> pos) & mask) << shift)

    # -- origins ------------------------------------------------------------------------------

    def _origin(self, name: str, sl: tuple[Slice, ...]) -> Origin | None:
        if not self.registers[name].is_alias:
            return None
        bases = [s.basis for s in sl]
        if None in bases:
            return sl
        named = [b for b in bases if b is not None]     # all of them: no hole
        if len(sl) == 1:
            return Sub(named[0], sl[0].hi, sl[0].lo, self.registers[named[0]].width)
        widths = [self.registers[b].width for b in named]
        if all(s.lo == 0 and s.hi == w - 1 for s, w in zip(sl, widths)):
            regs = tuple(named)
            return Set(regs) if all(w == 1 for w in widths) else Sup(regs)
        return sl
