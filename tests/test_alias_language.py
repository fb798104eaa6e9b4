"""The text language: syntax, ranges, includes, and every parse and solve error with its location."""
import textwrap

import pytest

from regmap.alias import AliasError, Set, Slice, Sub, Sup, parse


def src(text):
    return textwrap.dedent(text).lstrip("\n")


def error(text, **kw):
    with pytest.raises(AliasError) as e:
        parse(src(text), **kw)
    return e.value


def test_bap_documented_example_in_text():
    rf = parse(src("""
        reg rax : 64;
        alias eax : 32;
        alias ax : 16;
        alias ah, al : 8;
        def rax [unk; reg eax];
        def eax [unk; reg ax];
        def ax [reg ah; reg al]
    """))
    assert rf.unalias("ah") == Sub("rax", 15, 8)


def test_bap_avr_example_in_text():
    rf = parse(src("""
        reg r25, r24 : 8;
        alias r25r24, w : 16;
        alias whi, wlo : 8;
        def r25r24 [reg r25; reg r24];
        def w [reg r25r24];
        def w [reg whi; reg wlo];
    """))
    assert rf.unalias("w") == Sup(("r25", "r24"))
    assert rf.unalias("r25r24") == Sup(("r25", "r24"))
    assert rf.unalias("whi") == Sub("r25", 7, 0) and rf.unalias("whi").is_alias
    assert rf.unalias("wlo") == Sub("r24", 7, 0) and rf.unalias("wlo").is_alias


def test_comments_case_and_optional_last_semicolon():
    rf = parse("# a file\nREG Rax:64;  # trailing comment\nAlias EAX : 32 ;\nDEF rax [UNK; Reg eax]")
    assert list(rf.registers) == ["rax", "eax"]
    assert rf.slices("EAX") == (Slice("rax", 31, 0),)
    # a trailing ';' inside the brackets is accepted too
    rf = parse("reg a, b : 8; alias ab : 16; def ab [reg a; reg b;];")
    assert rf.unalias("ab") == Sup(("a", "b"))


def test_ranges_in_declarations_and_lockstep_defs():
    rf = parse(src("""
        reg zmm{0..3} : 512;
        alias ymm{0..3} : 256;
        alias xmm{3..0} : 128;
        def zmm{0..3} [unk; reg ymm{0..3}];
        def ymm{3..0} [unk; reg xmm{3..0}];
    """))
    assert list(rf.registers)[:4] == ["zmm0", "zmm1", "zmm2", "zmm3"]
    assert list(rf.registers)[8:] == ["xmm3", "xmm2", "xmm1", "xmm0"]
    for i in range(4):
        assert rf.unalias(f"xmm{i}") == Sub(f"zmm{i}", 127, 0)
    # a range in the middle of a name, several parts in lockstep, unranged parts repeated
    rf = parse(src("""
        reg r{8..9} : 64; reg z : 32;
        alias r{8..9}d, r{8..9}lo : 32;
        def r{8..9} [reg r{8..9}d; reg r{8..9}lo];
        alias odd{0..1} : 64;
        def odd{0..1} [reg z; reg r{8..9}lo];
    """))
    assert rf.unalias("r9d") == Sub("r9", 63, 32)
    assert rf.slices("odd1") == (Slice("z", 31, 0), Slice("r9", 31, 0))


def test_ranged_part_expands_into_consecutive_parts():
    rf = parse("reg r{0..3} : 4; alias x : 16; def x [reg r{3..0}]; alias y : 16; def y [reg r{0..3}]")
    assert rf.unalias("x") == Sup(("r3", "r2", "r1", "r0"))
    assert rf.unalias("y") == Sup(("r0", "r1", "r2", "r3"))
    rf = parse("reg f{0..7} : 1; alias fl : 8; def fl [bit f{7..0}]")
    assert rf.unalias("fl") == Set(tuple(f"f{i}" for i in range(7, -1, -1)))


def test_unk_times_n():
    rf = parse("reg a : 8; alias page : 64; def page [unk * 6; reg a; unk]")
    assert rf.slices("page") == (Slice(None, 63, 16), Slice("a", 7, 0), Slice(None, 7, 0))


def test_alias_without_width_re_marks_a_declared_register():
    rf = parse(src("""
        reg eax : 32; alias ax : 16; def eax [unk; reg ax];
        reg rax : 64;
        alias eax;
        def rax [unk; reg eax];
    """))
    assert rf.basis == ("rax",)
    assert rf.unalias("ax") == Sub("rax", 15, 0)
    assert list(rf.registers) == ["eax", "ax", "rax"]


