"""Solving a system of aliasing equations down to basis registers.

Each equation ``x = p[k-1] . ... . p[0]`` says that bits ``o[i] .. o[i+1]-1`` of
``x`` are the bits of part ``p[i]``, where ``o[i]`` is the sum of the widths of
the parts below it.  The solution is the
closure of these equalities (what BAP's fixpoint of reduce / invert / substitute
reaches): two register bits are the same bit when a chain of equations links
them, and a bit is known when its class holds a bit of a basis register.

Working on single bits would be simple but slow for wide registers, so the
solver first cuts every register into *cells*: the cut points of each equation
(its part boundaries) are propagated through every equation until nothing
changes, after which linked ranges always start and end on cell boundaries and
a union-find over cells gives the classes.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Mapping, Sequence

from regmap.errors import AliasError
from regmap.alias.model import Bit, Def, Part, Reg, Register, Slice, Unk

__all__ = ["solve"]


def _part_desc(part, regs) -> str:
    if isinstance(part, Unk):
        return "unk" if part.width is None else f"unk ({part.width} bits)"
    kind = "bit" if isinstance(part, Bit) else "reg"
    return f"{kind} {part.name} ({regs[part.name].width} bits)"


def _check(regs: Mapping[str, Register], equations: Sequence[Def]):
    """Validate the equations; return them normalised (lower-case names, tuple parts)."""
    out = []
    for eq in equations:
        loc = eq.location
        if not isinstance(eq.name, str):
            raise AliasError(f"a def needs a register name, not {eq.name!r}", loc)
        x = eq.name.lower()
        if x not in regs:
            raise AliasError(f"def of undeclared register {x}", eq.name_location or loc)
        parts = tuple(eq.parts)
        if not parts:
            raise AliasError(f"def {x} has no parts; a def needs at least one part", loc)
        norm: list[Part] = []
        for p in parts:
            if isinstance(p, Unk):
                norm.append(p)
                continue
            if not isinstance(p, (Reg, Bit)):
                raise AliasError(f"def {x}: {p!r} is not a part (reg, bit or unk)", loc)
            name = p.name.lower()
            if name not in regs:
                raise AliasError(f"def {x} uses undeclared register {name}", p.location or loc)
            if isinstance(p, Bit) and regs[name].width != 1:
                raise AliasError(f"def {x}: bit {name} is {regs[name].width} bits wide; "
                                 f"a bit part must be 1 bit", p.location or loc)
            norm.append(type(p)(name, p.location))
        _part_widths(x, norm, regs, loc)
        out.append(Def(x, tuple(norm), loc, eq.name_location))
    return out


def _part_widths(x: str, parts: Sequence, regs: Mapping[str, Register],
                 loc: str | None) -> list[int]:
    """The width of each part of ``def x parts``; they must add up to ``x``'s width.

    A register part is as wide as its register and ``Unk(width=w)`` is ``w`` bits.  A
    bare ``unk`` is as wide as the other parts when they share one width (BAP's form,
    where every part has one width); with no sized part at all the parts split ``x``
    evenly.
    """
    width = regs[x].width
    sizes = [_part_width(p, regs) for p in parts]
    if any(w is not None and w <= 0 for w in sizes):
        raise AliasError(f"def {x}: an unk part must have a positive width", loc)
    known = {w for w in sizes if w is not None}
    if len(known) > 1 and None in sizes:
        listed = ", ".join(_part_desc(p, regs) for p, w in zip(parts, sizes) if w is not None)
        raise AliasError(f"def {x}: its parts have different widths ({listed}), "
                         f"so each unk part needs a width of its own", loc)
    bare = known.pop() if len(known) == 1 else max(width // len(parts), 1)
    widths = [bare if w is None else w for w in sizes]
    if sum(widths) != width:
        k = len(parts)
        made = (f"{k} part{'s' if k != 1 else ''} of {widths[0]} bits" if len(set(widths)) == 1
                else f"{k} parts")
        raise AliasError(f"def {x}: {x} is {width} bits but its {made} make {sum(widths)} bits", loc)
    return widths


def _part_width(part: Part, regs: Mapping[str, Register]) -> int | None:
    """A part's width in bits; None for an ``unk`` that takes the width of the others."""
    return part.width if isinstance(part, Unk) else regs[part.name].width


