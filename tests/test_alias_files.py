"""The shipped register files."""
import pytest

from regmap.alias import SHIPPED, AliasError, Set, Slice, Sub, Sup, load

X86 = ("i8086", "i386", "amd64")

AMD64_BASIS = (
    [f"r{n}" for n in "ax bx cx dx si di bp sp".split()] + [f"r{i}" for i in range(8, 16)]
    + ["rip", "rflags"] + [f"zmm{i}" for i in range(32)] + [f"k{i}" for i in range(8)]
    + ["mxcsr", "fs_base", "gs_base", "cs", "ds", "es", "fs", "gs", "ss"]
    + [f"st{i}" for i in range(8)] + ["fcw", "fsw", "ftw", "fop", "fip", "fdp"])


@pytest.mark.parametrize("target", SHIPPED)
def test_every_register_resolves_without_holes(target):
    rf = load(target)
    assert rf.registers
    for name, reg in rf.registers.items():
        assert name == name.lower()
        sl = rf.slices(name)
        assert sl, name
        assert sum(s.hi - s.lo + 1 for s in sl) == reg.width, name
        for basis, hi, lo in sl:
            assert basis is not None, f"{name} has a hole"
            assert rf.is_basis(basis)
            assert 0 <= lo <= hi < rf.width(basis)
        # consecutive slices are merged when contiguous in the same basis register
        for a, b in zip(sl, sl[1:]):
            assert not (a.basis == b.basis and a.lo == b.hi + 1), name
        assert rf.sub_slices(name, reg.width - 1, 0) == sl
        if reg.is_alias:
            assert rf.unalias(name) is not None
        else:
            assert rf.unalias(name) is None
            assert sl == (Slice(name, reg.width - 1, 0),)
            assert rf.name_of(name, reg.width - 1, 0) == name


@pytest.mark.parametrize("target", SHIPPED)
def test_load_is_cached_and_case_insensitive(target):
    assert load(target) is load(target.upper())


def test_amd64_basis_is_what_the_emulator_uses():
    rf = load("amd64")
    assert sorted(rf.basis) == sorted(AMD64_BASIS)


GPRS = [("rax", "eax", "ax", "al"), ("rbx", "ebx", "bx", "bl"), ("rcx", "ecx", "cx", "cl"),
        ("rdx", "edx", "dx", "dl"), ("rsi", "esi", "si", "sil"), ("rdi", "edi", "di", "dil"),
        ("rbp", "ebp", "bp", "bpl"), ("rsp", "esp", "sp", "spl")] + [
    (f"r{i}", f"r{i}d", f"r{i}w", f"r{i}b") for i in range(8, 16)]


@pytest.mark.parametrize("q, d, w, b", GPRS)
def test_amd64_general_registers(q, d, w, b):
    rf = load("amd64")
    assert rf.width(q) == 64 and rf.is_basis(q)
    assert rf.unalias(d) == Sub(q, 31, 0)
    assert rf.unalias(w) == Sub(q, 15, 0)
    assert rf.unalias(b) == Sub(q, 7, 0)
    assert rf.name_of(q, 31, 0) == d
    assert rf.name_of(q, 15, 0) == w
    assert rf.name_of(q, 7, 0) == b


def test_amd64_high_bytes_and_pointers():
    rf = load("amd64")
    for r in "abcd":
        assert rf.unalias(f"{r}h") == Sub(f"r{r}x", 15, 8)
        assert rf.name_of(f"r{r}x", 15, 8) == f"{r}h"
    assert rf.unalias("eip") == Sub("rip", 31, 0)
    assert rf.unalias("ip") == Sub("rip", 15, 0)
    for seg in ("cs", "ds", "es", "fs", "gs", "ss"):
        assert rf.width(seg) == 16 and rf.is_basis(seg)
    assert rf.width("fs_base") == rf.width("gs_base") == 64