def test_names_from_earlier_declarations_win_in_name_of():
    rf = parse("reg r : 16; alias first : 8; alias second : 8; def r [unk; reg second]; def r [unk; reg first]")
    assert rf.name_of("r", 7, 0) == "first"


def test_include_relative_and_by_name(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "base.regs").write_text("reg eax : 32; alias ax : 16; def eax [unk; reg ax];\n")
    (tmp_path / "top.regs").write_text(
        'include "sub/base.regs";\nreg rax : 64; alias eax; def rax [unk; reg eax];\n')
    from regmap.alias import load
    rf = load(str(tmp_path / "top.regs"))
    assert rf.unalias("ax") == Sub("rax", 15, 0)
    # by name, found in include_dirs
    rf = parse("include base; alias ah : 8; def ax [reg ah; unk];", include_dirs=[tmp_path / "sub"])
    assert rf.unalias("ah") == Sub("eax", 15, 8)
    # a file included twice (a diamond) is read once
    (tmp_path / "left.regs").write_text('include "sub/base.regs"; alias l : 32; def l [reg eax];')
    (tmp_path / "right.regs").write_text('include "sub/base.regs"; alias r : 32; def r [reg eax];')
    rf = parse('include "left.regs"; include "right.regs";', filename=str(tmp_path / "x.regs"))
    assert rf.unalias("l") == rf.unalias("r") == Sub("eax", 31, 0)
    # shipped files by name
    rf = parse("include amd64; alias lowbyte : 8; def lowbyte [reg al];")
    assert rf.unalias("lowbyte") == Sub("rax", 7, 0)


# -- errors: each with file:line:col and one sentence ------------------------------------------

def test_error_width_mismatch():
    e = error("""
        reg eax : 32;
        alias ah, al : 8;
        def eax [reg ah; reg al];
    """, filename="w.regs")
    assert e.location == "w.regs:3:1"
    assert str(e) == "w.regs:3:1: def eax: eax is 32 bits but its 2 parts of 8 bits make 16 bits"
    e = error("""
        reg x : 32; alias a : 8; alias b : 16;
        def x [reg a; unk; reg b];
    """)
    assert str(e) == ("<string>:2:1: def x: its parts have different widths "
                      "(reg a (8 bits), reg b (16 bits)), so each unk part needs a width of its own")
    e = error("reg x : 8; alias a : 8;\n  def x [bit a]")
    assert e.location == "<string>:2:14"
    assert "bit a is 8 bits wide; a bit part must be 1 bit" in str(e)


def test_error_empty_parts():
    e = error("reg x : 8;\ndef x [];")
    assert str(e) == "<string>:2:1: def x has no parts; a def needs at least one part"


def test_error_undeclared_names():
    e = error("reg x : 8;\ndef x [reg y];")
    assert str(e) == "<string>:2:12: def x uses undeclared register y"
    e = error("reg x : 8;\n def   zz [reg x];")
    assert str(e) == "<string>:2:8: def of undeclared register zz"
    e = error("reg x : 8;\nalias y;")
    assert str(e) == ("<string>:2:7: cannot mark y as an alias: it is not declared "
                      "(give a width to declare it)")


def test_error_redeclaration():
    e = error("reg rax, rcx : 64;\nalias   rcx : 32;")
    assert str(e) == "<string>:2:9: register rcx is already declared at <string>:1:10"
    e = error("reg r{0..3} : 8;\nreg r{3..5} : 8;")
    assert str(e) == "<string>:2:5: register r3 is already declared at <string>:1:5"


def test_error_unsolvable_lists_registers():
    e = error("""
        reg a : 8;
        alias b, c : 8;
        alias d : 16;
        def d [reg a; reg b];
    """, filename="u.regs")
    # d's high half is a, but b (so d's low half) and c are never related to a basis register
    assert str(e) == ("u.regs:2:7: cannot resolve b, c, d: no equation relates their bits to "
                      "basis registers (mark basis registers with reg, not alias)")


def test_error_conflicting_equations():
    e = error("""
        reg a, b : 8;
        alias x : 8;
        def x [reg a];
          def x [reg b];
    """)
    assert str(e) == ("<string>:4:3: def x conflicts with other equations: "
                      "bits x[7:0] would be both a[7:0] and b[7:0]")


def test_error_lockstep_range_mismatch():
    e = error("""
        reg zmm{0..31} : 512;
        alias ymm{0..15} : 256;
        def zmm{0..31} [unk; reg ymm{0..15}];
    """)
    assert str(e) == ("<string>:3:26: range in ymm{0..15} has 16 names but the def's name has "
                      "32; ranges in a def run in lockstep")
    e = error("reg r{0..3}_{0..1} : 8;")
    assert str(e) == ("<string>:1:5: the ranges in r{0..3}_{0..1} have different lengths "
                      "(4 and 2); ranges in one name run in lockstep")


