"""regmap exec / regmap run end to end: real programs, compiled now, run under the tracer.

Each program checks its own results and says so on stdout and in its exit status.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tracer_host import CC, TRACED_PROGRAMS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "programs"

pytestmark = TRACED_PROGRAMS


def regmap(*args, timeout=60, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regmap.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=env, **kwargs)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The test programs, compiled once: name -> executable path."""
    directory = tmp_path_factory.mktemp("trace-programs")
    flags = {"threads": ["-pthread"], "vector": ["-mavx512f"]}
    executables = {}
    for name in ("sizes", "vector", "threads", "fork", "faults"):
        executable = directory / name
        subprocess.run([CC, "-O2", "-fno-delete-null-pointer-checks", *flags.get(name, []),
                        "-o", executable, PROGRAMS / f"{name}.c"], check=True)
        executables[name] = executable
    return executables


@pytest.fixture(scope="session", autouse=True)
def ptrace_allowed():
    result = regmap("exec", "true", timeout=30)
    if "not allowed to trace" in result.stderr:
        pytest.skip("ptrace is not permitted here: " + result.stderr.strip())


# -- the README's command ---------------------------------------------------------------------

def test_run_example_prints_the_line_and_exits_0():
    result = regmap("run", "examples/example.s")
    assert result.stdout == "memory-mapped registers work!\n"
    assert result.stderr == ""
    assert result.returncode == 0


def test_example_really_faults_without_regmap(tmp_path):
    stub = tmp_path / "stub.s"
    stub.write_text(".globl map_registers\nmap_registers: ret\n")
    executable = tmp_path / "example"
    subprocess.run([CC, "-nostdlib", "-static", "-o", executable, ROOT / "examples/example.s", stub],
                   check=True)
    native = subprocess.run([executable], capture_output=True)
    assert native.returncode == -11 and native.stdout == b""