# SDM Vol. 1, 3.4.3: EFLAGS bit positions
FLAG_BITS = {"cf": 0, "pf": 2, "af": 4, "zf": 6, "sf": 7, "tf": 8, "if": 9, "df": 10, "of": 11,
             "nt": 14, "rf": 16, "vm": 17, "ac": 18, "vif": 19, "vip": 20, "id": 21}


def test_amd64_flags():
    rf = load("amd64")
    assert rf.unalias("eflags") == Sub("rflags", 31, 0)
    assert rf.unalias("flags") == Sub("rflags", 15, 0)
    assert rf.name_of("rflags", 31, 0) == "eflags"
    for flag, bit in FLAG_BITS.items():
        assert rf.width(flag) == 1
        assert rf.unalias(flag) == Sub("rflags", bit, bit), flag
        assert rf.name_of("rflags", bit, bit) == flag
    assert rf.width("iopl") == 2
    assert rf.unalias("iopl") == Sub("rflags", 13, 12)
    values = {"rflags": 0x202}
    rf.write("cf", 1, values)
    rf.write("iopl", 3, values)
    rf.write("of", 1, values)
    assert values["rflags"] == 0x202 | 1 | (3 << 12) | (1 << 11)
    assert rf.read("eflags", {"rflags": (1 << 63) | 0x8ff}) == 0x8ff
    assert rf.read("zf", {"rflags": 0x40}) == 1


def test_i386_and_i8086_are_their_own_basis():
    i386 = load("i386")
    assert i386.is_basis("eax") and not i386.is_basis("ax")
    assert i386.unalias("ah") == Sub("eax", 15, 8)
    assert i386.unalias("cf") == Sub("eflags", 0, 0)
    assert i386.unalias("id") == Sub("eflags", 21, 21)
    i8086 = load("i8086")
    assert i8086.is_basis("ax") and i8086.unalias("al") == Sub("ax", 7, 0)
    assert i8086.unalias("of") == Sub("flags", 11, 11)
    assert sorted(i8086.basis) == sorted("ax bx cx dx si di bp sp ip flags cs ds es ss".split())
    assert "eax" not in i8086


def test_amd64_vectors():
    rf = load("amd64")
    for i in range(32):
        assert rf.width(f"zmm{i}") == 512
        assert rf.unalias(f"ymm{i}") == Sub(f"zmm{i}", 255, 0)
        assert rf.unalias(f"xmm{i}") == Sub(f"zmm{i}", 127, 0)
    for i in range(8):
        assert rf.width(f"k{i}") == 64 and rf.is_basis(f"k{i}")
        assert rf.width(f"st{i}") == 80 and rf.is_basis(f"st{i}")
        # mm_i is physical register i, st_i is ST(i): the same register only when TOP = 0, so no
        # static alias claims they are
        assert f"mm{i}" not in rf.registers
    assert rf.width("mxcsr") == 32
    assert rf.unalias("top") == Sub("fsw", 13, 11) and rf.width("ftw") == 8
    values = {}
    rf.write("ymm3", (1 << 256) - 1, values)
    rf.write("xmm3", 0, values)
    assert values["zmm3"] == ((1 << 256) - 1) ^ ((1 << 128) - 1)


def test_amd64_read_write_round_trip_every_alias():
    rf = load("amd64")
    for name, reg in rf.registers.items():
        values = {b: (0x5A5A5A5A5A5A5A5A << (rf.width(b) % 7)) & ((1 << rf.width(b)) - 1)
                  for b in rf.basis}
        before = dict(values)
        v = ((1 << reg.width) - 1) & 0xDEADBEEFCAFEF00D1234567890ABCDEF
        rf.write(name, v, values)
        assert rf.read(name, values) == v, name
        touched = {s.basis for s in rf.slices(name)}
        for b in rf.basis:
            if b not in touched:
                assert values[b] == before[b]
        rf.write(name, rf.read(name, before), values)
        assert values == before, name


def test_unknown_register_in_shipped_file():
    with pytest.raises(AliasError, match="unknown register 'eaxx'"):
        load("amd64").slices("eaxx")


