"""Faults inside trampolines: delivered as the site's own, the same as without translation.

A native trial function loads every general register and rflags from a state, runs one window
instruction and stores them back.  A handler written in assembly (installed before regmap, so
regmap passes genuine faults on to it) records the signal, si_code, si_addr and every register
of the ucontext, then resumes at the trial's exit.  Each form's site is made hot with states
that do not fault (it becomes a trampoline), then run with one that does; the record must be the
one the same state gives with every execution emulated.
"""
from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import assembled, build_library, in_threads, why_not_native  # noqa: E402

import regmap  # noqa: E402
from regmap.runtime import _sys, trampolines  # noqa: E402

REASON = why_not_native()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
FLAGS = 16 * 8
RED_ZONE, RED_BYTE = 128, 0xA5      # System V's red zone below rsp, and the byte it is filled with
AC = 1 << 18
SIGILL, SIGBUS, SIGFPE, SIGSEGV = 4, 7, 8, 11
# uc_mcontext.gregs: r8-r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags
RECORDED = 18

# (instruction, registers of a state that runs, the same with a change that makes it fault)
FORMS = [
    # #DE: edx:eax / rax[63:32] (window bytes 4..7), zero
    ("div dword ptr [4]", {"rax": 3 << 32 | 7, "rdx": 1}, {"rax": 7}),
    # #DE: rdx:rax / rcx[31:0] . rax[63:32] (a divisor across two registers), zero
    ("div qword ptr [4]", {"rax": 5 << 32, "rcx": 1, "rdx": 0}, {"rax": 5, "rcx": 0}),
    # #GP: MXCSR's reserved bits (a read of rax[63:32]).  Emulated, regmap's Python semantics
    # pass the window's page fault on (SEGV_MAPERR at 4); the trampoline delivers the CPU's #GP
    # (SI_KERNEL, 0), as the native engine does: everything else must be the same
    ("ldmxcsr dword ptr [4]", {"rax": 0x1F80 << 32}, {"rax": 0xFFFF << 48}),
]


def trial_source(index: int, instruction: str, load: str = "", save: str = "") -> str:
    """``trial_<index>(state)``: the GPRs and flags from ``state``, ``instruction`` at
    ``site_<index>``, everything back into ``state``; ``load`` and ``save`` move more state in
    before the flags and out after the GPRs (tests/test_trampoline_forms: x87/SSE, vectors)."""
    loads = "\n".join(f"    mov {r}, [rdi + {8 * i}]" for i, r in enumerate(GPRS)
                      if r not in ("rsp", "rdi"))
    saves = "\n".join(f"    mov [rdi + {8 * i}], {r}" for i, r in enumerate(GPRS)
                      if r not in ("rsp", "rdi"))
    return f"""
    .globl trial_{index}
trial_{index}:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rip + saved_rsp], rsp
    mov [rip + state], rdi
    lea rax, [rsp - {RED_ZONE}]     # the red zone, a pattern the instruction must leave alone
    mov ecx, {RED_ZONE}
1:  mov byte ptr [rax + rcx - 1], {RED_BYTE}
    dec ecx
    jnz 1b
    fxsave [rip + host_fx]
{load}
    push qword ptr [rdi + {FLAGS}]
{loads}
    mov rdi, [rdi + 56]
    popfq
    .globl site_{index}
site_{index}:
    {instruction}
    pushfq
    push rdi
    mov rdi, [rip + state]
    pop qword ptr [rdi + 56]
    pop qword ptr [rdi + {FLAGS}]
{saves}
{save}
    lea rax, [rsp - {RED_ZONE}]     # (the trial wrote rsp - 8 and - 16 itself: flags, rdi)
    xor ecx, ecx
1:  cmp byte ptr [rax + rcx], {RED_BYTE}
    jne 2f
    inc ecx
    cmp ecx, {RED_ZONE - 16}
    jb 1b
    xor eax, eax
    jmp done
2:  mov eax, 2                      # the red zone changed: a result no run may give
    jmp done
"""


