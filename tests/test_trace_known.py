"""Fast faults under the tracer: a site emulated N times gets a trampoline in the program, and its
later faults are sent there instead of being emulated (regmap.trace.known).

Every result is compared with the same run with every fault emulated (``--fast-faults 0``); the
stats say how many faults went to trampolines.
"""
from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_trace_trampoline_forms import driver, results, traced  # noqa: E402,F401 - a fixture
from tracer_host import CC, PROGRAMS, TRACED_PROGRAMS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
pytestmark = TRACED_PROGRAMS
N = 200


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    executable = tmp_path_factory.mktemp("known-sites") / "known_sites"
    subprocess.run([CC, "-O2", "-masm=intel", "-o", executable, PROGRAMS / "known_sites.c"],
                   check=True)
    return executable


def regmap_exec(program, *arguments, fast: int) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run([sys.executable, "-m", "regmap.cli", "exec", "--stats", "--json",
                           "--fast-faults", str(fast), program, *arguments],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    stats = [json.loads(line) for line in done.stderr.splitlines() if '"event":"stats"' in line]
    return done, stats[-1] if stats else {}


def test_a_site_run_with_the_stack_in_the_window_stays_emulated(program):
    done, stats = regmap_exec(program, "stack", str(N), fast=4)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == f"stack {5 * N}\n"
    assert stats["fast_faults"] == 0


@pytest.mark.parametrize("mode", ["loops", "fork", "exec"])
def test_planned_sites_give_what_emulation_gives(program, mode):
    emulated, plain = regmap_exec(program, mode, str(N), fast=0)
    fast, stats = regmap_exec(program, mode, str(N), fast=4)
    assert emulated.returncode == 0 == fast.returncode, fast.stderr[-2000:]
    assert sorted(fast.stdout.splitlines()) == sorted(emulated.stdout.splitlines())
    assert len(emulated.stdout.splitlines()) == {"loops": 1, "fork": 3, "exec": 2}[mode]
    assert plain["fast_faults"] == 0 and plain["faults"] == stats["faults"]
    # the addsd site after 4 faults, the register-addressed one at each of its two addresses
    assert stats["fast_faults"] >= 2 * N - 12


def test_a_divide_error_inside_a_trampoline_is_the_site_s(program):
    emulated, _ = regmap_exec(program, "divide", str(N), fast=0)
    fast, stats = regmap_exec(program, "divide", str(N), fast=4)
    assert emulated.stdout == fast.stdout == f"{1000 // 7}\n"
    assert emulated.returncode == fast.returncode == -signal.SIGFPE     # regmap dies of it too
    assert "divide" in fast.stderr


def test_every_trampoline_form_sent_there_by_the_tracer_runs_as_emulated(driver):  # noqa: F811
    executable, directory, chosen = driver
    plain, plain_stats = traced(executable, directory, "emulated")            # --json: traced
    fast, stats = traced(executable, directory, "fast", "--stats", "--fast-faults", "1")
    sites, emulated = results(plain, len(chosen))
    fast_sites, through = results(fast, len(chosen))
    assert fast_sites == sites
    wrong = [(chosen[i].instruction, j) for i in range(len(chosen)) for j in range(len(emulated[i]))
             if through[i][j] != emulated[i][j]]
    print(f"{len(chosen)} forms, {stats['fast_faults']} of {stats['faults']} faults sent to "
          "trampolines by the tracer")
    assert not wrong, f"{len(wrong)} differ: {wrong[:20]}"
    assert plain_stats.get("fast_faults", 0) == 0
    assert stats["fast_faults"] > len(chosen)


def test_a_signal_that_comes_while_a_trampoline_is_placed_is_not_lost(program, capfd, monkeypatch):
    """The tracer maps the trampoline's page by having the stopped thread make an mmap, single-
    stepped: a signal for the thread stops it for delivery first.  It must reach the program
    afterwards (here one SIGUSR1, sent at the very moment of the step)."""
    import os

    from regmap.trace import ptrace, trace_program
    real, sent = ptrace.ptrace, []

    def stepping(request, tid, *rest):
        if request == ptrace.PTRACE_SINGLESTEP and not sent:
            sent.append(tid)
            os.kill(tid, signal.SIGUSR1)        # (a one-thread program: its tid is its pid)
        return real(request, tid, *rest)
    monkeypatch.setattr(ptrace, "ptrace", stepping)
    end = trace_program([str(program), "usr1", str(N)], fast_faults=4)
    out = capfd.readouterr().out
    assert end.status == 0 and sent, out
    bits = int.from_bytes(struct.pack("<d", 1.5 * N), "little")     # N times 1.5, as rcx holds
    assert out.splitlines()[-1] == f"addsd {bits:x} usr1 1"
