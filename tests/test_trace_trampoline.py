"""regmap exec --translate: hot sites with no register form run through trampolines in the tracee.

`programs/trampoline_div.c` divides by ``qword [0xc]`` (rcx[63:32] . rdx[31:0]: no register
form), makes the site hot, then divides by zero there: the program's SIGFPE handler reports
the signal, its si_code and si_addr, the rip and r11 (the trampoline's base register) of its
ucontext.  Every run is compared with the same program untranslated, whose window accesses
all fault and are emulated.  Each test runs twice: with that site, and with the site
register-addressed (``div qword [rsi + disp32 12]``, rsi = 0), which becomes a jmp to a stub
(`regmap.x86.stub`) that sends it to its window trampoline."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tracer_host import CC, TRACED_PROGRAMS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = Path(__file__).resolve().parent / "programs" / "trampoline_div.c"

pytestmark = TRACED_PROGRAMS


def regmap(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regmap.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


# the site's instruction as `regmap exec --json` shows it, and the kind of its translation
SITES = {"constant": ("div qword ptr [0Ch]", "trampoline"),
         "register": ("div qword ptr [rsi+0Ch]", "register-addressed")}   # (-DREGISTER_ADDRESSED)


@pytest.fixture(scope="module", params=sorted(SITES))
def program(tmp_path_factory, request):
    executable = tmp_path_factory.mktemp("trampoline") / "div"
    defines = ["-DREGISTER_ADDRESSED"] if request.param == "register" else []
    subprocess.run([CC, "-O2", "-pthread", *defines, "-o", executable, PROGRAM], check=True)
    return Program(executable, SITES[request.param])


class Program(str):
    """The executable's path, and `SITES`' entry for its site."""

    def __new__(cls, path, site: tuple[str, str]):
        program = super().__new__(cls, path)
        program.site = site
        return program


def stats_record(stderr: str) -> dict:
    return next(json.loads(line) for line in stderr.splitlines() if '"event":"stats"' in line)


def translated_and_untranslated(program, mode: str) -> tuple[dict, str]:
    plain = regmap("exec", program, mode)
    hot = regmap("exec", "--translate=3", "--json", program, mode)
    assert hot.returncode == plain.returncode == 0, hot.stderr
    assert hot.stdout == plain.stdout
    return stats_record(hot.stderr), hot.stdout


SIGNAL_AT_SITE = "signal 8 code 1 addr_is_site 1 rip_is_site 1 r11_kept 1 rcx 0"


def test_a_hot_site_runs_through_its_trampoline_and_a_fault_there_is_the_sites(program):
    stats, out = translated_and_untranslated(program, "")
    assert out.splitlines() == ["hot 5020", SIGNAL_AT_SITE, "parent 2005"]
    assert stats["faults"] == 3              # the rest ran through the trampoline
    (site,) = stats["translated"]
    assert (site["instruction"], site["kind"]) == program.site


def test_threads_created_after_the_translation_share_the_trampoline(program):
    stats, out = translated_and_untranslated(program, "threads")

    assert [line.split()[0] for line in out.splitlines()] == \
        ["hot", "signal", "thread", "thread", "thread", "thread", "parent"]
    assert stats["faults"] == 3              # 4000 divisions of the threads: none faulted


def test_threads_running_while_the_site_is_rewritten(program):
    stats, out = translated_and_untranslated(program, "busy")
    assert [line.split()[0] for line in out.splitlines()] == \
        ["hot", "signal", "thread", "thread", "thread", "thread", "parent"]
    assert out.splitlines()[1] == SIGNAL_AT_SITE
    assert [site["kind"] for site in stats["translated"]] == [program.site[1]]
    assert stats["faults"] < 4000            # 4010 divisions: those before the rewrite fault


def test_a_vfork_child_faulting_in_its_parents_trampoline_gets_the_sites_signal(program):
    stats, out = translated_and_untranslated(program, "vfork")
    assert out.splitlines() == ["hot 5020", SIGNAL_AT_SITE, SIGNAL_AT_SITE, "parent 2005"]
    assert stats["faults"] == 3


def test_a_fork_keeps_the_trampolines_and_an_exec_drops_them(program):
    stats, out = translated_and_untranslated(program, "fork")
    assert out.splitlines() == ["hot 5020", SIGNAL_AT_SITE, "child 3345", SIGNAL_AT_SITE,
                                "exec 10045", SIGNAL_AT_SITE, "parent 2005"]
    assert stats["faults"] == 6              # 3 in the parent, 0 in the child, 3 after exec
    assert [site["kind"] for site in stats["translated"]] == [program.site[1]] * 2
