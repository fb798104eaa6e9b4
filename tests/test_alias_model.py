"""The register-file model and solver, built programmatically."""
import pytest

from regmap.alias import (
    UNK, AliasError, Bit, Reg, Register, RegisterFile, Set, Slice, Sub, Sup, Unk, define,
)


def regs(spec):
    """``"rax:64 eax:32a"`` -> Register list (a trailing ``a`` marks an alias)."""
    out = []
    for item in spec.split():
        name, width = item.split(":")
        alias = width.endswith("a")
        out.append(Register(name, int(width.rstrip("a")), alias))
    return out


def bap_x86():
    # BAP's documented example: def rax [unk; reg eax]; def eax [unk; reg ax]; def ax [reg ah; reg al]
    return RegisterFile.build(
        regs("rax:64 eax:32a ax:16a ah:8a al:8a"),
        [define("rax", [UNK, Reg("eax")]),
         define("eax", [Unk(), Reg("ax")]),
         define("ax", [Reg("ah"), Reg("al")])])


def bap_avr():
    # BAP's documented example: def r25r24 [reg r25; reg r24]; def w [reg r25r24]; def w [reg whi; reg wlo]
    return RegisterFile.build(
        regs("r25:8 r24:8 r25r24:16a w:16a whi:8a wlo:8a"),
        [("r25r24", [Reg("r25"), Reg("r24")]),
         ("w", [Reg("r25r24")]),
         ("w", [Reg("whi"), Reg("wlo")])])


def test_bap_x86_example():
    rf = bap_x86()
    assert rf.unalias("ah") == Sub("rax", 15, 8)
    assert not rf.unalias("ah").is_alias
    assert rf.unalias("al") == Sub("rax", 7, 0)
    assert rf.unalias("ax") == Sub("rax", 15, 0)
    assert rf.unalias("eax") == Sub("rax", 31, 0)
    assert rf.unalias("rax") is None
    assert rf.basis == ("rax",)
    assert rf.is_basis("rax") and not rf.is_basis("eax")
    assert rf.slices("rax") == (Slice("rax", 63, 0),)
    assert rf.slices("ah") == (Slice("rax", 15, 8),)


def test_bap_avr_example():
    rf = bap_avr()
    assert rf.unalias("r25r24") == Sup(("r25", "r24"))
    assert rf.unalias("w") == Sup(("r25", "r24")) == Sup("r25", "r24")
    assert rf.unalias("w").regs == ("r25", "r24")
    assert rf.unalias("whi") == Sub("r25", 7, 0)
    assert rf.unalias("whi").is_alias
    assert rf.unalias("wlo") == Sub("r24", 7, 0)
    assert rf.unalias("wlo").is_alias
    assert rf.slices("w") == (Slice("r25", 7, 0), Slice("r24", 7, 0))


def test_equations_in_any_order_and_inverse_direction():
    # ah/al are only known through ax, which is only known through eax, given last
    rf = RegisterFile.build(
        regs("ah:8a al:8a ax:16a eax:32a rax:64"),
        [("ax", [Reg("ah"), Reg("al")]),
         ("eax", [UNK, Reg("ax")]),
         ("rax", [UNK, Reg("eax")])])
    assert rf.unalias("ah") == Sub("rax", 15, 8)
    # a basis register defined as a concatenation determines its parts
    rf = RegisterFile.build(regs("rax:64 hi:32a lo:32a"), [("rax", [Reg("hi"), Reg("lo")])])
    assert rf.slices("hi") == (Slice("rax", 63, 32),)
    assert rf.slices("lo") == (Slice("rax", 31, 0),)


def test_same_register_on_both_sides_several_times():
    rf = RegisterFile.build(
        regs("a:8 b:8 ab:16a x:16a xh:8a xl:8a y:16a"),
        [("x", [Reg("xh"), Reg("xl")]),
         ("y", [Reg("x")]),
         ("ab", [Reg("y")]),
         ("ab", [Reg("a"), Reg("b")])])
    assert rf.unalias("xh") == Sub("a", 7, 0)
    assert rf.unalias("x") == Sup(("a", "b"))


