"""regmap exec --translate: hot sites of traced programs rewritten into their register forms."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tracer_host import CC, TRACED_PROGRAMS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "programs"

pytestmark = TRACED_PROGRAMS

LOOP = r"""
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000;
    unsigned long rax = 0, rcx = 3;
    for (long i = 0; i < n; i++)
        __asm__ volatile ("add 8, %0" : "+a" (rax) : "c" (rcx) : "cc");
    printf("%lu\n", rax);
    return rax != 3 * (unsigned long)n;
}
"""

# The parent's site is hot before it forks: the child runs the rewritten code without a fault;
# an exec'd copy of the program starts with the original code and its own records.
FORK = r"""
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
__attribute__((noinline)) static unsigned long add(unsigned long a, unsigned long c) {
    __asm__ volatile ("addq 8, %0" : "+a" (a) : "c" (c) : "cc");
    return a;
}
static unsigned long sum(unsigned long c) {
    unsigned long s = 0;
    for (int i = 0; i < 10; i++)
        s = add(s, c);
    return s;
}
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "exec") == 0)
        return (int)sum(1);                                  /* 10 */
    unsigned long mine = sum(2);                             /* 20: the site is now hot */
    fflush(stdout);
    int status, execed;
    pid_t child = fork();
    if (child == 0)
        _exit((int)sum(3));                                  /* 30 */
    waitpid(child, &status, 0);
    pid_t other = fork();
    if (other == 0) {
        execl("/proc/self/exe", argv[0], "exec", (char *)NULL);
        _exit(99);
    }
    waitpid(other, &execed, 0);
    printf("parent %lu child %d exec %d\n", mine, WEXITSTATUS(status), WEXITSTATUS(execed));
    return 0;
}
"""


def regmap(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regmap.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    directory = tmp_path_factory.mktemp("translate-programs")
    (directory / "loop.c").write_text(LOOP)
    (directory / "hot_fork.c").write_text(FORK)
    executables = {}
    for name, source in (("loop", directory / "loop.c"), ("fork", PROGRAMS / "fork.c"),
                         ("threads", PROGRAMS / "threads.c"), ("hot_fork", directory / "hot_fork.c")):
        executable = directory / name
        subprocess.run([CC, "-O2", "-pthread", "-fno-delete-null-pointer-checks", "-o",
                        executable, source], check=True)
        executables[name] = executable
    return executables


def stats_record(stderr: str) -> dict:
    return next(json.loads(line) for line in stderr.splitlines() if '"event":"stats"' in line)


def test_a_hot_site_is_translated_and_reported(built):
    digest = hashlib.sha256(built["loop"].read_bytes()).hexdigest()
    result = regmap("exec", "--translate=3", "--json", built["loop"], 100_000)
    assert result.stdout == "300000\n" and result.returncode == 0, result.stderr
    stats = stats_record(result.stderr)
    assert stats["faults"] == 3
    (site,) = stats["translated"]
    assert (site["instruction"], site["translation"]) == ("add rax,[8]", "add rax,rcx")
    events = [json.loads(line) for line in result.stderr.splitlines()]
    (translate,) = [e for e in events if e["event"] == "translate"]
    assert translate["old_bytes"] == "4803042508000000"
    assert translate["new_bytes"].endswith("4803c1") and len(translate["new_bytes"]) == 16
    # the program's text is a read-only file mapping: written through a private copy
    assert hashlib.sha256(built["loop"].read_bytes()).hexdigest() == digest


def test_trace_and_stats_text(built):
    result = regmap("exec", "--translate", "--trace", "--stats", built["loop"], 10)
    assert result.stdout == "30\n"
    assert "translated to add rax,rcx" in result.stderr
    assert "regmap: stats: 1 site translated" in result.stderr
    assert "add rax,[8]  ->  add rax,rcx" in result.stderr


def test_without_the_option_every_access_faults(built):
    result = regmap("exec", "--json", built["loop"], 50)
    assert stats_record(result.stderr)["faults"] == 50
    assert stats_record(result.stderr)["translated"] == []


def test_a_multi_threaded_program_is_translated_and_exact(built):
    """Its other threads are stopped while a site is written (trace/quiesce.py)."""
    rounds = 300
    result = regmap("exec", "--translate=1", "--json", built["threads"], rounds)
    assert result.stdout.splitlines() == [
        f"thread {i} rax {rounds * (i + 1)} rdi {rounds * (i + 1)}" for i in range(4)]
    assert result.returncode == 0
    stats = stats_record(result.stderr)
    assert {site["translation"] for site in stats["translated"]} == {"add rax,rcx", "mov rdi,rax"}
    assert stats["faults"] < rounds      # 2 * 4 * rounds accesses


def test_fork_vfork_and_exec_under_translate(built):
    result = regmap("exec", "--translate=1", built["fork"])
    assert result.stdout.splitlines() == ["parent 12", "child 42", "exec 7"]
    assert result.returncode == 0, result.stderr


def test_a_forked_child_runs_the_translated_site_and_an_exec_starts_afresh(built):
    result = regmap("exec", "--translate=3", "--json", built["hot_fork"])
    assert result.stdout == "parent 20 child 30 exec 10\n", result.stderr
    stats = stats_record(result.stderr)
    assert stats["faults"] == 6                  # 3 in the parent, 0 in the child, 3 after exec
    assert len(stats["translated"]) == 2


def test_fork_copies_the_records_and_exec_drops_them(built):
    """The Patcher's bookkeeping, seen from inside the tracer."""
    from regmap.layout import load_layout
    from regmap.trace.patch import Patcher
    from regmap.trace.report import Reporter
    from regmap.trace.tracer import Tracer
    from regmap.x86 import Emulator

    layout = load_layout()
    tracer = Tracer(Emulator(layout), Reporter(io.StringIO()))
    tracer.patcher = patcher = Patcher(layout, 3, tracer.groups)
    read_fd, write_fd = os.pipe()
    saved = os.dup(1)
    os.dup2(write_fd, 1)
    try:
        main = tracer.spawn(str(built["hot_fork"]), [str(built["hot_fork"])])
        os.dup2(saved, 1)
        status = tracer.wait()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(write_fd)
    with os.fdopen(read_fd) as output:
        assert output.read() == "parent 20 child 30 exec 10\n"
    assert os.waitstatus_to_exitcode(status) == 0
    records = patcher.patches
    (site, translation), = records.pop(main).items()
    assert translation.new_text == "add rax,rcx"
    fork_child, exec_child = sorted(records)
    assert records[fork_child] == {site: translation}           # copied at the fork
    assert records[fork_child][site] is translation
    (exec_translation,) = records[exec_child].values()         # dropped at exec, then its own
    assert exec_translation is not translation and exec_translation.new_text == "add rax,rcx"
