"""Property tests: random register files against an independent bit-level model.

The generator starts from random basis registers, whose bits are the symbols
``(basis, i)``, and grows aliases from them: splitting a register into equal
parts (some of them ``unk``), concatenating whole registers (``Sup``, with
``unk`` parts leaving holes), synonyms given in either direction, and redundant
re-definitions of a register by other registers that hold the same bits.  The
model keeps, for every register, the list of its bit symbols (LSB first); a hole
bit is a fresh symbol ``(None, k)``.  Equations and declarations are shuffled
before solving.
"""
from hypothesis import HealthCheck, given, settings, strategies as st

import pytest

from regmap.alias import AliasError, Bit, Reg, Register, RegisterFile, Set, Slice, Sub, Sup, UNK

WIDTHS = [1, 1, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 80]


class Model:
    def __init__(self):
        self.registers = []      # Register, in creation order
        self.bits = {}           # name -> list of symbols, LSB first
        self.equations = []      # (name, parts)
        self.holes = 0

    def add(self, name, bits, is_alias):
        self.registers.append(Register(name, len(bits), is_alias))
        self.bits[name] = list(bits)

    def hole(self, n):
        out = [(None, self.holes + i) for i in range(n)]
        self.holes += n
        return out


def _part(draw, name, model):
    if model.bits and len(model.bits[name]) == 1 and draw(st.booleans()):
        return Bit(name)
    return Reg(name)


@st.composite
def register_files(draw, max_steps=12):
    m = Model()
    for i in range(draw(st.integers(1, 4))):
        w = draw(st.sampled_from(WIDTHS))
        m.add(f"b{i}", [(f"b{i}", j) for j in range(w)], False)
    count = 0
    for _ in range(draw(st.integers(0, max_steps))):
        kind = draw(st.sampled_from(["split", "split", "sup", "synonym", "redefine"]))
        names = list(m.bits)
        if kind == "split":
            # def src [p(k-1); ...; p0] with new aliases (or unk) as parts
            src = draw(st.sampled_from(names))
            w = len(m.bits[src])
            k = draw(st.sampled_from([d for d in range(1, min(w, 8) + 1) if w % d == 0]))
            n = w // k
            parts = []
            for p in range(k - 1, -1, -1):
                if draw(st.integers(0, 3)) == 0:
                    parts.append(UNK)
                    continue
                name = f"a{count}"
                count += 1
                m.add(name, m.bits[src][p * n:(p + 1) * n], True)
                parts.append(_part(draw, name, m))
            m.equations.append((src, parts))
        elif kind == "sup":
            # def new [q(k-1); ...; q0] over existing registers of one width
            n = len(m.bits[draw(st.sampled_from(names))])
            same = [x for x in names if len(m.bits[x]) == n]
            k = draw(st.integers(1, 4))
            parts, bits = [], []
            for _ in range(k):
                if draw(st.integers(0, 4)) == 0:
                    parts.append(UNK)
                    bits = m.hole(n) + bits
                else:
                    x = draw(st.sampled_from(same))
                    parts.append(_part(draw, x, m))
                    bits = m.bits[x] + bits
            name = f"a{count}"
            count += 1
            m.add(name, bits, True)
            m.equations.append((name, parts))
        elif kind == "synonym":
            src = draw(st.sampled_from(names))
            name = f"a{count}"
            count += 1
            m.add(name, m.bits[src], True)
            if draw(st.booleans()):
                m.equations.append((name, [Reg(src)]))
            else:
                m.equations.append((src, [Reg(name)]))     # the inverse direction
        else:
            # a redundant def of src by registers that hold the same bits
            src = draw(st.sampled_from(names))
            w = len(m.bits[src])
            k = draw(st.sampled_from([d for d in range(1, min(w, 8) + 1) if w % d == 0]))
            n = w // k
            parts = []
            for p in range(k - 1, -1, -1):
                want = m.bits[src][p * n:(p + 1) * n]
                same = [x for x in names if m.bits[x] == want]
                parts.append(_part(draw, draw(st.sampled_from(same)), m) if same else UNK)
            m.equations.append((src, parts))
    regs = draw(st.permutations(m.registers))
    eqs = draw(st.permutations(m.equations))
    return m, regs, eqs


def expected_slices(bits):
    """MSB-first slices of a list of LSB-first bit symbols, merged like the solver does."""
    out = []
    for pos in range(len(bits) - 1, -1, -1):
        basis, i = bits[pos]
        cell = (basis, i, i) if basis is not None else (None, pos, pos)
        if out and out[-1][0] == cell[0] and out[-1][2] == cell[1] + 1:
            out[-1] = Slice(cell[0], out[-1][1], cell[2])
        else:
            out.append(Slice(*cell))
    return tuple(out)


def model_read(bits, values):
    v = 0
    for pos, (basis, i) in enumerate(bits):
        if basis is not None:
            v |= ((values.get(basis, 0) >> i) & 1) << pos
    return v


