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
import zlib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_runtime_trampoline import HANDLER, RECORDED  # noqa: E402
from test_trampoline_forms import (REASON, STATE_SIZE, STATES, drawn_states, forms,  # noqa: E402
                                   trial_source)
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
#include <sys/mman.h>
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
#ifdef BUFFER               /* real memory at a fixed address, for the register addresses */
    unsigned char *memory = mmap((void *)MEMORY, BUFFER, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (memory != (void *)MEMORY)
        return 2;
#endif
    size_t size = (size_t)COUNT * STATES * STATE_SIZE;
    char *states = malloc(size);
    unsigned char *state = aligned_alloc(64, (STATE_SIZE + 63) / 64 * 64);
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    if (!states || !state || !in || !out || fread(states, 1, size, in) != size)
        return 2;
    fwrite(sites, sizeof sites[0], COUNT, out);
    for (long i = 0; i < COUNT; i++)        /* hot: from each of the first HOT_STATES states */
        for (long j = 0; j < HOT_STATES; j++)
            for (int k = 0; k < HOT_RUNS; k++) {
                memcpy(state, states + (i * STATES + j) * STATE_SIZE, STATE_SIZE);
                memset(record, 0, RECORD_SIZE);
                trials[i](state);
            }
    for (long i = 0; i < COUNT; i++)
        for (long j = 0; j < STATES; j++) {
            memcpy(state, states + (i * STATES + j) * STATE_SIZE, STATE_SIZE);
#ifdef BUFFER
            for (int b = 0; b < BUFFER; b++)
                memory[b] = b;
#endif
            memset(record, 0, RECORD_SIZE);
            long faulted = trials[i](state);
            fputc(faulted != 0, out);
            fwrite(faulted ? (void *)record : (void *)state, 1, faulted ? RECORD_SIZE : STATE_SIZE, out);
#ifdef BUFFER
            fwrite(memory, 1, BUFFER, out);
#endif
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


def build(directory: Path, chosen: list, states: list[list[bytes]], **defines) -> Path:
    """The driver with a trial a form of `chosen`, and the file of `states` (as many a form) it
    reads; `defines`: its other macros (HOT_STATES, HOT_RUNS; BUFFER and MEMORY for a buffer)."""
    per_form, = {len(form_states) for form_states in states}
    (directory / "trials.s").write_text(
        ".intel_syntax noprefix\n.text\n" + HANDLER
        + "".join(trial_source(i, f.bytes) for i, f in enumerate(chosen)) + tables(len(chosen))
        + '.section .note.GNU-stack,"",@progbits\n')
    (directory / "driver.c").write_text(DRIVER)
    executable = directory / "driver"
    subprocess.run([CC, "-O2", f"-DCOUNT={len(chosen)}", f"-DSTATES={per_form}",
                    f"-DSTATE_SIZE={STATE_SIZE}", f"-DRECORD_SIZE={RECORD_SIZE}",
                    *(f"-D{name}={value}" for name, value in defines.items()), "-o",
                    executable, directory / "driver.c", directory / "trials.s"], check=True)
    (directory / "states").write_bytes(b"".join(b"".join(s) for s in states))
    return executable


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    chosen = forms(random.Random(FORM_SEED))
    states = drawn_states(STATE_SEED, chosen, STATES)
    directory = tmp_path_factory.mktemp("traced-trampoline-forms")
    # hot: a pass over every state, as the in-process test does
    return build(directory, chosen, states, HOT_STATES=STATES, HOT_RUNS=1), directory, chosen


def traced(executable, directory: Path, name: str, *options) -> tuple[bytes, dict]:
    # Every run's output path has the same length: with address randomization off, the stack the
    # trials run on (and so rsp, which the records and some forms' results hold) moves with the
    # length of the program's arguments.
    output = directory / f"run-{zlib.crc32(name.encode()):08x}"
    result = subprocess.run([sys.executable, "-m", "regmap.cli", "exec", "--json", *options,
                             executable, directory / "states", output],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    stats = next(json.loads(line) for line in result.stderr.splitlines()
                 if '"event":"stats"' in line)
    return output.read_bytes(), stats


def results(data: bytes, count: int, states: int = STATES,
            buffer: int = 0) -> tuple[list[int], list[list[bytes]]]:
    """The site addresses and, per form and state, the outcome after the hot runs (and the
    buffer, of `buffer` bytes)."""
    sites = [int.from_bytes(data[8 * i:8 * i + 8], "little") for i in range(count)]
    at, outcomes = 8 * count, []
    for _ in range(count):
        row = []
        for _ in range(states):
            size = (RECORD_SIZE if data[at] else STATE_SIZE) + buffer
            row.append(data[at:at + 1 + size])
            at += 1 + size
        outcomes.append(row)
    assert at == len(data)
    return sites, outcomes


def both_runs(executable, directory: Path, count: int, **shape) -> tuple:
    """The program run with every window access emulated, then with ``--translate=2``: the sites,
    the outcomes of each run and its stats (`shape`: that of `results`)."""
    plain, plain_stats = traced(executable, directory, "emulated")
    hot, stats = traced(executable, directory, "translated", "--translate=2")
    sites, emulated = results(plain, count, **shape)
    hot_sites, through = results(hot, count, **shape)
    assert hot_sites == sites
    return sites, emulated, through, plain_stats, stats


def test_every_trampoline_form_runs_traced_as_emulated(driver):
    executable, directory, chosen = driver
    sites, emulated, through, plain_stats, stats = both_runs(executable, directory, len(chosen))
    assert plain_stats["translated"] == []
    kinds = {site["rip"]: site["kind"] for site in stats["translated"]}
    translated = [i for i, site in enumerate(sites) if kinds.get(site) == "trampoline"]
    wrong = [(chosen[i].instruction, j) for i in range(len(chosen)) for j in range(STATES)
             if through[i][j] != emulated[i][j]]
    print(f"{len(chosen)} forms with a trampoline drawn, {len(translated)} run through it traced")
    assert not wrong, f"{len(wrong)} differ: {wrong[:20]}"
    assert len(translated) > 100
    assert stats["faults"] < plain_stats["faults"]