HANDLER = f"""
    .globl catcher
catcher:                        # (signo, siginfo, ucontext): record, resume at `recover`
    lea rax, [rip + record_here]
    mov [rax], rdi
    mov ecx, [rsi + 8]
    mov [rax + 8], rcx
    mov rcx, [rsi + 16]
    mov [rax + 16], rcx
    xor ecx, ecx
1:  mov r8, [rdx + 40 + 8 * rcx]
    mov [rax + 24 + 8 * rcx], r8
    inc ecx
    cmp ecx, {RECORDED}
    jb 1b
    lea rcx, [rip + recover]
    mov [rdx + 40 + 8 * 16], rcx
    mov rcx, [rip + saved_rsp]
    mov [rdx + 40 + 8 * 15], rcx
    and qword ptr [rdx + 40 + 8 * 17], {~AC}
    ret
recover:
    mov rsp, [rip + saved_rsp]
    mov eax, 1
done:                           # the caller's x87/SSE control and DF as they were
    fxrstor [rip + host_fx]
    cld
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
    .data
    .globl record
record:
record_here: .space {8 * (3 + RECORDED)}
saved_rsp: .quad 0
state: .quad 0
    .balign 16
host_fx: .space 512
    .text
"""


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    directory = tmp_path_factory.mktemp("trampoline-faults")
    source = directory / "trials.s"
    source.write_text(".intel_syntax noprefix\n.text\n" + HANDLER
                      + "".join(trial_source(i, text) for i, (text, _, _) in enumerate(FORMS))
                      + '.section .note.GNU-stack,"",@progbits\n')
    lib = ctypes.CDLL(str(build_library(directory, source, "libtrials.so")))
    for i in range(len(FORMS)):
        getattr(lib, f"trial_{i}").argtypes = [ctypes.c_void_p]
        getattr(lib, f"trial_{i}").restype = ctypes.c_long
    return lib


def catching(library):
    """The library's assembly handler (`HANDLER`) for SIGSEGV, SIGBUS, SIGFPE, SIGILL, under
    regmap's (the form tests' `caught` fixtures too)."""
    regmap.unmap_registers()
    regmap.runtime.reset_stats()
    address = ctypes.cast(library.catcher, ctypes.c_void_p).value
    previous = {signo: _sys.install_handler(signo, address, _sys.SA_SIGINFO, ())
                for signo in (SIGILL, SIGBUS, SIGFPE, SIGSEGV)}
    yield
    regmap.unmap_registers()
    for signo, action in previous.items():
        _sys.set_action(signo, action)


@pytest.fixture
def caught(library):
    yield from catching(library)


def state_of(values: dict) -> ctypes.Array:
    state = ctypes.create_string_buffer(FLAGS + 8)
    for i, name in enumerate(GPRS):
        ctypes.c_uint64.from_address(ctypes.addressof(state) + 8 * i).value = \
            values.get(name, 0x1111 * (i + 1))
    ctypes.c_uint64.from_address(ctypes.addressof(state) + FLAGS).value = 0x202 | values.get("rflags", 0)
    return state


def run(library, index: int, values: dict) -> tuple[int, bytes]:
    """(whether it faulted, the handler's record or the state after)."""
    state = state_of(values)
    record = (ctypes.c_char * (8 * (3 + RECORDED))).in_dll(library, "record")
    ctypes.memset(record, 0, ctypes.sizeof(record))
    faulted = getattr(library, f"trial_{index}")(state)
    return faulted, bytes(record) if faulted else state.raw


NAMES = ("signo", "si_code", "si_addr", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi",
         "rsi", "rbp", "rbx", "rdx", "rax", "rcx", "rsp", "rip", "rflags")


def describe(result: tuple[int, bytes]) -> dict:
    """A record by name (a state is named by GPRS), for a readable difference."""
    faulted, data = result
    names = NAMES if faulted else GPRS + ("rflags",)
    return {name: hex(int.from_bytes(data[8 * i:8 * i + 8], "little")) for i, name in enumerate(names)}


