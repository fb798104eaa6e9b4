"""Every supported form that gets a trampoline, run through it under `regmap exec --translate`.

The traced twin of tests/test_trampoline_forms.py: the same forms (the same draw), the same
trials in assembly and the same random states, linked into one program with a small C driver that
installs the assembly handler for SIGSEGV, SIGBUS, SIGFPE and SIGILL, runs every trial from every
state twice (the first pass makes each site hot) and writes what the second pass gave: the whole
state after the instruction, or the handler's record (signal, si_code, si_addr, registers, rip).
The program runs under `regmap exec` with every window access emulated, and again with
``--translate=2``, where the second pass runs through the trampolines the tracer placed; the two
outputs must be equal.  The driver turns address randomization off for itself (personality, then
exec), so the addresses in the records are the same in both runs.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_runtime_trampoline import HANDLER, RECORDED  # noqa: E402
from test_trampoline_forms import (REASON, STATE_SIZE, STATES, _default_fx, forms,  # noqa: E402
                                   random_state, trial_source)
from tracer_host import CC, TRACED_PROGRAMS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECORD_SIZE = 8 * (3 + RECORDED)
FORM_SEED, STATE_SEED = 17, 29       # those of test_trampoline_forms: the same forms and states

pytestmark = [*TRACED_PROGRAMS, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

DRIVER = r"""
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <unistd.h>

extern char record[];
extern void catcher(int, siginfo_t *, void *);
typedef long (*trial)(void *);
extern trial trials[];
extern char *sites[];

int main(int argc, char **argv) {
    int persona = personality(0xffffffff);
    if (!(persona & ADDR_NO_RANDOMIZE)) {      /* the same addresses in every run */
        personality(persona | ADDR_NO_RANDOMIZE);
        execv("/proc/self/exe", argv);
        return 3;
    }
    if (argc != 3)
        return 2;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = catcher;
    action.sa_flags = SA_SIGINFO;
    int signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};
    for (int i = 0; i < 4; i++)
        sigaction(signals[i], &action, NULL);
    size_t size = (size_t)COUNT * STATES * STATE_SIZE;
    char *states = malloc(size);
    unsigned char *state = aligned_alloc(64, (STATE_SIZE + 63) / 64 * 64);
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    if (!states || !state || !in || !out || fread(states, 1, size, in) != size)
        return 2;
    fwrite(sites, sizeof sites[0], COUNT, out);
    for (int pass = 0; pass < 2; pass++)
        for (long i = 0; i < COUNT; i++)
            for (long j = 0; j < STATES; j++) {
                memcpy(state, states + (i * STATES + j) * STATE_SIZE, STATE_SIZE);
                memset(record, 0, RECORD_SIZE);
                long faulted = trials[i](state);
                if (pass) {
                    fputc(faulted != 0, out);
                    fwrite(faulted ? (void *)record : (void *)state, 1,
                           faulted ? RECORD_SIZE : STATE_SIZE, out);
                }
            }
    return fclose(out) != 0;
}
"""


def tables(count: int) -> str:
    """The trials and their sites, as arrays the driver indexes."""
    return (".data\n.balign 8\n.globl trials\ntrials:\n"
            + "".join(f"    .quad trial_{i}\n" for i in range(count))
            + ".globl sites\nsites:\n" + "".join(f"    .quad site_{i}\n" for i in range(count))
            + ".text\n")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    chosen = forms(random.Random(FORM_SEED))
    rng = random.Random(STATE_SEED)
    fx = _default_fx()
    states = [[random_state(rng, form, fx) for _ in range(STATES)] for form in chosen]
    directory = tmp_path_factory.mktemp("traced-trampoline-forms")
    (directory / "trials.s").write_text(
        ".intel_syntax noprefix\n.text\n" + HANDLER
        + "".join(trial_source(i, f.bytes) for i, f in enumerate(chosen)) + tables(len(chosen))
        + '.section .note.GNU-stack,"",@progbits\n')
    (directory / "driver.c").write_text(DRIVER)
    executable = directory / "driver"
    subprocess.run([CC, "-O2", f"-DCOUNT={len(chosen)}", f"-DSTATES={STATES}",
                    f"-DSTATE_SIZE={STATE_SIZE}", f"-DRECORD_SIZE={RECORD_SIZE}", "-o",
                    executable, directory / "driver.c", directory / "trials.s"], check=True)
    (directory / "states").write_bytes(b"".join(b"".join(s) for s in states))
    return executable, directory, chosen


def traced(executable, directory: Path, name: str, *options) -> tuple[bytes, dict]:
    output = directory / name
    result = subprocess.run([sys.executable, "-m", "regmap.cli", "exec", "--json", *options,
                             executable, directory / "states", output],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    stats = next(json.loads(line) for line in result.stderr.splitlines()
                 if '"event":"stats"' in line)
    return output.read_bytes(), stats


def results(data: bytes, count: int) -> tuple[list[int], list[list[bytes]]]:
    """The site addresses and, per form and state, the second pass's outcome."""
    sites = [int.from_bytes(data[8 * i:8 * i + 8], "little") for i in range(count)]
    at, outcomes = 8 * count, []
    for _ in range(count):
        row = []
        for _ in range(STATES):
            size = RECORD_SIZE if data[at] else STATE_SIZE
            row.append(data[at:at + 1 + size])
            at += 1 + size
        outcomes.append(row)
    assert at == len(data)
    return sites, outcomes


def test_every_trampoline_form_runs_traced_as_emulated(driver):
    executable, directory, chosen = driver
    plain, plain_stats = traced(executable, directory, "emulated")
    hot, stats = traced(executable, directory, "translated", "--translate=2")
    sites, emulated = results(plain, len(chosen))
    hot_sites, through = results(hot, len(chosen))
    assert hot_sites == sites
    assert plain_stats["translated"] == []
    kinds = {site["rip"]: site["kind"] for site in stats["translated"]}
    translated = [i for i, site in enumerate(sites) if kinds.get(site) == "trampoline"]
    wrong = [(chosen[i].instruction, j) for i in range(len(chosen)) for j in range(STATES)
             if through[i][j] != emulated[i][j]]
    print(f"{len(chosen)} forms with a trampoline drawn, {len(translated)} run through it traced")
    assert not wrong, f"{len(wrong)} differ: {wrong[:20]}"
    assert len(translated) > 100
    assert stats["faults"] < plain_stats["faults"]
