"""The page-0 layout: the default map, resolving, errors, user layout files, the CLI."""
import subprocess
import sys
import textwrap

import pytest

from regmap.errors import AliasError, LayoutError
from regmap.layout import load_layout

ORIGINAL_CRATE = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                  *(f"r{n}" for n in range(8, 16)), "rip", "rflags"]


@pytest.fixture(scope="module")
def layout():
    return load_layout()


def test_default_places_the_original_crates_registers_every_8_bytes(layout):
    placed = {p.name: (p.address, p.size) for p in layout.placements()}
    for index, name in enumerate(ORIGINAL_CRATE):
        assert placed[name] == (8 * index, 8)


def test_vector_registers_sit_above_0x100_with_xmm_as_the_low_half(layout):
    for n in range(16):
        address = 0x100 + 32 * n
        assert layout.describe(address, 32) == f"ymm{n}"
        assert layout.describe(address, 16) == f"xmm{n}"
        assert layout.resolve(address, 16) == ((f"zmm{n}", 127, 0),)


def test_window_bytes_are_register_bytes_little_endian(layout):
    assert layout.resolve(1, 1) == (("rax", 15, 8),)
    assert layout.describe(9, 1) == "ch"
    # An unaligned qword at 0x4: its high half is rcx's low half.
    assert layout.resolve(4, 8) == (("rcx", 31, 0), ("rax", 63, 32))


def test_read_and_write_splice_only_the_bytes_addressed(layout):
    values = {"rax": 0x1111111122222222, "rcx": 0x3333333344444444}
    assert layout.read(4, 8, values) == 0x4444444411111111
    layout.write(0, 4, 0xAABBCCDD, values)
    assert values["rax"] == 0x11111111AABBCCDD  # a 4-byte window write does not zero-extend
    layout.write(4, 8, 0x0102030405060708, values)
    assert values["rax"] == 0x05060708AABBCCDD and values["rcx"] == 0x3333333301020304


def test_image_matches_read(layout):
    values = {"rax": 0x0807060504030201, "rdi": 0xFEDCBA9876543210, "zmm3": (1 << 200) | 7}
    image = layout.image(values)
    assert len(image) == layout.size
    for address, size in ((0, 8), (0x38, 8), (0x160, 32), (3, 2)):
        assert int.from_bytes(image[address:address + size], "little") == layout.read(address, size, values)


@pytest.mark.parametrize("address,size,message", [
    (0x94, 4, "hole"), (0x300, 1, "hole"), (4095, 2, "outside"), (-1, 1, "outside"), (0, 0, "outside")])
def test_bad_ranges_are_clear_errors(layout, address, size, message):
    with pytest.raises(LayoutError, match=message):
        layout.resolve(address, size)


def test_a_user_layout_file(tmp_path):
    path = tmp_path / "tiny.regs"
    path.write_text(textwrap.dedent("""\
        include amd64;
        alias page : 32768;
        def page [unk * 510; reg rdi; reg rax];   # rax at 0x0, rdi at 0x8
    """))
    layout = load_layout(str(path))
    assert layout.describe(8, 8) == "rdi" and layout.describe(0, 1) == "al"
    with pytest.raises(LayoutError, match="hole"):
        layout.resolve(16, 8)


def test_a_layout_without_a_page_is_an_error(tmp_path):
    path = tmp_path / "nopage.regs"
    path.write_text("include amd64;\n")
    with pytest.raises(AliasError, match="page"):
        load_layout(str(path))


def test_a_bad_layout_file_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.regs"
    path.write_text("include amd64;\nalias page : 32768;\ndef page [reg nosuch];\n")
    with pytest.raises(AliasError) as error:
        load_layout(str(path))
    assert f"{path}:3:" in str(error.value)


def test_unknown_layout_name():
    with pytest.raises(LayoutError, match="no layout 'nosuch'"):
        load_layout("nosuch")


def regmap_cli(*args):
    return subprocess.run([sys.executable, "-m", "regmap", *args], capture_output=True, text=True)


def test_cli_explain():
    done = regmap_cli("explain", "0x4", "8")
    assert done.returncode == 0
    assert "rcx[31:0] . rax[63:32]" in done.stdout
    assert regmap_cli("explain", "0x9").stdout.startswith("0x9, 1 -> ch")


def test_cli_explain_bad_address():
    done = regmap_cli("explain", "0x94", "4")
    assert done.returncode == 1 and "hole" in done.stderr
    done = regmap_cli("explain", "banana")
    assert done.returncode == 1 and "not a number" in done.stderr


def test_cli_layout_table():
    done = regmap_cli("layout")
    assert done.returncode == 0
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    assert ["0x38", "8", "rdi"] in rows and ["0x100", "32", "ymm0"] in rows