def site(library, index: int) -> int:
    return ctypes.cast(getattr(library, f"site_{index}"), ctypes.c_void_p).value


@pytest.mark.parametrize("index", range(len(FORMS)), ids=[text for text, _, _ in FORMS])
def test_a_fault_inside_a_trampoline_is_the_sites_own(library, caught, index):
    text, runs, faults = FORMS[index]
    failing = {**runs, **faults}
    with regmap.mapped(translate=0):
        expected = run(library, index, failing)
        ran = run(library, index, runs)
    assert expected[0] == 1 and ran[0] == 0, "the states do not fault, then run, as meant"
    record = expected[1]
    assert int.from_bytes(record[:8], "little") in (SIGBUS, SIGFPE, SIGSEGV, SIGILL)
    assert int.from_bytes(record[24 + 8 * 16:32 + 8 * 16], "little") == site(library, index)
    with regmap.mapped(translate=3):
        for _ in range(3):
            assert run(library, index, runs) == ran
        done = {t.address: t for t in regmap.stats().translated}
        assert done[site(library, index)].kind == "trampoline"
        before = regmap.stats().emulated
        assert run(library, index, runs) == ran          # through the trampoline
        inside = describe(run(library, index, failing))   # faulting inside it
        outside = describe(expected)
        if text.startswith("ldmxcsr"):
            assert (inside.pop("si_code"), inside.pop("si_addr")) == (hex(_sys.SI_KERNEL), "0x0")
            del outside["si_code"], outside["si_addr"]
        assert inside == outside
        assert run(library, index, runs) == ran
        assert regmap.stats().emulated == before         # none of them was emulated
    assert trampolines.TABLE


# -- the safety of today's patching, for trampolines --------------------------------------------

LOOP = """.intel_syntax noprefix
    .text
    .globl straddle_loop
straddle_loop:                  # long straddle_loop(long n, long k): n * k, modulo 2**32
    mov rcx, rsi
    xor eax, eax
    xor edx, edx
    .globl straddle_site
straddle_site:
1:  add rdx, qword ptr [4]      # rcx[31:0] . rax[63:32]: k << 32 (a trampoline)
    dec rdi
    jnz 1b
    mov rax, rdx
    shr rax, 32
    ret
    .globl count_signal
count_signal:                   # a handler on the thread's own stack (no SA_ONSTACK)
    inc qword ptr [rip + signals_here]
    ret
    .data
    .globl signals
signals:
signals_here: .quad 0
    .section .note.GNU-stack,"",@progbits
"""


@pytest.fixture(scope="module")
def straddle(tmp_path_factory):
    lib = assembled(tmp_path_factory.mktemp("trampoline-loop"), LOOP, "straddle")
    lib.straddle_loop.argtypes, lib.straddle_loop.restype = [ctypes.c_long, ctypes.c_long], ctypes.c_long
    return lib


@pytest.fixture
def unmapped():
    regmap.unmap_registers()
    regmap.runtime.reset_stats()
    yield
    regmap.unmap_registers()


def straddle_site(lib) -> int:
    return ctypes.cast(lib.straddle_site, ctypes.c_void_p).value


def test_eight_threads_run_a_site_while_it_becomes_a_trampoline(straddle, unmapped):
    from regmap.runtime import patch
    if not patch.sync_core_available():
        pytest.skip("membarrier SYNC_CORE is not available: threads are never patched")
    import threading
    results: dict[int, int] = {}
    start = threading.Barrier(8)

    def work(index: int) -> None:
        start.wait()
        results[index] = straddle.straddle_loop(100_000, index + 1)

    with regmap.mapped(translate=2000):
        in_threads(work, 8)
        translated = regmap.stats().translated
    assert results == {i: 100_000 * (i + 1) for i in range(8)}
    assert [t.kind for t in translated] == ["trampoline"]
    assert translated[0].address in patch.PLANTED       # the int3 protocol was used


