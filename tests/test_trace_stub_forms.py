"""Register-addressed sites through their stubs under `regmap exec --translate`, against the emulated run.

The traced twin of tests/test_stub_forms.py: the same forms and the same kinds of states ((a) the
window address the site is made hot with, (b) other window addresses, (c) real memory, (d) a window
hole, the page after the window, a non-canonical address), in one program with a C driver (that of
tests/test_trace_trampoline_forms.py, changed): it runs each trial twice from state (a), so that
with ``--translate=2`` the tracer makes the site a ``jmp`` to its stub, then every trial from every
state, writing the state after the instruction or the handler's record, and the real-memory buffer
(mapped at a fixed address).  The program runs under `regmap exec` with every window access
emulated, and with ``--translate=2``; the outputs must be equal.
"""
from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_runtime_trampoline import RECORDED  # noqa: E402
from test_stub_forms import HANDLER, cases, forms  # noqa: E402
from test_trace_trampoline_forms import tables, traced  # noqa: E402
from test_trampoline_forms import REASON, STATE_SIZE, _default_fx, trial_source  # noqa: E402
from tracer_host import CC, TRACED_PROGRAMS  # noqa: E402

RECORD_SIZE = 8 * (3 + RECORDED)
STATES = 8                    # per form: those of test_stub_forms.cases, (a) again to fill
BUFFER, MEMORY = 4096, 0x2000_0000

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
    unsigned char *memory = mmap((void *)MEMORY, BUFFER, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    size_t size = (size_t)COUNT * STATES * STATE_SIZE;
    char *states = malloc(size);
    unsigned char *state = aligned_alloc(64, (STATE_SIZE + 63) / 64 * 64);
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    if (memory != (void *)MEMORY || !states || !state || !in || !out || fread(states, 1, size, in) != size)
        return 2;
    fwrite(sites, sizeof sites[0], COUNT, out);
    for (long i = 0; i < COUNT; i++)        /* hot with state (a) */
        for (int k = 0; k < 2; k++) {
            memcpy(state, states + i * STATES * STATE_SIZE, STATE_SIZE);
            trials[i](state);
        }
    for (long i = 0; i < COUNT; i++)
        for (long j = 0; j < STATES; j++) {
            memcpy(state, states + (i * STATES + j) * STATE_SIZE, STATE_SIZE);
            for (int b = 0; b < BUFFER; b++)
                memory[b] = b;
            memset(record, 0, RECORD_SIZE);
            long faulted = trials[i](state);
            fputc(faulted != 0, out);
            fwrite(faulted ? (void *)record : (void *)state, 1, faulted ? RECORD_SIZE : STATE_SIZE, out);
            fwrite(memory, 1, BUFFER, out);
        }
    return fclose(out) != 0;
}
"""


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    chosen = forms(random.Random(47))
    rng = random.Random(59)
    fx = _default_fx()
    states = []
    for form in chosen:
        drawn = cases(rng, form, fx, MEMORY + 64)
        states.append((drawn + [drawn[0]] * STATES)[:STATES])
    directory = tmp_path_factory.mktemp("traced-stub-forms")
    (directory / "trials.s").write_text(
        ".intel_syntax noprefix\n.text\n" + HANDLER
        + "".join(trial_source(i, f.bytes) for i, f in enumerate(chosen)) + tables(len(chosen))
        + '.section .note.GNU-stack,"",@progbits\n')
    (directory / "driver.c").write_text(DRIVER)
    executable = directory / "driver"
    subprocess.run([CC, "-O2", f"-DCOUNT={len(chosen)}", f"-DSTATES={STATES}",
                    f"-DSTATE_SIZE={STATE_SIZE}", f"-DRECORD_SIZE={RECORD_SIZE}",
                    f"-DBUFFER={BUFFER}", f"-DMEMORY={MEMORY:#x}", "-o",
                    executable, directory / "driver.c", directory / "trials.s"], check=True)
    (directory / "states").write_bytes(b"".join(b"".join(s) for s in states))
    return executable, directory, chosen


def results(data: bytes, count: int) -> tuple[list[int], list[list[bytes]]]:
    """The site addresses and, per form and state, the outcome and the buffer."""
    sites = [int.from_bytes(data[8 * i:8 * i + 8], "little") for i in range(count)]
    at, outcomes = 8 * count, []
    for _ in range(count):
        row = []
        for _ in range(STATES):
            size = (RECORD_SIZE if data[at] else STATE_SIZE) + BUFFER
            row.append(data[at:at + 1 + size])
            at += 1 + size
        outcomes.append(row)
    assert at == len(data)
    return sites, outcomes


def test_every_register_addressed_form_through_its_stub_runs_traced_as_emulated(driver):
    executable, directory, chosen = driver
    plain, plain_stats = traced(executable, directory, "emulated")
    hot, stats = traced(executable, directory, "translated", "--translate=2")
    sites, emulated = results(plain, len(chosen))
    hot_sites, through = results(hot, len(chosen))
    assert hot_sites == sites
    kinds = {site["rip"]: site["kind"] for site in stats["translated"]}
    stubbed = [i for i, site in enumerate(sites) if kinds.get(site) == "register-addressed"]
    wrong = [(chosen[i].instruction, chosen[i].address_shape, j) for i in range(len(chosen))
             for j in range(STATES) if through[i][j] != emulated[i][j]]
    print(f"{len(chosen)} register-addressed forms drawn, {len(stubbed)} run through their stubs traced")
    assert not wrong, f"{len(wrong)} differ: {wrong[:20]}"
    assert len(stubbed) > 100
    assert stats["faults"] < plain_stats["faults"]
