"""Strict and permissive addressing (issue 19, item 1) and what a killed program is told
(item 6), through ``regmap exec`` and ``regmap.map_registers`` as a user runs them.

tests/programs/null_checks.c has the two programs the issue names: a linked-list walk with a
NULL node (a NULL-pointer bug: [0 + 0x18]) and a model of a JVM's implicit null checks (its
own SIGSEGV handler skips ``mov eax, [rax+0xc]`` at rax = 0 and counts an exception).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tracer_host import CC, PROGRAMS, TRACED_PROGRAMS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
pytestmark = TRACED_PROGRAMS
WARNING = "has its own SIGSEGV handler and made a register-addressed page-0 access"


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    executable = tmp_path_factory.mktemp("null-checks") / "null_checks"
    subprocess.run([CC, "-g", "-O1", "-o", executable, PROGRAMS / "null_checks.c"], check=True)
    return executable


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    shared = tmp_path_factory.mktemp("null-checks-lib") / "libnull_checks.so"
    subprocess.run([CC, "-g", "-O1", "-shared", "-fPIC", "-o", shared, PROGRAMS / "null_checks.c"],
                   check=True)
    return shared


def regmap(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regmap.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def native(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(arg) for arg in args], capture_output=True, text=True, timeout=60)


# -- regmap exec ------------------------------------------------------------------------------

def test_strict_null_walk_dies_as_without_regmap_and_says_where(program):
    alone = native(program, "walk")
    traced = regmap("exec", "--strict", program, "walk")
    assert alone.returncode == -11
    assert traced.returncode == alone.returncode and traced.stdout == alone.stdout
    line, = traced.stderr.splitlines()
    assert line.startswith(f"regmap: {program} killed by SIGSEGV")
    assert " walk+0x" in line and "null_checks.c:" in line      # symbolized, with DWARF
    assert line.endswith("not a window access: a register-addressed page-0 access "
                         "(strict addressing)")


def test_permissive_null_walk_reads_registers(program):
    """The documented hazard of the permissive default: the NULL node's field is a register."""
    traced = regmap("exec", program, "walk")
    assert traced.returncode == 0 and traced.stdout.startswith("sum=")


def test_strict_implicit_null_checks_give_the_programs_own_results(program):
    alone = native(program, "npe", 1000)
    traced = regmap("exec", "--strict", program, "npe", 1000)
    assert alone.stdout == "npe=1000 sum=0\n"
    assert (traced.returncode, traced.stdout, traced.stderr) == (0, alone.stdout, "")


def test_permissive_register_access_under_a_handler_is_said_once(program):
    traced = regmap("exec", program, "npe", 1000)
    assert traced.returncode == 0
    assert traced.stderr.count(WARNING) == 1, traced.stderr
    assert "mov eax,[rax+0Ch]" in traced.stderr and "--strict" in traced.stderr
    assert traced.stdout != "npe=1000 sum=0\n"      # what the warning is about


def test_constant_addresses_stay_window_accesses_under_strict():
    traced = regmap("run", "--strict", ROOT / "examples" / "example.s")
    assert traced.returncode == 0 and "memory-mapped registers work!" in traced.stdout


# -- a killed program says why -----------------------------------------------------------------

def test_hole_read_names_the_instruction_and_the_hole(program):
    traced = regmap("exec", program, "hole")
    assert traced.returncode == -11
    line, = traced.stderr.splitlines()
    assert "killed by SIGSEGV: mov " in line and ",[98h] at 0x" in line
    assert " read_hole+0x" in line and "null_checks.c:" in line
    assert "hole" in line.split("null_checks.c:")[1]


def test_unsupported_form_is_named_as_such(program):
    traced = regmap("exec", program, "far-jump")
    assert traced.returncode == -11
    last = traced.stderr.splitlines()[-1]
    assert f"{program} killed by SIGSEGV: jmp far fword ptr [40h] at 0x" in last
    assert " main+0x" in last and "a window access in a form regmap does not support" in last