def test_unmapping_puts_the_site_back_and_keeps_the_trampoline(straddle, unmapped):
    site = straddle_site(straddle)
    original = ctypes.string_at(site, 8)
    with regmap.mapped(translate=3):
        assert straddle.straddle_loop(1000, 7) == 7000
        assert ctypes.string_at(site, 1) == b"\xe9"           # jmp rel32
        stats = regmap.stats()
        assert stats.by_site[site] == 3
    assert ctypes.string_at(site, 8) == original
    assert any(t.site == site for t in trampolines.TABLE.values())   # never freed
    assert stats.translated_by_kind == {"trampoline": 1}
    assert "translated sites: 1 trampoline" in str(stats)
    with regmap.mapped(translate=0):
        before = regmap.stats().emulated
        assert straddle.straddle_loop(100, 2) == 200
        assert regmap.stats().emulated - before == 100


def test_a_forked_child_keeps_its_trampolines(straddle, unmapped):
    import os
    with regmap.mapped(translate=3):
        assert straddle.straddle_loop(100, 2) == 200
        pid = os.fork()
        if pid == 0:    # pragma: no cover - the child
            ok = straddle.straddle_loop(1000, 3) == 3000 and regmap.stats().emulated == 3
            regmap.unmap_registers()
            ok = ok and ctypes.string_at(straddle_site(straddle), 1) != b"\xe9"
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert straddle.straddle_loop(1000, 4) == 4000 and regmap.stats().emulated == 3


def test_signals_delivered_inside_the_trampoline(straddle, unmapped):
    """A timer's signal every 50 us lands inside the trampoline often, its handler on the
    thread's own stack: its frame goes below the moved rsp, and the loop's result is exact."""
    import signal
    count = ctypes.c_uint64.in_dll(straddle, "signals")
    count.value = 0
    handler = ctypes.cast(straddle.count_signal, ctypes.c_void_p).value
    previous = _sys.install_handler(signal.SIGALRM, handler, _sys.SA_SIGINFO | _sys.SA_RESTART, ())
    try:
        with regmap.mapped(translate=3):
            signal.setitimer(signal.ITIMER_REAL, 50e-6, 50e-6)
            try:
                results = [straddle.straddle_loop(2_000_000, k) for k in range(1, 6)]
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            assert regmap.stats().emulated == 3
    finally:
        _sys.set_action(signal.SIGALRM, previous)
    assert results == [(2_000_000 * k) % (1 << 32) for k in range(1, 6)]
    assert count.value > 10


def test_unmapping_leaves_a_sigfpe_handler_the_program_installed_since(straddle, unmapped):
    import signal
    before = _sys.get_action(signal.SIGFPE)
    with regmap.mapped(translate=3):
        assert straddle.straddle_loop(100, 2) == 200          # a trampoline: SIGFPE is regmap's
        assert trampolines.PREVIOUS
        signal.signal(signal.SIGFPE, lambda *_: None)
        try:
            ours = _sys.get_action(signal.SIGFPE).key()
            regmap.unmap_registers()
            assert _sys.get_action(signal.SIGFPE).key() == ours
        finally:
            _sys.set_action(signal.SIGFPE, before)


X87_FORMS = ["fadd qword ptr [0x10]", "fld dword ptr [4]", "fimul word ptr [0x12]",
             "fst qword ptr [0x18]", "fcomp qword ptr [8]", "fidivr dword ptr [0x14]",
             "fstp tbyte ptr [0x104]"]


def x87_source(index: int, instruction: str) -> str:
    return f"""
    .globl x87_{index}
x87_{index}:                        # (buffer): the x87 state (FXSAVE64) and rcx, rdx, rbx after
    push rbx
    fninit
    mov rcx, 0x3ff8000000000000     # 1.5
    mov rdx, 0x4008000000000000     # 3.0
    mov rbx, 0x0000000700000003
    fld1
    fldpi
    .globl x87_site_{index}
x87_site_{index}:
    {instruction}
    fxsave64 [rdi]
    mov [rdi + 512], rcx
    mov [rdi + 520], rdx
    mov [rdi + 528], rbx
    fninit
    pop rbx
    ret
"""