def test_alias_spanning_two_basis_registers():
    rf = RegisterFile.build(
        regs("hi:16 lo:16 both:32a mid:16a q0:8a q1:8a q2:8a q3:8a"),
        [("both", [Reg("hi"), Reg("lo")]),
         ("both", [Reg("q3"), Reg("q2"), Reg("q1"), Reg("q0")]),
         ("mid", [Reg("q2"), Reg("q1")])])
    assert rf.slices("mid") == (Slice("hi", 7, 0), Slice("lo", 15, 8))
    assert rf.unalias("mid") == rf.slices("mid")
    assert rf.sub_slices("mid", 11, 4) == (Slice("hi", 3, 0), Slice("lo", 15, 12))
    values = {"hi": 0x1234, "lo": 0x5678}
    assert rf.read("mid", values) == 0x3456
    rf.write("mid", 0xABCD, values)
    assert values == {"hi": 0x12AB, "lo": 0xCD78}


def test_flags_set():
    flags = "i t h s v n z c".split()
    rf = RegisterFile.build(
        [Register(f + "f", 1) for f in flags] + [Register("sreg", 8, True)],
        [("sreg", [Bit(f + "f") for f in flags])])
    assert rf.unalias("sreg") == Set(tuple(f + "f" for f in flags)) == Set(*(f + "f" for f in flags))
    assert rf.unalias("sreg").bits[0] == "if"
    values = {}
    rf.write("sreg", 0b1000_0011, values)
    assert values["if"] == 1 and values["zf"] == 1 and values["cf"] == 1
    assert values["tf"] == 0 and values["nf"] == 0
    values["nf"] = 1
    assert rf.read("sreg", values) == 0b1000_0111
    assert rf.name_of("zf", 0, 0) == "zf"


def test_flags_inside_a_register():
    rf = RegisterFile.build(
        regs("flags:16 cf:1a zf:1a iopl:2a iopl1:1a iopl0:1a"),
        [("flags", [UNK] * 9 + [Bit("zf")] + [UNK] * 5 + [Bit("cf")]),
         ("flags", [UNK, Reg("iopl"), UNK, UNK, UNK, UNK, UNK, UNK]),
         ("iopl", [Bit("iopl1"), Bit("iopl0")])])
    assert rf.unalias("cf") == Sub("flags", 0, 0)
    assert rf.unalias("zf") == Sub("flags", 6, 6)
    assert rf.unalias("iopl") == Sub("flags", 13, 12)
    assert rf.unalias("iopl1") == Sub("flags", 13, 13)
    values = {"flags": 0xFFFF}
    rf.write("iopl", 1, values)
    assert values["flags"] == 0xDFFF
    rf.write("cf", 0, values)
    assert values["flags"] == 0xDFFE
    assert rf.read("zf", values) == 1
    assert rf.read("iopl1", values) == 0


def test_sup_read_write():
    rf = bap_avr()
    values = {"r25": 0x12, "r24": 0x34}
    assert rf.read("w", values) == 0x1234
    rf.write("w", 0xBEEF, values)
    assert values == {"r25": 0xBE, "r24": 0xEF}
    rf.write("wlo", 0x01, values)
    assert values == {"r25": 0xBE, "r24": 0x01}
    assert rf.read("r25r24", values) == 0xBE01
    # missing basis registers read as 0; write creates them
    values = {}
    assert rf.read("w", values) == 0
    rf.write("whi", 0x1FF, values)   # wider than the register: truncated
    assert values == {"r25": 0xFF}


def test_read_write_preserve_other_bits():
    rf = bap_x86()
    values = {"rax": 0x1122334455667788}
    assert rf.read("ah", values) == 0x77
    assert rf.read("EAX", values) == 0x55667788
    rf.write("ah", 0xAB, values)
    assert values["rax"] == 0x112233445566AB88
    rf.write("eax", 0xFFFFFFFF, values)
    assert values["rax"] == 0x11223344FFFFFFFF
    rf.write("rax", -1, values)
    assert values["rax"] == (1 << 64) - 1


def test_name_of():
    rf = bap_x86()
    assert rf.name_of("rax", 15, 8) == "ah"
    assert rf.name_of("rax", 63, 0) == "rax"
    assert rf.name_of("RAX", 31, 0) == "eax"
    assert rf.name_of("rax", 23, 16) is None
    # with two names for one slice, the first declared wins; the basis beats both
    rf = RegisterFile.build(regs("x29:64 fp:64a other:64a"), [("fp", [Reg("x29")]), ("other", [Reg("fp")])])
    assert rf.name_of("x29", 63, 0) == "x29"
    rf = RegisterFile.build(regs("r:16 a:8a b:8a"), [("r", [UNK, Reg("b")]), ("r", [UNK, Reg("a")])])
    assert rf.name_of("r", 7, 0) == "a"