def test_json_exit_record_says_where_and_why(program):
    import json
    traced = regmap("exec", "--json", program, "hole")
    record, = [line for line in map(json.loads, traced.stderr.splitlines())
               if line["event"] == "exit"]
    assert record["signal"] == "SIGSEGV"
    fault = record["fault"]
    assert fault["symbol"].startswith("read_hole+0x") and "null_checks.c:" in fault["symbol"]
    assert fault["instruction"].endswith(",[98h]") and "hole" in fault["reason"]


def test_trace_symbolizes_the_signal_line(program):
    traced = regmap("exec", "--trace", program, "hole")
    delivered = [line for line in traced.stderr.splitlines() if "SIGSEGV delivered" in line]
    assert delivered and " read_hole+0x" in delivered[0]


# -- map_registers ----------------------------------------------------------------------------

CHILD = textwrap.dedent('''
    import ctypes, sys
    import regmap
    lib = ctypes.CDLL(sys.argv[1])
    lib.implicit_null_checks.argtypes = [ctypes.c_long, ctypes.c_void_p]
    lib.implicit_null_checks.restype = ctypes.c_long
    lib.last_sum.restype = lib.null_walk.restype = ctypes.c_long
    mode, what = sys.argv[2], sys.argv[3]
    if what == "npe":
        lib.install_handler()           # the program's handler first, as a JVM's
    if mode == "switch":                # permissive first: the site gets its fast path
        regmap.map_registers()
        lib.implicit_null_checks(10, None)
    if mode != "native":
        regmap.map_registers(strict=mode in ("strict", "switch"))
    if what == "walk":
        print("sum=%d" % lib.null_walk())
    else:
        print("npe=%d sum=%d" % (lib.implicit_null_checks(1000, None), lib.last_sum()))
''')


def child(library, mode: str, what: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-c", CHILD, str(library), mode, what], env=env,
                          capture_output=True, text=True, timeout=120)


def test_map_registers_strict_leaves_null_checks_to_the_handler(library):
    alone, strict = child(library, "native", "npe"), child(library, "strict", "npe")
    assert alone.stdout == "npe=1000 sum=0\n"
    assert (strict.returncode, strict.stdout, strict.stderr) == (0, alone.stdout, "")


def test_map_registers_strict_after_permissive_forgets_the_fast_paths(library):
    switched = child(library, "switch", "npe")
    assert switched.returncode == 0 and switched.stdout == "npe=1000 sum=0\n"


def test_map_registers_permissive_says_it_once(library):
    permissive = child(library, "permissive", "npe")
    assert permissive.returncode == 0
    assert permissive.stderr.count(WARNING) == 1, permissive.stderr
    assert "map_registers(strict=True)" in permissive.stderr


def test_map_registers_strict_null_walk_crashes_as_without_regmap(library):
    alone, strict = child(library, "native", "walk"), child(library, "strict", "walk")
    permissive = child(library, "permissive", "walk")
    assert alone.returncode == -11
    assert (strict.returncode, strict.stdout) == (alone.returncode, alone.stdout)
    assert permissive.returncode == 0 and permissive.stdout.startswith("sum=")


def test_a_divide_error_at_a_window_operand_says_where(tmp_path):
    """#DE of an emulated `div qword ptr [8]` (rcx = 0): the "killed by" line is symbolized, so
    the process's maps were read before the thread was let go to die."""
    source = tmp_path / "div.c"
    source.write_text("int main(void) {\n"
                      "    __asm__ volatile (\"xor %%ecx, %%ecx\\n\\tdivq 8\" ::: \"rax\", \"rcx\", \"rdx\", \"cc\");\n"
                      "    return 0;\n}\n")
    executable = tmp_path / "div"
    subprocess.run([CC, "-g", "-O1", "-o", executable, source], check=True)
    traced = regmap("exec", executable)
    assert traced.returncode == -8       # (natively the read of page 0 itself kills it)
    line = traced.stderr.splitlines()[-1]
    assert "killed by SIGFPE" in line and " main+0x" in line and "div.c:2" in line, line
