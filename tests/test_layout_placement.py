"""The `layout NAME : BYTES { ADDRESS: REGS; }` statement: placement, holes, errors, the default."""
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from regmap import alias
from regmap.alias import Reg, Slice, Unk
from regmap.errors import AliasError, LayoutError
from regmap.layout import LAYOUT_DIR, Layout, load_layout

DEF_FORM = Path(__file__).with_name("layouts") / "default_def_form.regs"


def regmap_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "regmap", *args], capture_output=True, text=True,
                          **kwargs)


def placed(text):
    return Layout(alias.parse("include amd64;\n" + text), "test")


# -- placement ---------------------------------------------------------------------------------

def test_the_issue_example_places_registers_of_any_width_consecutively():
    layout = placed("""layout mine : 4096 {
      0x000: rdi;
      0x020: xmm3;
      0x800: rax, rcx;      # consecutive: rax at 0x800, rcx at 0x808
    }""")
    assert [tuple(p) for p in layout.placements()] == [
        (0x0, 8, "rdi"), (0x20, 16, "xmm3"), (0x800, 8, "rax"), (0x808, 8, "rcx")]
    assert layout.name == "mine" and layout.size == 4096
    assert layout.resolve(0x804, 8) == (("rcx", 31, 0), ("rax", 63, 32))


@pytest.mark.parametrize("address,size", [(0x8, 1), (0x10, 16), (0x30, 1), (0x810, 1), (0xfff, 1)])
def test_everything_not_placed_is_a_hole(address, size):
    layout = placed("layout m : 4096 { 0x000: rdi; 0x020: xmm3; 0x800: rax, rcx; }")
    with pytest.raises(LayoutError, match="hole"):
        layout.resolve(address, size)


def test_ranges_expand_in_order_and_decimal_addresses_work():
    layout = placed("layout v : 1024 { 256: ymm{0..15}; 0: r{15..8}d }")
    for n in range(16):
        assert layout.describe(256 + 32 * n, 32) == f"ymm{n}"
    for i, n in enumerate(range(15, 7, -1)):
        assert layout.describe(4 * i, 4) == f"r{n}d"


def test_a_layout_is_sugar_for_one_def_of_its_window():
    rf = alias.parse("include amd64; layout w : 32 { 0: al; 2: ah; 0x10: eflags }")
    (equation,) = [eq for eq in rf.equations if eq.name == "w"]
    assert equation.parts == (Unk(width=96), Reg("eflags"), Unk(width=104), Reg("ah"),
                              Unk(width=8), Reg("al"))
    assert rf.layouts == ("w",) and not rf.is_basis("w") and rf.width("w") == 256
    assert rf.slices("w")[-3:] == (Slice("rax", 15, 8), Slice(None, 15, 8), Slice("rax", 7, 0))


def test_an_empty_layout_is_all_hole_and_the_last_semicolon_is_optional():
    layout = placed("layout nothing : 16 { };")
    assert layout.placements() == []
    assert placed("layout one : 8 { 0: rax }").describe(0, 8) == "rax"


def test_the_window_is_the_last_layout_statement():
    layout = placed("layout a : 8 { 0: rax; }\nlayout b : 8 { 0: rcx; }")
    assert layout.name == "b" and layout.describe(0, 8) == "rcx"


def test_a_layout_may_place_the_same_register_twice():
    layout = placed("layout twice : 16 { 0: rax; 8: rax; }")
    values = {}
    layout.write(8, 8, 5, values)
    assert layout.read(0, 8, values) == 5


# -- errors: each at file:line:col -------------------------------------------------------------

@pytest.mark.parametrize("body,where,message", [
    ("layout m : 16 {\n  0: rax;\n  4: ecx;\n}", "4:6", "ecx at 0x4..0x7 overlaps rax at 0x0..0x7 "
                                                     "(placed at e.regs:3:6)"),
    ("layout m : 16 {\n  8: rcx;\n  0: rax, rdx, rbx;\n}", "4:11", "rdx at 0x8..0xf overlaps rcx at "
                                                                 "0x8..0xf (placed at e.regs:3:6)"),
    ("layout m : 16 {\n  0: rax, rcx, rdx;\n}", "3:16", "rdx at 0x10..0x17 runs past the end of the "
                                                        "16-byte layout m"),
    ("layout m : 16 { 0x20: al; }", "2:23", "al at 0x20..0x20 runs past the end of the 16-byte layout m"),
    ("layout m : 16 { 0: cf; }", "2:20", "layout m cannot place cf: it is 1 bit wide, and a layout "
                                         "places whole bytes"),
    ("layout m : 16 { 0: nosuch; }", "2:20", "layout m places undeclared register nosuch"),
    ("layout m{0..1} : 16 { }", "2:8", "a layout's name has no range: m{0..1}"),
    ("layout rax : 16 { }", "2:8", "register rax is already declared at"),
    ("layout m : 0 { }", "2:12", "the layout's size in bytes must be positive, not 0"),
    ("layout m 16 { }", "2:10", "expected ':' and the size in bytes after the layout name m, found '16'"),
    ("layout m : 16 0: rax }", "2:15", "expected '{' to start the placements of layout m, found '0'"),
    ("layout m : 16 { rax }", "2:17", "expected an address (a byte offset in the layout) (a number), "
                                      "found 'rax'"),
    ("layout m : 16 { 0 rax }", "2:19", "expected ':' after the address, found 'rax'"),
    ("layout m : 16 { 0: rax 8: rcx }", "2:24", "expected ';' or '}' after a placement, found '8'"),
    ("layout m : 16 { 0: rax;", "2:24", "found the end of the file"),
])
def test_errors_name_file_line_and_column(body, where, message):
    with pytest.raises(AliasError) as error:
        alias.parse("include amd64;\n" + body, filename="e.regs")
    assert error.value.location == f"e.regs:{where}"
    assert message in str(error.value)