def test_sub_slices():
    rf = bap_avr()
    assert rf.sub_slices("w", 15, 0) == rf.slices("w")
    assert rf.sub_slices("w", 11, 4) == (Slice("r25", 3, 0), Slice("r24", 7, 4))
    assert rf.sub_slices("w", 7, 0) == (Slice("r24", 7, 0),)
    assert rf.sub_slices("w", 8, 8) == (Slice("r25", 0, 0),)
    for bad in [(16, 0), (3, 4), (0, -1)]:
        with pytest.raises(AliasError, match="not within w"):
            rf.sub_slices("w", *bad)


def test_holes_from_unk():
    rf = RegisterFile.build(
        regs("rax:64 rcx:64 page:256a slot:128a"),
        [("page", [UNK, Reg("slot")]),
         ("slot", [Reg("rcx"), Reg("rax")])])
    assert rf.slices("page") == (Slice(None, 255, 128), Slice("rcx", 63, 0), Slice("rax", 63, 0))
    assert rf.unalias("page") == rf.slices("page")
    assert rf.sub_slices("page", 200, 120) == (Slice(None, 200, 128), Slice("rcx", 63, 56))
    values = {"rax": 1, "rcx": 2}
    assert rf.read("page", values) == (2 << 64) | 1
    rf.write("page", (5 << 200) | (3 << 64) | 4, values)
    assert values == {"rax": 4, "rcx": 3}
    # holes are inherited through aliases of an alias with a hole
    rf = RegisterFile.build(
        regs("rax:64 half:128a page:256a"),
        [("half", [UNK, Reg("rax")]), ("page", [Reg("half"), Reg("half")])])
    assert rf.slices("page") == (Slice(None, 255, 192), Slice("rax", 63, 0),
                                 Slice(None, 127, 64), Slice("rax", 63, 0))


def test_case_insensitive_and_unknown_names():
    rf = RegisterFile.build([Register("RAX", 64), Register("Eax", 32, True)],
                            [("rax", [UNK, Reg("EAX")])])
    assert list(rf.registers) == ["rax", "eax"]
    assert rf.width("EAX") == 32
    assert rf.registers["eax"] == Register("eax", 32, True)
    assert "Rax" in rf and "rbx" not in rf
    for call in (lambda: rf.slices("rbx"), lambda: rf.width("rbx"), lambda: rf.unalias("rbx"),
                 lambda: rf.read("rbx", {}), lambda: rf.write("rbx", 0, {}),
                 lambda: rf.is_basis("rbx"), lambda: rf.sub_slices("rbx", 0, 0)):
        with pytest.raises(AliasError, match="unknown register 'rbx'"):
            call()


# -- errors ------------------------------------------------------------------------------------

def test_width_mismatch():
    with pytest.raises(AliasError, match=r"def eax: eax is 32 bits but its 2 parts of 8 bits make 16 bits"):
        RegisterFile.build(regs("eax:32 ah:8a al:8a"), [("eax", [Reg("ah"), Reg("al")])])
    with pytest.raises(AliasError, match=r"def x: its parts have different widths "
                                         r"\(reg a \(8 bits\), reg b \(16 bits\)\), so each unk"):
        RegisterFile.build(regs("x:32 a:8a b:16a"), [("x", [Reg("a"), UNK, Reg("b")])])
    with pytest.raises(AliasError, match=r"def x: x is 32 bits but its 2 parts make 24 bits"):
        RegisterFile.build(regs("x:32 a:8a b:16a"), [("x", [Reg("a"), Reg("b")])])
    with pytest.raises(AliasError, match=r"an unk part must have a positive width"):
        RegisterFile.build(regs("x:8"), [("x", [Unk(width=0), Unk(width=8)])])
    with pytest.raises(AliasError, match=r"bit a is 8 bits wide"):
        RegisterFile.build(regs("x:8 a:8a"), [("x", [Bit("a")])])


def test_empty_parts():
    with pytest.raises(AliasError, match="def x has no parts"):
        RegisterFile.build(regs("x:8"), [("x", [])])


def test_undeclared():
    with pytest.raises(AliasError, match="def x uses undeclared register y"):
        RegisterFile.build(regs("x:8"), [("x", [Reg("y")])])
    with pytest.raises(AliasError, match="def of undeclared register z"):
        RegisterFile.build(regs("x:8"), [("z", [Reg("x")])])


def test_redeclaration():
    with pytest.raises(AliasError, match="register rax is declared twice"):
        RegisterFile.build([Register("rax", 64), Register("RAX", 32)])
    with pytest.raises(AliasError, match="positive width"):
        RegisterFile.build([Register("rax", 0)])


