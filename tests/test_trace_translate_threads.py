"""regmap exec --translate in a multi-threaded process: the other threads are stopped for the write.

`programs/hot_threads.c` runs four threads through ``add rax, [8]`` (rewritten in place) and
``mov rax, [4]`` (a trampoline) at the same time, and checks every value in C; with "parked",
threads sit in ``read`` on a pipe, in ``nanosleep`` and in a user-mode spin while the sites are
rewritten, and must come out of them as without regmap.  Every run is compared with the same
program untranslated, whose window accesses all fault and are emulated."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tracer_host import CC, TRACED_PROGRAMS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = Path(__file__).resolve().parent / "programs" / "hot_threads.c"
ROUNDS = 2000

pytestmark = TRACED_PROGRAMS


def regmap(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regmap.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    executable = tmp_path_factory.mktemp("hot-threads") / "hot_threads"
    subprocess.run([CC, "-O2", "-pthread", "-fno-delete-null-pointer-checks", "-o", executable,
                    PROGRAM], check=True)
    return executable


def stats_record(stderr: str) -> dict:
    return next(json.loads(line) for line in stderr.splitlines() if '"event":"stats"' in line)


def translated_and_untranslated(program, *args, faults=4 * ROUNDS * 2) -> tuple[dict, str]:
    plain = regmap("exec", "--json", program, ROUNDS, *args)
    hot = regmap("exec", "--translate=3", "--json", program, ROUNDS, *args)
    assert hot.returncode == plain.returncode == 0, hot.stdout + hot.stderr
    assert hot.stdout == plain.stdout
    assert stats_record(plain.stderr)["faults"] == faults
    return stats_record(hot.stderr), hot.stdout


def test_four_threads_get_their_sites_translated_in_place_and_through_a_trampoline(program):
    stats, out = translated_and_untranslated(program)
    assert out.splitlines() == [f"thread {i} sum {ROUNDS * (i + 1)} wrong 0" for i in range(4)]
    kinds = {site["instruction"]: site["kind"] for site in stats["translated"]}
    assert kinds == {"add rax,[8]": "in place", "mov rax,[4]": "trampoline"}
    assert stats["faults"] < ROUNDS      # a few per site: those before the rewrite


def test_threads_in_blocking_calls_and_spinning_come_out_as_without_regmap(program):
    stats, out = translated_and_untranslated(program, "parked")
    assert out.splitlines()[4:] == ["read 5 errno 0 got hello", "nanosleep 0 slept all 1",
                                    "spinner spun"]
    assert len(stats["translated"]) == 2 and stats["faults"] < ROUNDS


def test_a_fork_of_a_multi_threaded_process_keeps_its_translations(program):
    stats, out = translated_and_untranslated(program, "fork", faults=4 * ROUNDS * 2 + 2 * ROUNDS)
    assert out.splitlines()[4:] == ["child exact"]
    assert len(stats["translated"]) == 2
    assert stats["faults"] < ROUNDS      # the child's 2 * ROUNDS accesses do not fault


def test_a_thread_parked_inside_the_sites_bytes_keeps_it_from_being_rewritten(tmp_path):
    """programs/inside_site.c: a thread blocked in read() at rip = site + 10 (the site's
    immediate is ``syscall; jmp +0``); alone, the same site is rewritten at its third fault."""
    executable = tmp_path / "inside_site"
    subprocess.run([CC, "-O2", "-pthread", "-fno-delete-null-pointer-checks", "-o", executable,
                    PROGRAM.with_name("inside_site.c")], check=True)
    alone = regmap("exec", "--translate=3", "--json", executable, "alone")
    assert (alone.returncode, alone.stdout) == (0, "rcx 0xeb050f\n"), alone.stderr
    (site,) = stats_record(alone.stderr)["translated"]
    assert site["translation"] == "mov rcx,0EB050Fh"
    parked = regmap("exec", "--translate=3", "--json", executable)
    assert (parked.returncode, parked.stdout) == (0, "rcx 0xeb050f\nread 1 byte x\n"), parked.stderr
    stats = stats_record(parked.stderr)
    assert stats["translated"] == [] and stats["faults"] == 10


def test_inside_means_strictly_inside():
    from regmap.trace.quiesce import inside
    assert inside(0x1000, 8, [0x2000, 0x1001])
    assert inside(0x1000, 8, [0x1007])
    assert not inside(0x1000, 8, [0x1000, 0x1008, 0xfff])   # at the site or after it: whole
    assert not inside(0x1000, 8, [])