def test_console_script_runs_example():
    script = Path(sys.executable).with_name("regmap")
    if not script.exists():
        pytest.skip("no installed regmap script beside this interpreter")
    result = subprocess.run([script, "run", "examples/example.s"], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert (result.stdout, result.returncode) == ("memory-mapped registers work!\n", 0)


# -- window accesses ----------------------------------------------------------------------------

def _checks(stdout: str) -> dict[str, str]:
    return {line.split(":")[0]: line for line in stdout.splitlines() if line.endswith((" ok", "FAIL"))}


def test_every_size_aligned_and_unaligned(built):
    result = regmap("exec", built["sizes"])
    checks = _checks(result.stdout)
    for name in ("read1 ah", "read2 cx", "read4 edx", "read8 add rcx", "write1 rdi byte 1",
                 "write2 si", "write4 ebx", "write8 r9", "read8 at 0x4", "write8 at 0xc rcx",
                 "write8 at 0xc rdx", "read16 xmm0 low", "read16 xmm0 high", "write16 rdx",
                 "write16 rbx", "rip is next", "rflags CF", "mxcsr read", "mxcsr write",
                 "xmm3 high qword", "xmm3 low qword written"):
        assert checks.get(name, "missing").endswith(" ok"), (name, result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr


def test_vector_registers_keep_their_upper_halves(built):
    result = regmap("exec", built["vector"])
    if result.stdout.startswith("skip:"):
        pytest.skip(result.stdout.strip())
    assert "FAIL" not in result.stdout and result.returncode == 0, result.stdout + result.stderr
    assert len(_checks(result.stdout)) == 15


def test_four_threads_have_their_own_registers(built):
    rounds = 400
    result = regmap("exec", built["threads"], rounds)
    lines = result.stdout.splitlines()
    assert lines == [f"thread {i} rax {rounds * (i + 1)} rdi {rounds * (i + 1)}" for i in range(4)]
    assert result.returncode == 0


def test_fork_vfork_and_exec_are_followed(built):
    result = regmap("exec", built["fork"])
    assert result.stdout.splitlines() == ["parent 12", "child 42", "exec 7"]
    assert result.returncode == 0, result.stderr


def test_program_exit_status_is_regmaps(built):
    result = regmap("exec", built["faults"], "exit3")
    assert result.returncode == 3 and result.stderr == ""


def test_run_assembly_with_start_exits_3():
    result = regmap("run", PROGRAMS / "exit3.s")
    assert result.returncode == 3 and result.stderr == ""


def test_run_crate_style_c_program_gets_a_map_registers_stub():
    result = regmap("run", PROGRAMS / "crate.c")
    assert (result.stdout, result.returncode) == ("rdi 42\n", 0)


def test_arguments_reach_the_program(built):
    result = regmap("exec", built["threads"], "3")
    assert result.stdout.splitlines()[0] == "thread 0 rax 3 rdi 3"


# -- genuine faults and signals -----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["bad-pointer", "hole"])
def test_genuine_segfault_kills_as_without_regmap(built, mode):
    native = subprocess.run([built["faults"], mode], capture_output=True, text=True)
    traced = regmap("exec", built["faults"], mode)
    assert native.returncode == -11
    assert traced.returncode == -11                 # regmap dies of it too
    assert traced.stdout == native.stdout
    # the line says where (symbolized) and why: a genuine fault, or a window hole's instruction
    assert re.fullmatch(r"regmap: \S*faults killed by SIGSEGV( \(core dumped\))?(: \S[^\n]*)?"
                        r" at 0x[0-9a-f]+ main\+0x[0-9a-f]+: (not a window access|[^\n]* hole [^\n]*)\n",
                        traced.stderr)


@pytest.mark.parametrize("mode", ["caught", "sent"])
def test_handled_segfault_sees_the_same_siginfo(built, mode):
    native = subprocess.run([built["faults"], mode], capture_output=True, text=True)
    traced = regmap("exec", built["faults"], mode)
    assert (traced.returncode, native.returncode) == (0, 0)
    # si_addr of a sent signal holds the sender's pid, which differs
    strip = (lambda text: re.sub(r"addr 0x[0-9a-f]+", "addr", text)) if mode == "sent" else str
    assert strip(traced.stdout) == strip(native.stdout)
    assert "code 1 addr 0xdead0000" in native.stdout or mode == "sent"


def test_other_signals_pass_through(built):
    result = regmap("exec", built["faults"], "usr1")
    assert result.stdout == "got SIGUSR1\nafter 3\n" and result.returncode == 0


def test_divide_error_is_sigfpe_at_the_instruction(built):
    result = regmap("exec", built["faults"], "divide")
    assert result.stdout == "caught SIGFPE code 1 addr " + result.stdout.split("addr ")[1]
    assert result.stdout.endswith(" at divide_site\n")          # si_addr = the div's address
    assert result.returncode == 0


def test_unhandled_divide_error_kills_with_sigfpe(built):
    result = regmap("exec", built["faults"], "divide-dies")
    assert result.returncode == -8
    assert "killed by SIGFPE" in result.stderr


def test_group_stop_and_continue(built):
    result = regmap("exec", built["faults"], "stop", timeout=30)
    assert result.stdout == "continued 42\n" and result.returncode == 0


def test_stdin_passes_through():
    result = regmap("exec", "cat", input="through regmap\n")
    assert result.stdout == "through regmap\n" and result.returncode == 0


# -- --trace, --stats, --json -------------------------------------------------------------------

TRACE_LINE = re.compile(
    r"regmap: \[(?P<tid>\d+)\] (?P<rip>0x[0-9a-f]+)(?: (?P<symbol>\S+(?: \(\S+\))?))?  (?P<instruction>.+?)  "
    r"(?P<kind>read|write) +\[(?P<address>0x[0-9a-f]+)\] (?P<size>\d+) bytes? "
    r"(?:= (?P<value>0x[0-9a-f]+)|(?P<before>0x[0-9a-f]+) -> (?P<after>0x[0-9a-f]+))  \((?P<names>.+?)\)")


def test_trace_lines():
    result = regmap("run", "--trace", PROGRAMS / "exit3.s")
    assert result.returncode == 3
    lines = [TRACE_LINE.fullmatch(line) for line in result.stderr.splitlines()]
    assert all(lines), result.stderr
    first, second = lines
    assert (first["kind"], first["address"], first["size"], first["names"], first["after"]) == \
        ("write", "0x38", "8", "rdi", "0x3")
    assert (second["address"], second["names"], second["after"]) == ("0x0", "rax", "0x3c")
    assert first["tid"] == second["tid"]
    assert int(second["rip"], 16) > int(first["rip"], 16)


def test_trace_of_an_unaligned_read_names_both_registers(built):
    result = regmap("exec", "--trace", built["sizes"])
    reads_at_4 = [match for match in map(TRACE_LINE.fullmatch, result.stderr.splitlines())
                  if match and match["address"] == "0x4"]
    assert len(reads_at_4) == 1
    # the layout names rcx's low half by its alias
    assert reads_at_4[0]["names"] in ("ecx . rax[63:32]", "rcx[31:0] . rax[63:32]")
    assert reads_at_4[0]["value"] == "0x4444444411111111"


def test_stats_summary(built):
    result = regmap("exec", "--stats", built["threads"], 50)
    assert result.returncode == 0
    head = re.match(r"regmap: stats: (\d+) faults emulated, [\d.]+ us each", result.stderr)
    assert head and int(head[1]) == 4 * 50 * 2, result.stderr
    counts = {mnemonic: int(count) for count, mnemonic
              in re.findall(r"regmap: stats: +(\d+)  (add|mov)\n", result.stderr)}
    assert counts == {"add": 200, "mov": 200}
    sites = re.findall(r"regmap: stats: +(\d+)  0x[0-9a-f]+  add rax,\[8\]\n", result.stderr)
    assert sites and sum(map(int, sites)) == 200     # the compiler may unroll the loop


def test_json_lines():
    result = regmap("run", "--json", PROGRAMS / "exit3.s")
    records = [json.loads(line) for line in result.stderr.splitlines()]
    events = [record["event"] for record in records]
    assert events == ["access", "access", "exit", "stats"]
    access = records[0]
    assert access["address"] == 0x38 and access["size"] == 8 and access["write"] is True
    assert access["names"] == ["rdi"] and access["after"] == "0x3"
    assert records[2]["code"] == 3 and records[2]["status"] == 3
    assert records[3]["faults"] == 2 and records[3]["mnemonics"] == {"mov": 2}
    assert result.returncode == 3


def test_json_with_stats_only_has_no_accesses(built):
    result = regmap("exec", "--json", "--stats", built["faults"], "bad-pointer")
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert [record["event"] for record in records] == ["exit", "stats"]
    assert records[0]["signal"] == "SIGSEGV" and records[0]["status"] == 139
    assert records[1]["delivered"] == 1


def test_layout_option(tmp_path):
    result = regmap("run", "--layout", "default", "examples/example.s")
    assert result.returncode == 0 and result.stdout == "memory-mapped registers work!\n"
    result = regmap("run", "--layout", "no-such-layout", "examples/example.s")
    assert result.returncode == 1
    assert result.stderr.startswith("regmap: --layout no-such-layout:")
    assert len(result.stderr.splitlines()) == 1


# -- bad input ------------------------------------------------------------------------------------

def _one_line_error(result, status):
    assert result.returncode == status, result.stderr
    assert result.stderr.startswith("regmap: ")
    assert result.stdout == ""


def test_missing_program():
    result = regmap("exec", "no-such-program-anywhere")
    _one_line_error(result, 127)
    assert "command not found" in result.stderr and len(result.stderr.splitlines()) == 1
    _one_line_error(regmap("exec", "./no/such/file"), 127)


def test_missing_source_file():
    _one_line_error(regmap("run", "no-such-file.c"), 127)


def test_not_executable(tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    result = regmap("exec", script)
    _one_line_error(result, 126)
    assert "permission denied" in result.stderr


def test_non_x86_64_binary(tmp_path):
    elf = tmp_path / "arm64-program"
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    header[4], header[5], header[6] = 2, 1, 1              # 64-bit, little-endian, version 1
    header[16:18] = (2).to_bytes(2, "little")              # ET_EXEC
    header[18:20] = (183).to_bytes(2, "little")            # EM_AARCH64
    elf.write_bytes(bytes(header))
    elf.chmod(0o755)
    result = regmap("exec", elf)
    _one_line_error(result, 126)
    assert "AArch64" in result.stderr and "x86-64" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_script_with_missing_interpreter(tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/no/such/interpreter\n")
    script.chmod(0o755)
    result = regmap("exec", script)
    _one_line_error(result, 127)
    assert "No such file or directory" in result.stderr


def test_scripts_run(tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho \"hi $1\"\nexit 4\n")
    script.chmod(0o755)
    result = regmap("exec", script, "there")
    assert (result.stdout, result.returncode) == ("hi there\n", 4)


def test_build_error_shows_compiler_output(tmp_path):
    source = tmp_path / "broken.c"
    source.write_text("int main(void) { return missing_name; }\n")
    result = regmap("run", source)
    assert result.returncode == 1 and result.stdout == ""
    first, *rest = result.stderr.splitlines()
    assert first.startswith("regmap: cannot build ") and "exited with status" in first
    assert any("missing_name" in line for line in rest)


def test_unknown_source_kind(tmp_path):
    source = tmp_path / "program.rs"
    source.write_text("fn main() {}\n")
    _one_line_error(regmap("run", source), 2)


def test_no_compiler_on_path(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    env.pop("CC", None)
    result = regmap("run", PROGRAMS / "crate.c", env=env)
    _one_line_error(result, 1)
    assert "no C compiler on PATH" in result.stderr and len(result.stderr.splitlines()) == 1


def test_assembly_without_a_compiler_uses_as_and_ld(tmp_path):
    tools = {name: shutil.which(name) for name in ("as", "ld")}
    if not all(tools.values()):
        pytest.skip("binutils' as and ld are not on PATH")
    only = tmp_path / "bin"
    only.mkdir()
    for name, path in tools.items():
        (only / name).symlink_to(path)
    env = {**os.environ, "PATH": str(only)}
    env.pop("CC", None)
    result = regmap("run", "examples/example.s", env=env)
    assert (result.stdout, result.returncode) == ("memory-mapped registers work!\n", 0)


def test_not_allowed_to_trace(built):
    # regmap under regmap: the inner one's child is already traced by the outer one
    result = regmap("exec", sys.executable, "-m", "regmap.cli", "exec", built["faults"], "exit3",
                    timeout=120)
    assert result.returncode == 1
    assert result.stdout == ""
    assert re.fullmatch(r"regmap: not allowed to trace \S+: ptrace: Operation not permitted .*\n",
                        result.stderr)