def solve(regs: Mapping[str, Register], equations: Sequence[Def],
          locations: Mapping[str, str] | None = None):
    """Solve ``equations`` over ``regs``; return ``(equations, slices)`` where ``slices``
    maps each register name (declaration order) to its MSB-first tuple of :class:`Slice`."""
    locations = locations or {}
    eqs = _check(regs, equations)
    names = list(regs)
    index = {n: i for i, n in enumerate(names)}
    widths = [regs[n].width for n in names]
    nregs = len(names)

    # Equations as (x, part offsets, parts LSB first as register indices, -1 for unk).
    system = []
    # per register: the equations it is the left side of; the (x, lo) where it is a part of x
    lhs: list[list[int]] = [[] for _ in range(nregs)]
    occ: list[list[tuple[int, int]]] = [[] for _ in range(nregs)]
    for e, eq in enumerate(eqs):
        x = index[eq.name]
        parts = [(-1 if isinstance(p, Unk) else index[p.name]) for p in reversed(eq.parts)]
        offsets = [0]                   # bit position of each part, LSB first, then the width
        for w in reversed(_part_widths(eq.name, eq.parts, regs, eq.location)):
            offsets.append(offsets[-1] + w)
        system.append((x, offsets, parts))
        lhs[x].append(e)
        for j, p in enumerate(parts):
            if p >= 0:
                occ[p].append((x, offsets[j]))

    # 1. Cut points, propagated to a fixpoint.
    cuts = [{0, w} for w in widths]
    work = []

    def add(r, p):
        c = cuts[r]
        if p not in c:
            c.add(p)
            work.append((r, p))

    for x, offsets, parts in system:
        for offset in offsets[1:-1]:
            add(x, offset)
    while work:
        r, p = work.pop()
        for e in lhs[r]:
            _, offsets, parts = system[e]
            j = bisect_right(offsets, p) - 1
            off = p - offsets[j]
            if off and parts[j] >= 0:
                add(parts[j], off)
        for x, lo in occ[r]:
            add(x, lo + p)

    # 2. Cells and a union-find over them.
    base = []
    starts = []        # per register: sorted cell start positions
    start_index = []   # per register: start position -> cell number
    total = 0
    for r in range(nregs):
        s = sorted(cuts[r])
        s.pop()        # the width itself is not a start
        base.append(total)
        starts.append(s)
        start_index.append({p: t for t, p in enumerate(s)})
        total += len(s)
    cell_reg = [0] * total
    for r in range(nregs):
        for t in range(len(starts[r])):
            cell_reg[base[r] + t] = r

    parent = list(range(total))
    size = [1] * total
    owner = [-1] * total          # per root: the basis cell of its class, or -1
    hole = [False] * total        # per root: some member is covered by unk in its own def
    for r in range(nregs):
        if not regs[names[r]].is_alias:
            for t in range(len(starts[r])):
                owner[base[r] + t] = base[r] + t

    def find(a):
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def describe_cell(c):
        r = cell_reg[c]
        t = c - base[r]
        lo = starts[r][t]
        hi = (starts[r][t + 1] if t + 1 < len(starts[r]) else widths[r]) - 1
        return f"{names[r]}[{hi}:{lo}]" if hi != lo else f"{names[r]}[{lo}]"

    for e, (x, offsets, parts) in enumerate(system):
        xs = start_index[x]
        for j, part in enumerate(parts):
            first = base[x] + xs[offsets[j]]
            if part < 0:
                last = base[x] + xs.get(offsets[j + 1], len(starts[x]))
                for c in range(first, last):
                    hole[c] = True
                continue
            pb = base[part]
            for t in range(len(starts[part])):
                a = find(first + t)
                b = find(pb + t)
                if a == b:
                    continue
                oa, ob = owner[a], owner[b]
                if oa >= 0 and ob >= 0:
                    eq = eqs[e]
                    raise AliasError(
                        f"def {eq.name} conflicts with other equations: bits "
                        f"{describe_cell(first + t)} would be both {describe_cell(oa)} "
                        f"and {describe_cell(ob)}", eq.location)
                if size[a] < size[b]:
                    a, b = b, a
                parent[b] = a
                size[a] += size[b]
                owner[a] = oa if oa >= 0 else ob
    for c in range(total):
        if hole[c]:
            hole[find(c)] = True

    # 3. Slices of every register, MSB first, contiguous runs merged.
    result: dict[str, tuple[Slice, ...]] = {}
    unresolved = []
    for r in range(nregs):
        s = starts[r]
        out: list[Slice] = []
        bad = False
        for t in range(len(s) - 1, -1, -1):
            lo = s[t]
            hi = (s[t + 1] if t + 1 < len(s) else widths[r]) - 1
            root = find(base[r] + t)
            o = owner[root]
            if o >= 0:
                br = cell_reg[o]
                blo = starts[br][o - base[br]]
                sl = (names[br], blo + hi - lo, blo)
            elif hole[root]:
                sl = (None, hi, lo)
            else:
                bad = True
                break
            if out and out[-1][0] == sl[0] and out[-1][2] == sl[1] + 1:
                out[-1] = Slice(sl[0], out[-1][1], sl[2])
            else:
                out.append(Slice(*sl))
        if bad:
            unresolved.append(names[r])
        else:
            result[names[r]] = tuple(out)
    if unresolved:
        shown = ", ".join(unresolved[:20]) + (f" and {len(unresolved) - 20} more"
                                              if len(unresolved) > 20 else "")
        loc = locations.get(unresolved[0])
        raise AliasError(f"cannot resolve {shown}: no equation relates "
                         f"{'its' if len(unresolved) == 1 else 'their'} bits to basis "
                         f"registers (mark basis registers with reg, not alias)", loc)
    return eqs, result
