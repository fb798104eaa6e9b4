"""regmap exec is transparent about how the program ended and keeps its own output apart.

- killed by a signal: regmap dies of the same signal (no second core), after one line,
  except for the deaths shells do not report (SIGINT, SIGPIPE) and under --quiet;
- ``-o FILE`` / ``--output-fd N``: the trace, stats and JSON go there, not to the program's stderr;
- ``--trace`` shows every signal passed on, and names a hole access as one.
"""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tracer_host import TRACED_PROGRAMS, build_program  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "programs"
REGMAP = [sys.executable, "-m", "regmap"]

pytestmark = TRACED_PROGRAMS
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="no bash on PATH")


def regmap(*args, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("cwd", ROOT)
    return subprocess.run([*REGMAP, *map(str, args)], capture_output=True, text=True, timeout=60,
                          **kwargs)


@pytest.fixture(scope="module", autouse=True)
def ptrace_allowed():
    result = regmap("exec", "true")
    if "not allowed to trace" in result.stderr:
        pytest.skip("ptrace is not permitted here: " + result.stderr.strip())


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    return build_program(tmp_path_factory, "faults")


def kill_self(signal_name: str) -> list[str]:
    return ["sh", "-c", f"kill -{signal_name} $$"]


# -- item 8: killed by a signal means killed by that signal ------------------------------------

@pytest.mark.parametrize("name, number", [("TERM", 15), ("HUP", 1), ("KILL", 9), ("USR1", 10)])
def test_regmap_dies_of_the_signal_that_killed_the_program(name, number):
    result = regmap("exec", *kill_self(name))
    assert result.returncode == -number
    assert result.stderr == f"regmap: sh killed by SIG{name}\n"
    assert result.stdout == ""


def test_a_genuine_segfault_kills_regmap_with_sigsegv(faults):
    result = regmap("exec", faults, "bad-pointer")
    assert result.returncode == -11
    assert re.fullmatch(r"regmap: \S*faults killed by SIGSEGV( \(core dumped\))?"
                        r" at 0x[0-9a-f]+[^\n]*: not a window access\n", result.stderr)


def test_no_second_core_dump(faults, tmp_path):
    """With cores allowed, the program may dump one; regmap, dying of the same signal, does not."""
    if resource.getrlimit(resource.RLIMIT_CORE)[1] != resource.RLIM_INFINITY:
        pytest.skip("the hard RLIMIT_CORE is limited here")

    def allow_cores():                       # in the child: the program may dump a core
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    process = subprocess.Popen([*REGMAP, "exec", faults, "bad-pointer"], cwd=tmp_path,
                               stderr=subprocess.PIPE, text=True, preexec_fn=allow_cores)
    stderr = process.stderr.read()
    _, status = os.waitpid(process.pid, 0)
    process.returncode = 0                           # reaped here
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 11, stderr
    assert not os.WCOREDUMP(status)
    cores = [path.name for path in tmp_path.iterdir() if path.name.startswith("core")]
    if "(core dumped)" in stderr:            # the program's own core, where core_pattern says
        assert len(cores) <= 1, cores


def test_library_run_traced_returns_128_plus_the_signal():
    code = ("import sys; from regmap.trace import run_traced; "
            "sys.exit(run_traced(['sh', '-c', 'kill -TERM $$']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 128 + 15
    assert result.stderr == "regmap: sh killed by SIGTERM\n"


def test_quiet_says_nothing_and_still_dies_of_it():
    for flag in ("--quiet", "-q"):
        result = regmap("exec", flag, *kill_self("TERM"))
        assert (result.returncode, result.stderr) == (-15, "")


def test_json_exit_record_names_the_signal_and_regmap_dies_of_it():
    result = regmap("exec", "--json", "--stats", *kill_self("TERM"))
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert [record["event"] for record in records] == ["exit", "stats"]
    assert records[0]["signal"] == "SIGTERM" and records[0]["status"] == 143
    assert result.returncode == -15


# -- item 9: no noise for ordinary deaths -------------------------------------------------------

def test_sigint_is_silent_as_in_a_shell():
    result = regmap("exec", *kill_self("INT"))
    assert (result.returncode, result.stderr) == (-2, "")


@needs_bash
def test_sigpipe_in_a_pipeline_is_silent():
    command = " ".join(REGMAP) + " exec yes | head -1"
    result = subprocess.run(["bash", "-c", command + "; echo ${PIPESTATUS[0]} >&2"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.stdout == "y\n"
    assert result.stderr == f"{128 + 13}\n"          # nothing from regmap; bash says 141


@needs_bash
def test_a_shell_loop_stops_at_ctrl_c():
    """^C sends SIGINT to the whole foreground group: bash, regmap, the program.  bash leaves
    its loop only if the command it waited for died of SIGINT too (an exit status of 130
    means the command handled ^C, and the loop goes on)."""
    program = f"{' '.join(REGMAP)} exec sh -c 'echo ready; exec sleep 30'"
    loop = subprocess.Popen(["bash", "-c", f"for i in 1 2 3; do {program}; echo round $i; done"],
                            start_new_session=True, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert loop.stdout.readline() == "ready\n"
        os.killpg(loop.pid, signal.SIGINT)                # what the terminal does on ^C
        out, err = loop.communicate(timeout=60)
    finally:
        if loop.poll() is None:
            os.killpg(loop.pid, signal.SIGKILL)
            loop.wait()
    assert (loop.returncode, out, err) == (-signal.SIGINT, "", "")


# -- item 10: -o FILE and --output-fd N ----------------------------------------------------------

def noisy(faults) -> list[str]:
    """A program that writes to stderr, then makes a window access and exits 3."""
    return ["sh", "-c", f"echo from the program >&2; exec {faults} exit3"]


@pytest.mark.parametrize("flag", ["-o", "--output"])
def test_output_file_gets_clean_json(faults, tmp_path, flag):
    output = tmp_path / "t.jsonl"
    result = regmap("exec", "--json", flag, output, *noisy(faults))
    assert result.returncode == 3
    assert result.stderr == "from the program\n"
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["event"] for record in records] == ["access", "exit", "stats"]
    assert records[1]["code"] == 3


def test_output_fd(faults, tmp_path):
    output = tmp_path / "trace.txt"
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        result = regmap("exec", "--trace", "--stats", "--output-fd", fd, *noisy(faults),
                        pass_fds=(fd,))
    finally:
        os.close(fd)
    assert result.returncode == 3 and result.stderr == "from the program\n"
    lines = output.read_text().splitlines()
    assert re.fullmatch(r"regmap: \[\d+\] 0x[0-9a-f]+( main\+0x[0-9a-f]+)?  add rax,\[8\]  read  \[0x8\] 8 bytes = 0x\w+  \(rcx\)",
                        lines[0]), lines
    assert any(line.startswith("regmap: stats: 1 fault emulated") for line in lines)


@pytest.mark.parametrize("how", ["-o", "--output-fd"])
def test_the_program_does_not_inherit_the_output(tmp_path, how):
    output = tmp_path / "trace-output.txt"
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if how == "-o":
            os.close(fd)
            fd = -1
        where, passed = ([how, output], ()) if how == "-o" else ([how, fd], (fd,))
        result = regmap("exec", "--trace", *where, "ls", "-l", "/proc/self/fd", pass_fds=passed)
    finally:
        if fd >= 0:
            os.close(fd)
    assert result.returncode == 0, result.stderr
    assert "trace-output" not in result.stdout


def test_output_fd_2_leaves_the_programs_stderr_alone(faults):
    result = regmap("exec", "--trace", "--output-fd", 2, *noisy(faults))
    assert result.returncode == 3
    assert result.stderr.startswith("from the program\nregmap: [")


@pytest.mark.parametrize("args, says", [
    (["-o", "/no/such/dir/t.txt"], "regmap: -o /no/such/dir/t.txt: "),
    (["--output-fd", "97"], "regmap: --output-fd 97: "),
])
def test_an_unusable_output_is_one_line(args, says):
    result = regmap("exec", "--trace", *args, "true")
    assert result.returncode == 1
    assert result.stderr.startswith(says) and len(result.stderr.splitlines()) == 1


# -- item 11: --trace shows the signals passed on, and holes as holes ---------------------------

def test_trace_shows_a_signal_passed_on(faults):
    result = regmap("exec", "--trace", faults, "usr1")
    assert result.stdout == "got SIGUSR1\nafter 3\n" and result.returncode == 0
    passed = [line for line in result.stderr.splitlines() if "SIGUSR1" in line]
    assert len(passed) == 1, result.stderr
    assert re.fullmatch(r"regmap: \[(\d+)\] 0x[0-9a-f]+  SIGUSR1 delivered \(sent by pid \d+\)",
                        passed[0]), passed


def test_json_trace_shows_a_signal_passed_on(faults):
    result = regmap("exec", "--json", faults, "usr1")
    records = [json.loads(line) for line in result.stderr.splitlines()]
    signals = [record for record in records if record["event"] == "signal"]
    assert [record["signal"] for record in signals] == ["SIGUSR1"]
    assert records[-1]["event"] == "stats" and records[-1]["delivered"] == 1


def test_trace_names_a_hole_as_a_hole(faults):
    result = regmap("exec", "--trace", faults, "hole")
    delivered = [line for line in result.stderr.splitlines() if "delivered" in line]
    assert len(delivered) == 1, result.stderr
    assert "SIGSEGV delivered" in delivered[0] and "hole" in delivered[0]
    assert "not a window access" not in delivered[0]
