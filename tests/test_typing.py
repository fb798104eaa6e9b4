"""The package is typed: py.typed ships, and the public API passes mypy."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = ("-p", "regmap.alias", "-m", "regmap", "-m", "regmap.layout", "-m", "regmap.pure",
          "-m", "regmap.emulation")

USER_CODE = '''
import regmap
from regmap import alias
from regmap.layout import Layout, load_layout

emulation: regmap.Emulation = regmap.emulate("48 03 04 25 08 00 00 00", {"rax": 1}, max_steps=4)
rax: int = emulation.regs["rax"]
changed: dict[str, tuple[int, int]] = emulation.changed
flags: dict[str, int] = emulation.flags
layout: Layout = load_layout("default")
rf: alias.RegisterFile = alias.parse("reg a : 8; alias b : 8; def b [reg a];")
width: int = rf.width("b")
'''


def mypy(*args, cwd=ROOT):
    pytest.importorskip("mypy")
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(ROOT / ".mypy_cache"),
                           *args], capture_output=True, text=True, cwd=cwd)


def test_py_typed_ships_with_the_package():
    import regmap
    assert (Path(regmap.__file__).parent / "py.typed").is_file()
    assert '"py.typed"' in (ROOT / "pyproject.toml").read_text()


def test_the_public_api_passes_mypy():
    done = mypy(*PUBLIC)
    assert done.returncode == 0, done.stdout + done.stderr


def test_user_code_is_checked_against_real_types(tmp_path):
    good = tmp_path / "good.py"
    good.write_text(USER_CODE)
    done = mypy("--config-file", str(ROOT / "pyproject.toml"), str(good))
    assert done.returncode == 0, done.stdout + done.stderr
    bad = tmp_path / "bad.py"                    # the types are real, not Any: a wrong one is caught
    bad.write_text(USER_CODE + 'oops: str = emulation.regs["rax"]\n')
    done = mypy("--config-file", str(ROOT / "pyproject.toml"), str(bad))
    assert done.returncode == 1 and 'bad.py:13: error: Incompatible types in assignment' in done.stdout