def test_x87_forms_leave_the_pointers_of_the_site(tmp_path, unmapped):
    """FIP, FDP and FOP after an x87 form through its trampoline are the site's, the window
    address and the original opcode, as emulated (and everything else of the x87 state)."""
    source = tmp_path / "x87.s"
    source.write_text(".intel_syntax noprefix\n.text\n"
                      + "".join(x87_source(i, text) for i, text in enumerate(X87_FORMS))
                      + '.section .note.GNU-stack,"",@progbits\n')
    lib = ctypes.CDLL(str(build_library(tmp_path, source, "libx87.so")))
    buffer = ctypes.create_string_buffer(512 + 64 + 64)
    address = ctypes.addressof(buffer) + (-ctypes.addressof(buffer) % 64)

    def run(index: int) -> bytes:
        ctypes.memset(address, 0, 512 + 64)
        getattr(lib, f"x87_{index}")(ctypes.c_void_p(address))
        state = ctypes.string_at(address, 512 + 24)
        return state[:160] + state[512:]     # the x87 part of the image (not the xmm the caller
                                             # leaves), and the general registers

    with regmap.mapped(translate=3):
        for index, text in enumerate(X87_FORMS):
            runs = [run(index) for _ in range(6)]      # three emulated, then the trampoline
            differ = [(i, o) for r in runs for i, o in enumerate(range(0, len(r), 8))
                      if r[o:o + 8] != runs[0][o:o + 8]]
            assert not differ, (text, sorted(set(differ)), [r[:32].hex() for r in runs])
            site = ctypes.cast(getattr(lib, f"x87_site_{index}"), ctypes.c_void_p).value
            assert int.from_bytes(runs[0][8:16], "little") == site, text      # FIP
        kinds = {t.address: t.kind for t in regmap.stats().translated}
    assert list(kinds.values()).count("trampoline") == len(X87_FORMS)


ONE_SHOT = r"""
#include <signal.h>
#include <string.h>
static volatile long calls;
static void count(int signo, siginfo_t *info, void *context) { calls++; }
int install_one_shot(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = count;
    action.sa_flags = SA_SIGINFO | SA_RESETHAND;
    return sigaction(SIGFPE, &action, 0);
}
long one_shot_calls(void) { return calls; }
"""


def test_a_one_shot_sigfpe_handler_runs_once_behind_the_trampolines_handler(straddle, tmp_path):
    """SA_RESETHAND: the program's handler runs for the first SIGFPE and the second kills, as
    without regmap, though regmap's SIGFPE handler (installed with the first trampoline) is in
    front of it."""
    import subprocess
    source = tmp_path / "one_shot.c"
    source.write_text(ONE_SHOT)
    library = tmp_path / "libone_shot.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", library, source], check=True)
    script = f"""
import ctypes, os, signal, sys
import regmap
straddle = ctypes.CDLL({str(straddle._name)!r})
straddle.straddle_loop.argtypes, straddle.straddle_loop.restype = [ctypes.c_long, ctypes.c_long], ctypes.c_long
one_shot = ctypes.CDLL({str(library)!r})
assert one_shot.install_one_shot() == 0
regmap.map_registers(translate=3)
assert straddle.straddle_loop(100, 2) == 200
assert [t.kind for t in regmap.stats().translated] == ["trampoline"]
for _ in range(2):
    os.kill(os.getpid(), signal.SIGFPE)
    print(one_shot.one_shot_calls(), flush=True)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal_number("SIGFPE"), (done.stdout, done.stderr)
    assert done.stdout.split() == ["1"], done.stdout


def signal_number(name: str) -> int:
    import signal
    return signal.Signals[name].value