def test_aarch64():
    rf = load("aarch64")
    for i in range(31):
        assert rf.is_basis(f"x{i}") and rf.width(f"x{i}") == 64
        assert rf.unalias(f"w{i}") == Sub(f"x{i}", 31, 0)
    # fp and lr are second names for x29 and x30; the basis name wins in name_of
    assert rf.unalias("fp") == Sub("x29", 63, 0) and rf.unalias("fp").is_alias
    assert rf.unalias("lr") == Sub("x30", 63, 0) and rf.unalias("lr").is_alias
    assert rf.name_of("x29", 63, 0) == "x29"
    assert rf.read("fp", {"x29": 0x1234}) == 0x1234
    assert rf.unalias("wsp") == Sub("sp", 31, 0)
    assert rf.is_basis("xzr") and rf.unalias("wzr") == Sub("xzr", 31, 0)
    assert rf.is_basis("pc")
    for i in range(32):
        assert rf.width(f"v{i}") == 128
        assert rf.unalias(f"q{i}") == Sub(f"v{i}", 127, 0) and rf.unalias(f"q{i}").is_alias
        assert rf.unalias(f"d{i}") == Sub(f"v{i}", 63, 0)
        assert rf.unalias(f"s{i}") == Sub(f"v{i}", 31, 0)
        assert rf.unalias(f"h{i}") == Sub(f"v{i}", 15, 0)
        assert rf.unalias(f"b{i}") == Sub(f"v{i}", 7, 0)
        assert rf.name_of(f"v{i}", 127, 0) == f"v{i}"
        assert rf.name_of(f"v{i}", 63, 0) == f"d{i}"
    assert rf.unalias("nzcv") == Set(("n", "z", "c", "v"))
    values = {}
    rf.write("nzcv", 0b0110, values)
    assert values == {"n": 0, "z": 1, "c": 1, "v": 0}


def test_avr():
    rf = load("avr")
    assert rf.basis[:32] == tuple(f"r{i}" for i in range(32))
    for ptr, hi, lo in (("x", 27, 26), ("y", 29, 28), ("z", 31, 30)):
        assert rf.unalias(ptr) == Sup((f"r{hi}", f"r{lo}"))
        assert rf.unalias(f"{ptr}h") == Sub(f"r{hi}", 7, 0) and rf.unalias(f"{ptr}h").is_alias
        assert rf.unalias(f"{ptr}l") == Sub(f"r{lo}", 7, 0)
    # BAP's example
    assert rf.unalias("r25r24") == rf.unalias("w") == Sup(("r25", "r24"))
    assert rf.unalias("whi") == Sub("r25", 7, 0) and rf.unalias("whi").is_alias
    assert rf.unalias("wlo") == Sub("r24", 7, 0) and rf.unalias("wlo").is_alias
    # SREG: I is bit 7, C bit 0
    assert rf.unalias("sreg") == Set(("if", "tf", "hf", "sf", "vf", "nf", "zf", "cf"))
    values = {}
    rf.write("sreg", 0x81, values)
    assert values["if"] == 1 and values["cf"] == 1 and values["zf"] == 0
    values["zf"] = 1
    assert rf.read("sreg", values) == 0x83
    assert rf.unalias("sp") == Sup(("sph", "spl"))
    values = {"r30": 0x34, "r31": 0x12}
    assert rf.read("z", values) == 0x1234
    rf.write("x", 0xBEEF, values)
    assert (values["r27"], values["r26"]) == (0xBE, 0xEF)


def test_amd64_solves_from_text_each_time():
    # the shipped file re-parsed and re-solved (not the cached copy) gives the same answers
    from regmap.alias import parse
    rf = parse("include amd64;")
    cached = load("amd64")
    assert rf is not cached
    assert list(rf.registers) == list(cached.registers)
    assert all(rf.slices(n) == cached.slices(n) for n in rf.registers)