def model_write(bits, value, values):
    for pos in range(len(bits) - 1, -1, -1):      # MSB first: the lowest occurrence wins
        basis, i = bits[pos]
        if basis is not None:
            old = values.get(basis, 0)
            values[basis] = (old & ~(1 << i)) | (((value >> pos) & 1) << i)


def expected_origin(m, name, slices):
    widths = {r.name: r.width for r in m.registers}
    basis = {r.name for r in m.registers if not r.is_alias}
    if name in basis:
        return None
    if any(s.basis is None for s in slices):
        return slices
    if len(slices) == 1:
        return Sub(*slices[0])
    if all(s.lo == 0 and s.hi == widths[s.basis] - 1 for s in slices):
        regs = tuple(s.basis for s in slices)
        return Set(regs) if all(widths[r] == 1 for r in regs) else Sup(regs)
    return slices


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(register_files())
def test_slices_and_origins_match_the_bit_model(case):
    m, regs, eqs = case
    rf = RegisterFile.build(regs, eqs)
    assert list(rf.registers) == [r.name for r in regs]
    assert rf.basis == tuple(r.name for r in regs if not r.is_alias)
    for r in regs:
        sl = rf.slices(r.name)
        assert sl == expected_slices(m.bits[r.name]), r.name
        assert rf.unalias(r.name) == expected_origin(m, r.name, sl)
        assert rf.width(r.name) == r.width


@SETTINGS
@given(register_files(), st.data())
def test_read_write_match_the_bit_model(case, data):
    m, regs, eqs = case
    rf = RegisterFile.build(regs, eqs)
    basis = [r for r in regs if not r.is_alias]
    values = {r.name: data.draw(st.integers(0, (1 << r.width) - 1)) for r in basis
              if data.draw(st.booleans())}      # some basis registers missing: they read as 0
    for r in regs:
        bits = m.bits[r.name]
        assert rf.read(r.name, values) == model_read(bits, values), r.name
        value = data.draw(st.integers(0, (1 << r.width) - 1))
        got, want = dict(values), dict(values)
        rf.write(r.name, value, got)
        model_write(bits, value, want)
        assert got == want, r.name
        symbols = [b for b in bits if b[0] is not None]
        if len(set(symbols)) == len(symbols):
            # no basis bit twice: the written value reads back (holes read as 0)
            mask = sum(1 << p for p, b in enumerate(bits) if b[0] is not None)
            assert rf.read(r.name, got) == value & mask
        values = got


@SETTINGS
@given(register_files(), st.data())
def test_sub_slices_match_the_bit_model(case, data):
    m, regs, eqs = case
    rf = RegisterFile.build(regs, eqs)
    for r in regs:
        lo = data.draw(st.integers(0, r.width - 1))
        hi = data.draw(st.integers(lo, r.width - 1))
        got = rf.sub_slices(r.name, hi, lo)
        # a sub-range of a hole keeps the positions of the register itself
        want = expected_slices(m.bits[r.name][lo:hi + 1])
        want = tuple(Slice(None, s.hi + lo, s.lo + lo) if s.basis is None else s for s in want)
        assert got == want, (r.name, hi, lo)


@SETTINGS
@given(register_files())
def test_name_of_inverts_slices(case):
    m, regs, eqs = case
    rf = RegisterFile.build(regs, eqs)
    order = [r.name for r in regs]
    for r in regs:
        sl = rf.slices(r.name)
        if len(sl) != 1 or sl[0].basis is None:
            continue
        name = rf.name_of(*sl[0])
        assert name is not None and rf.slices(name) == sl
        same = [x for x in order if rf.slices(x) == sl]
        if sl[0].basis in same:
            assert name == sl[0].basis
        else:
            assert name == same[0]


@SETTINGS
@given(register_files(), st.data())
def test_contradicting_equation_raises(case, data):
    m, regs, eqs = case
    # pick two registers of one width that hold different basis bits at some position
    pairs = [(a.name, b.name) for a in regs for b in regs
             if a.width == b.width and a.name != b.name
             and any(x[0] is not None and y[0] is not None and x != y
                     for x, y in zip(m.bits[a.name], m.bits[b.name]))]
    if not pairs:
        return
    a, b = data.draw(st.sampled_from(pairs))
    with pytest.raises(AliasError, match="conflicts with other equations"):
        RegisterFile.build(regs, list(eqs) + [(a, [Reg(b)])])


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 8), st.data())
def test_unresolved_aliases_are_listed(n, data):
    regs = [Register("base", 8)] + [Register(f"x{i}", 8, True) for i in range(n)]
    linked = data.draw(st.sets(st.integers(0, n - 1)))
    eqs = [(f"x{i}", [Reg("base")]) for i in sorted(linked)]
    if len(linked) == n:
        rf = RegisterFile.build(regs, eqs)
        assert all(rf.unalias(f"x{i}") == Sub("base", 7, 0) for i in range(n))
        return
    with pytest.raises(AliasError) as e:
        RegisterFile.build(regs, eqs)
    missing = [f"x{i}" for i in range(n) if i not in linked]
    assert f"cannot resolve {', '.join(missing)}:" in str(e.value)