@pytest.mark.parametrize("text, location, message", [
    ("reg rax : 64\nreg rcx : 64;", "2:1", "expected ';' after the reg declaration, found 'reg'"),
    ("reg rax 64;", "1:9", "expected ':' and a width after the names in reg, found '64'"),
    ("reg rax : ;", "1:11", "expected a width in bits (a number), found ';'"),
    ("reg rax : 0;", "1:11", "a width in bits must be positive, not 0"),
    ("reg : 8;", "1:5", "expected a register name, found ':'"),
    ("reg 8bit : 8;", "1:5", "'8bit' is not a register name (a letter or '_', then letters, "
                             "digits or '_')"),
    ("reg a : 8;\nfoo a;", "2:1", "expected a statement (include, reg, alias, def or layout), found 'foo'"),
    ("reg a : 8;\n;", "2:1", "expected a statement (include, reg, alias, def or layout), found ';'"),
    ("reg a : 8;\ndef a [reg a", "2:13", "expected ';' or ']' after a part, found the end of the file"),
    ("reg a : 8;\ndef a reg a];", "2:7", "expected '[' to start the parts of a, found 'reg'"),
    ("reg a : 8;\ndef a [a];", "2:8", "expected a part (reg NAME, bit NAME or unk), found 'a'"),
    ("reg a : 8;\ndef a [unk * x];", "2:14", "expected a count after 'unk *' (a number), found 'x'"),
    ("reg a : 8;\ndef a [reg];", "2:11", "expected a register name after 'reg', found ']'"),
    ("reg a : 8; $", "1:12", "unexpected character '$'"),
    ("reg a{0..} : 8;", "1:6", "malformed range: write {FIRST..LAST} with two numbers"),
    ('include "abc', "1:9", "unterminated string (a quoted path ends at the same line's \")"),
    ("include ;", "1:9", "expected a register file to include (a name or a \"quoted path\"), found ';'"),
])
def test_syntax_errors(text, location, message):
    e = error(text, filename="s.regs")
    assert e.location == f"s.regs:{location}"
    assert str(e) == f"s.regs:{location}: {message}"


def test_bad_includes(tmp_path):
    e = error("reg a : 8;\ninclude nosuchfile;")
    assert e.location == "<string>:2:9"
    assert "cannot include nosuchfile: no file nosuchfile.regs among the shipped register files" in str(e)
    top = tmp_path / "top.regs"
    e = error('include "missing.regs";', filename=str(top))
    assert e.location == f"{top}:1:9"
    assert f"cannot include 'missing.regs': no such file ({tmp_path / 'missing.regs'})" in str(e)
    # a cycle
    (tmp_path / "a.regs").write_text('reg a : 8;\ninclude "b.regs";\n')
    (tmp_path / "b.regs").write_text('reg b : 8;\ninclude "a.regs";\n')
    from regmap.alias import load
    with pytest.raises(AliasError) as e:
        load(str(tmp_path / "a.regs"))
    assert e.value.location == f"{tmp_path / 'b.regs'}:2:9"
    assert "include cycle: a.regs -> b.regs -> a.regs" in str(e.value)


def test_errors_inside_an_included_file_carry_its_name(tmp_path):
    (tmp_path / "inner.regs").write_text("reg a : 8;\nalias b : 8;\ndef b [reg c];\n")
    e = error('include "inner.regs";', filename=str(tmp_path / "outer.regs"))
    assert e.location == f"{tmp_path / 'inner.regs'}:3:12"
    assert str(e).endswith("def b uses undeclared register c")
    # solve errors too: the conflicting def is in the included file
    (tmp_path / "inner.regs").write_text("reg a, b : 8;\nalias x : 8;\ndef x [reg a];\n")
    e = error('include "inner.regs";\ndef x [reg b];\n', filename=str(tmp_path / "outer.regs"))
    assert e.location == f"{tmp_path / 'outer.regs'}:2:1"
    (tmp_path / "inner.regs").write_text("reg a : 8;\nalias x, y : 8;\ndef x [reg a];\n")
    e = error('include "inner.regs";\n', filename=str(tmp_path / "outer.regs"))
    assert e.location == f"{tmp_path / 'inner.regs'}:2:10"
    assert "cannot resolve y" in str(e)


def test_load_unknown_target():
    from regmap.alias import load
    with pytest.raises(AliasError, match="no register file 'sparc'"):
        load("sparc")
