"""The command line's small promises: --version, and bad input named for what it is."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import regmap

ROOT = Path(__file__).resolve().parent.parent


def regmap_cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regmap", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, **kwargs)


def one_line(done: subprocess.CompletedProcess, prefix: str) -> str:
    """The single line of stderr, which starts with ``prefix``; nothing on stdout."""
    assert done.stdout == "", done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), done.stderr
    return lines[0]


def test_version():
    done = regmap_cli("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"regmap {regmap.__version__}\n", "")


@pytest.mark.parametrize("size", ["0", "-1", "-8"])
def test_explain_names_a_bad_size(size):
    done = regmap_cli("explain", "0", size)
    assert done.returncode == 1
    line = one_line(done, "regmap explain: ")
    assert f"size {size}" in line and "at least 1" in line
    assert "outside" not in line


def test_explain_a_size_past_the_window_is_still_about_the_range():
    done = regmap_cli("explain", "0xff0", "32")
    assert done.returncode == 1 and "outside the 4096-byte window" in done.stderr


@pytest.mark.parametrize("path", ["/dev/null", "/"])
def test_layout_of_something_that_is_not_a_file_says_so(path):
    done = regmap_cli("layout", path)
    assert done.returncode == 1
    line = one_line(done, "regmap layout: ")
    assert "not a layout" in line and "no such file" not in line


def test_layout_of_a_missing_file_is_still_missing():
    done = regmap_cli("layout", "/no/such/layout.regs")
    assert done.returncode == 1 and "nor an existing file" in done.stderr


@pytest.mark.parametrize("contents", [None, "garbage\n", "include amd64;\n"])
def test_a_bad_layout_has_one_status_everywhere(tmp_path, contents):
    """`regmap layout X` and `regmap exec --layout X` (and `run`) agree on the status."""
    if contents is None:
        layout = "no-such-layout"
    else:
        layout = tmp_path / "bad.regs"
        layout.write_text(contents)
    shown = regmap_cli("layout", layout)
    executed = regmap_cli("exec", "--layout", layout, "true")
    ran = regmap_cli("run", "--layout", layout, "examples/example.s")
    assert shown.returncode == executed.returncode == ran.returncode == 1
    one_line(shown, "regmap layout: ")
    one_line(executed, f"regmap: --layout {layout}: ")
    one_line(ran, f"regmap: --layout {layout}: ")


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler")
@pytest.mark.parametrize("suffix, text, says", [
    (".c", "int helper(void) { return 1; }\n", "defines neither main nor _start"),
    (".s", ".text\n.globl helper\nhelper: ret\n", "defines neither main nor _start"),
    (".s", ".text\nmain: ret\n", "its main is local"),       # a label without .globl
])
def test_run_of_a_file_with_no_entry_point_says_so(tmp_path, suffix, text, says):
    source = tmp_path / f"library{suffix}"
    source.write_text(text)
    done = regmap_cli("run", source)
    assert done.returncode == 1
    assert says in one_line(done, "regmap: ")