# -- the default layout: the placement form gives what the def form gave -------------------------

@pytest.fixture(scope="module")
def both():
    return load_layout(), Layout(alias.load(str(DEF_FORM)), "default")


def test_the_default_layout_is_written_with_placements():
    text = (LAYOUT_DIR / "default.regs").read_text()
    assert "layout default : 4096 {" in text and "def " not in text


def test_default_resolves_every_address_as_the_def_form(both):
    new, old = both
    assert new.size == old.size
    assert new.registers.slices(new.window) == old.registers.slices("page")
    for address in range(new.size):
        for size in (1, 2, 4, 8, 16, 32):
            try:
                expected = old.resolve(address, size)
            except LayoutError as error:
                with pytest.raises(LayoutError) as got:
                    new.resolve(address, size)
                assert str(got.value) == str(error)
            else:
                assert new.resolve(address, size) == expected


def test_regmap_layout_prints_what_the_def_form_printed(tmp_path):
    old_file = tmp_path / "default.regs"            # the def form, under the shipped name
    old_file.write_text(DEF_FORM.read_text())
    before = regmap_cli("layout", str(old_file))
    after = regmap_cli("layout")
    assert before.returncode == after.returncode == 0
    assert after.stdout == before.stdout
    assert after.stdout.startswith("layout default: 4096-byte window at 0x0\n")


# -- regmap layout --check -----------------------------------------------------------------------

def test_check_accepts_a_good_layout(tmp_path):
    path = tmp_path / "mine.regs"
    path.write_text("include amd64;\nlayout mine : 4096 { 0x000: rdi; 0x800: rax, rcx; }\n")
    done = regmap_cli("layout", "--check", str(path))
    assert done.returncode == 0
    assert done.stdout == f"{path}: ok (layout mine, 4096 bytes, 3 registers placed in 24 bytes)\n"


def test_check_reports_file_line_col(tmp_path):
    path = tmp_path / "bad.regs"
    path.write_text("include amd64;\nlayout bad : 4096 {\n  0x000: rdi;\n  0x004: rax;\n}\n")
    done = regmap_cli("layout", "--check", str(path))
    assert done.returncode == 1 and done.stdout == ""
    assert f"{path}:4:10: rax at 0x4..0xb overlaps rdi at 0x0..0x7" in done.stderr
    missing = regmap_cli("layout", "--check", str(tmp_path / "nosuch.regs"))
    assert missing.returncode == 1 and "nosuch.regs" in missing.stderr


# -- any placement: each register resolves to itself, every other byte is a hole ----------------

POOL = ("al", "bh", "cx", "r9w", "edx", "r12d", "rsi", "r15", "rip", "xmm2", "ymm5", "mxcsr")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(POOL), st.integers(0, 24)), min_size=0, max_size=8),
       st.integers(0, 16))
def test_any_placement_resolves_each_register_and_leaves_holes(items, tail):
    rf = alias.load("amd64")
    spots, address = [], 0
    for name, gap in items:                      # registers in order, with gaps between them
        address += gap
        spots.append((address, name, rf.width(name) // 8))
        address += rf.width(name) // 8
    size = max(address + tail, 1)
    lines = "".join(f"  {a:#x}: {name};\n" for a, name, _ in reversed(spots))   # any line order
    layout = placed(f"layout any : {size} {{\n{lines}}}")
    covered = set()
    for a, name, nbytes in spots:
        assert layout.resolve(a, nbytes) == rf.slices(name)
        covered.update(range(a, a + nbytes))
    for byte in set(range(size)) - covered:
        with pytest.raises(LayoutError, match="hole"):
            layout.resolve(byte, 1)
    if spots:                                     # and one more register on top of the last is an error
        a, name, _ = spots[-1]
        with pytest.raises(AliasError, match=f"overlaps {name} at {a:#x}"):
            alias.parse(f"include amd64; layout any : {size} {{{a:#x}: {name}; {a:#x}: al; }}")

