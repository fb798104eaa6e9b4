"""RF, the resume flag: an emulated instruction that completes clears it, as the CPU does.

The kernel sets RF (bit 16) in the rflags it saves for a faulting instruction,
so that returning to the instruction does not trigger an instruction
breakpoint on it again.  The CPU clears RF once an instruction completes.  An
emulated instruction completes when regmap moves rip past it: left set, RF
would suppress a hardware breakpoint on the *next* instruction.  A ``rep``
string instruction stopped part-way by a fault is not complete: it keeps RF.

The native tests set a hardware execute breakpoint (perf_event_open) on the
instruction after a window access and count its hits, with the access going
to the window under regmap and to real memory natively: the counts must agree.
"""
from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import why_not_native  # noqa: E402

import regmap  # noqa: E402
from regmap.pure import PureMachine  # noqa: E402
from regmap.x86 import Emulator  # noqa: E402

RF = 1 << 16
REASON = why_not_native()
native = pytest.mark.skipif(REASON is not None, reason=REASON or "")
MEMORY = 0x10000

# (code, registers): window accesses of the families with their own commit or fast path
FORMS = {
    "mov rcx, [8]": ("48 8b 0c 25 08 00 00 00", {}),
    "add rax, [8]": ("48 03 04 25 08 00 00 00", {"rax": 5, "rcx": 7}),
    "xadd [8], rax": ("48 0f c1 04 25 08 00 00 00", {"rax": 5, "rcx": 7}),
    "cmpxchg [8], rdx": ("48 0f b1 14 25 08 00 00 00", {"rax": 7, "rcx": 7, "rdx": 1}),
    "push qword [8]": ("ff 34 25 08 00 00 00", {"rsp": MEMORY + 0x800}),
    "pop qword [0x10]": ("8f 04 25 10 00 00 00", {"rsp": MEMORY + 0x800}),
    "rep movsb": ("f3 a4", {"rcx": 16, "rsi": 0, "rdi": MEMORY}),
    "movdqu xmm0, [0x100]": ("f3 0f 6f 04 25 00 01 00 00", {}),
    "shl qword [8], 3": ("48 c1 24 25 08 00 00 00 03", {"rcx": 3}),
    # the native engine's fast paths: one that only reads the window, one that stores to it
    "addsd xmm0, [8]": ("f2 0f 58 04 25 08 00 00 00", {"rcx": 0x3FF0000000000000}),
    "fst qword [0x100]": ("dd 14 25 00 01 00 00", {}),
}
NATIVE_ONLY = ("addsd xmm0, [8]", "fst qword [0x100]")   # no Python semantics: the host runs them


@pytest.mark.parametrize("trace", [True, False], ids=["generic path", "fast path"])
@pytest.mark.parametrize("name", [pytest.param(name, marks=native if name in NATIVE_ONLY else ())
                                  for name in FORMS])
def test_a_completed_instruction_clears_rf(name, trace):
    code, regs = FORMS[name]
    memory = {MEMORY: bytes(4096)}
    with_rf = regmap.emulate(code, {**regs, "rflags": 0x202 | RF}, memory=memory, trace=trace)
    without = regmap.emulate(code, {**regs, "rflags": 0x202}, memory=memory, trace=trace)
    assert not with_rf.regs["rflags"] & RF
    assert with_rf.regs["rflags"] == without.regs["rflags"]   # RF is the only difference


def test_a_rep_stopped_part_way_keeps_rf():
    """rep movsb into memory that ends mid-run: the elements before the gap are done, rip
    stays on the instruction to restart it, and RF stays set as the CPU leaves it."""
    code = bytes.fromhex("f3 a4")                                # rep movsb
    machine = PureMachine({"rip": 0x400000, "rcx": 16, "rsi": 0, "rdi": MEMORY + 4096 - 4,
                           "rflags": 0x202 | RF},
                          {0x400000: code, MEMORY: bytes(4096)})
    Emulator().step(machine)
    assert machine.registers["rip"] == 0x400000
    assert machine.registers["rcx"] == 12
    assert machine.registers["rflags"] & RF


# count_hits(window, n): runs a window read (window != 0) or the same read of real memory n
# times with a hardware execute breakpoint on the instruction after it; returns the hits, or
# -errno when perf_event_open refuses (no debug registers, perf_event_paranoid).
BREAKPOINT_C = r"""
#include <errno.h>
#include <linux/hw_breakpoint.h>
#include <linux/perf_event.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

long real_memory = 7;
extern char after_window[], after_memory[];

__attribute__((noinline)) static long read_window(void) {
    long r;
    __asm__ volatile("movq 8, %%rcx\n.globl after_window\nafter_window:\n\tmov %%rcx, %0"
                     : "=r"(r) :: "rcx");
    return r;
}

__attribute__((noinline)) static long read_memory(void) {
    long r;
    __asm__ volatile("movq %1, %%rcx\n.globl after_memory\nafter_memory:\n\t"
                     "mov %%rcx, %0" : "=r"(r) : "m"(real_memory) : "rcx");
    return r;
}

long count_hits(int window, int n) {
    struct perf_event_attr a;
    memset(&a, 0, sizeof a);
    a.type = PERF_TYPE_BREAKPOINT;
    a.size = sizeof a;
    a.bp_type = HW_BREAKPOINT_X;
    a.bp_addr = (uintptr_t)(window ? after_window : after_memory);
    a.bp_len = sizeof(long);
    a.exclude_kernel = 1;
    a.exclude_hv = 1;
    int fd = syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
    if (fd < 0)
        return -errno;
    for (int i = 0; i < n; i++)
        window ? read_window() : read_memory();
    long long hits = 0;
    if (read(fd, &hits, sizeof hits) != sizeof hits)
        hits = -EIO;
    close(fd);
    return hits;
}

#ifdef MAIN
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    printf("%ld\n", count_hits(argc > 1 && argv[1][0] == 'w', 5));
    return 0;
}
#endif
"""


def _build(tmp_path: Path, *flags: str) -> Path:
    source = tmp_path / "breakpoint.c"
    source.write_text(BREAKPOINT_C)
    out = tmp_path / ("breakpoint.so" if "-shared" in flags else "breakpoint")
    subprocess.run(["gcc", "-O1", *flags, "-o", str(out), str(source)], check=True,
                   capture_output=True)
    return out


def _breakpoints_or_skip(hits: int) -> int:
    if hits < 0:
        pytest.skip(f"perf_event_open refused a hardware breakpoint (errno {-hits})")
    return hits


@native
def test_a_breakpoint_after_a_window_access_fires_in_process(tmp_path):
    library = ctypes.CDLL(str(_build(tmp_path, "-shared", "-fPIC")))
    library.count_hits.argtypes, library.count_hits.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_long
    natively = _breakpoints_or_skip(library.count_hits(0, 5))
    assert natively == 5
    with regmap.mapped():
        emulated = library.count_hits(1, 5)
    assert emulated == natively


@native
def test_a_breakpoint_after_a_window_access_fires_under_exec(tmp_path):
    program = _build(tmp_path, "-DMAIN")
    natively = _breakpoints_or_skip(int(subprocess.run(
        [str(program), "memory"], check=True, capture_output=True, text=True).stdout))
    assert natively == 5
    traced = subprocess.run([sys.executable, "-m", "regmap", "exec", str(program), "window"],
                            check=True, capture_output=True, text=True)
    assert int(traced.stdout) == natively