def test_unsolvable_lists_registers():
    with pytest.raises(AliasError, match=r"cannot resolve eax, ah: no equation relates their bits") as e:
        RegisterFile.build(regs("eax:32a ax:16 ah:8a al:8a"),
                           [("ax", [UNK, Reg("al")])],
                           locations={"eax": "f.regs:1:7", "ah": "f.regs:2:7"})
    assert e.value.location == "f.regs:1:7"
    assert str(e.value).startswith("f.regs:1:7: cannot resolve")
    # every register an alias: nothing is basis, nothing resolves
    with pytest.raises(AliasError, match=r"cannot resolve a, b"):
        RegisterFile.build(regs("a:8a b:8a"), [("a", [Reg("b")])])


def test_conflicting_equations():
    with pytest.raises(AliasError, match=r"def lo conflicts with other equations: bits lo\[7:0\] "
                                         r"would be both a\[7:0\] and b\[7:0\]") as e:
        RegisterFile.build(regs("a:8 b:8 lo:8a"),
                           [("lo", [Reg("a")]), define("lo", [Reg("b")], "f:3:1")])
    assert e.value.location == "f:3:1"
    # the same basis bits twice in one basis register
    with pytest.raises(AliasError, match="conflicts"):
        RegisterFile.build(regs("r:16 h:8a"), [("r", [Reg("h"), Reg("h")])])
    # two basis registers equated
    with pytest.raises(AliasError, match="conflicts"):
        RegisterFile.build(regs("a:8 b:8"), [("a", [Reg("b")])])


def test_same_bits_twice_in_an_alias():
    rf = RegisterFile.build(regs("b:8 twice:16a"), [("twice", [Reg("b"), Reg("b")])])
    assert rf.slices("twice") == (Slice("b", 7, 0), Slice("b", 7, 0))
    assert rf.unalias("twice") == Sup(("b", "b"))
    values = {}
    rf.write("twice", 0x1234, values)
    assert values == {"b": 0x34}      # the less significant occurrence is written last
    assert rf.read("twice", values) == 0x3434


def test_all_unk_def_and_self_reference():
    rf = RegisterFile.build(regs("r:8 x:8a"), [("x", [Reg("r")]), ("x", [UNK, UNK]), ("x", [Reg("x")])])
    assert rf.unalias("x") == Sub("r", 7, 0)


def test_wide_window_with_many_parts():
    # a page-0 style window: 4096 bytes, every other byte of it a byte of some basis register
    basis = [Register(f"q{i}", 64) for i in range(256)]
    bytes_ = [Register(f"q{i}b{j}", 8, True) for i in range(256) for j in range(8)]
    eqs = [(f"q{i}", [Reg(f"q{i}b{j}") for j in range(7, -1, -1)]) for i in range(256)]
    parts = []
    for i in range(255, -1, -1):
        for j in range(7, -1, -1):
            parts += [UNK, Reg(f"q{i}b{j}")]
    rf = RegisterFile.build(basis + bytes_ + [Register("page", 32768, True)],
                            eqs + [("page", parts)])
    sl = rf.slices("page")
    assert len(sl) == 4096
    assert sl[-2:] == (Slice(None, 15, 8), Slice("q0", 7, 0))
    assert rf.sub_slices("page", 8 * 17 + 7, 8 * 16) == (Slice(None, 143, 136), Slice("q1", 7, 0))
    assert rf.sub_slices("page", 8 * 15 + 3, 8 * 14 + 4) == (Slice(None, 123, 120), Slice("q0", 63, 60))
    assert rf.name_of("q5", 15, 8) == "q5b1"
    values = {}
    rf.write("page", int.from_bytes(bytes(range(256)) * 16, "little"), values)
    assert values["q0"] == int.from_bytes(bytes(range(0, 16, 2)), "little")


def test_parts_of_different_widths_concatenate():
    # x = a . gap . b: b is bits 15..0, a 12-bit gap, then a at bits 35..28
    rf = RegisterFile.build(regs("a:8 b:16 x:36a y:12a"),
                            [("x", [Reg("a"), Unk(width=12), Reg("b")]),
                             ("y", [Unk(width=4), Reg("a")])])
    assert rf.slices("x") == (Slice("a", 7, 0), Slice(None, 27, 16), Slice("b", 15, 0))
    assert rf.sub_slices("x", 31, 12) == (Slice("a", 3, 0), Slice(None, 27, 16), Slice("b", 15, 12))
    values = {}
    rf.write("x", (0xAB << 28) | 0xFFF0000 | 0x1234, values)
    assert values == {"a": 0xAB, "b": 0x1234}
    assert rf.slices("y") == (Slice(None, 11, 8), Slice("a", 7, 0))
