"""The real stack of push, pop and call through the window, in process, against the CPU.

Each probe switches rsp to a chosen address (a normal page, the edge of a
page, a read-only, unmapped, PROT_NONE or past-the-end-of-file page), runs one
instruction -- through the window (``push qword [8]``, ``pop qword [0x10]``,
``call qword [8]``) or its register form (``push rcx``, ``pop rdx``, ``call
rcx``), which the CPU runs itself -- and switches back.  A program's own
SIGSEGV/SIGBUS handler (C, SA_ONSTACK) records what it is given for a fault:
signal, si_code, si_addr, and rip, rsp, error code, trap number and cr2 from
the frame; then resumes after the probe.  The register form's record, taken
without regmap, is the oracle: the window form must give the same one.
"""
from __future__ import annotations

import ctypes
import mmap
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import build_library, why_not_native  # noqa: E402

import regmap  # noqa: E402

REASON = why_not_native()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

# probe block (64-bit words): 0 home rsp, 1 rcx, 2 rdx, 3 rsp for the instruction,
# 4 rsp after, 5 rdx after, 6.. the handler's record
PROBE_SOURCE = r"""
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <ucontext.h>

extern char probe_resume[];
static struct sigaction before[2];

static void on_fault(int signo, siginfo_t *info, void *context)
{
    ucontext_t *uc = context;
    greg_t *g = uc->uc_mcontext.gregs;
    uint64_t *probe = (uint64_t *)g[REG_RBX];
    probe[6] = signo;
    probe[7] = info->si_code;
    probe[8] = (uint64_t)info->si_addr;
    probe[9] = g[REG_RIP];
    probe[10] = g[REG_RSP];
    probe[11] = g[REG_ERR];
    probe[12] = g[REG_TRAPNO];
    probe[13] = g[REG_CR2];
    g[REG_RIP] = (greg_t)probe_resume;
}

int probe_handler_install(void)
{
    struct sigaction action = {0};
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    return sigaction(SIGSEGV, &action, &before[0]) || sigaction(SIGBUS, &action, &before[1]);
}

int probe_handler_remove(void)
{
    return sigaction(SIGSEGV, &before[0], 0) || sigaction(SIGBUS, &before[1], 0);
}

/* A thread needs an alternate stack to handle a fault of its stack pointer. */
int probe_altstack(void)
{
    stack_t now;
    if (sigaltstack(0, &now) || !(now.ss_flags & SS_DISABLE))
        return 0;
    stack_t given = {malloc(1 << 19), 0, 1 << 19};
    return sigaltstack(&given, 0);
}

#define PROBE(name, insn) \
    "    .globl " #name "\n" #name ":\n" \
    "    push rbx\n    mov rbx, rdi\n    mov [rbx], rsp\n" \
    "    mov rcx, [rbx + 8]\n    mov rdx, [rbx + 16]\n    mov rsp, [rbx + 24]\n" \
    "    .globl " #name "_insn\n" #name "_insn:\n    " insn "\n" \
    "    jmp probe_done\n"

__asm__(".intel_syntax noprefix\n"
        PROBE(push_window, "push qword ptr [8]")
        PROBE(push_native, "push rcx")
        PROBE(push16_window, "push word ptr [8]")
        PROBE(push16_native, "push cx")
        PROBE(pop_window, "pop qword ptr [0x10]")
        PROBE(pop_native, "pop rdx")
        PROBE(call_window, "call qword ptr [8]")
        PROBE(call_native, "call rcx")
        "    .globl probe_done\nprobe_done:\n"
        "    mov [rbx + 32], rsp\n    mov [rbx + 40], rdx\n"
        "    mov rsp, [rbx]\n    pop rbx\n    xor eax, eax\n    ret\n"
        "    .globl probe_resume\nprobe_resume:\n"
        "    mov rsp, [rbx]\n    pop rbx\n    mov eax, 1\n    ret\n"
        ".att_syntax\n");
"""

Probe = ctypes.c_uint64 * 16
PAGE = mmap.PAGESIZE
M64 = (1 << 64) - 1
FORMS = {"push": ("push_window", "push_native"), "push16": ("push16_window", "push16_native"),
         "pop": ("pop_window", "pop_native"), "call": ("call_window", "call_native")}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    directory = tmp_path_factory.mktemp("stack-probes")
    source = directory / "probes.c"
    source.write_text(PROBE_SOURCE)
    library = ctypes.CDLL(str(build_library(directory, source, "libprobes.so")))
    for name in [n for pair in FORMS.values() for n in pair]:
        getattr(library, name).argtypes = [ctypes.c_void_p]
    return library


class Stacks:
    """Three-page areas, each arranged for one case; `sp` is where the probe puts rsp.

    Layout of an area: pages A, B, C.  The case decides what A and C are and where in B (or
    at its edges) the stack pointer goes.
    """

    def __init__(self):
        self.areas = []
        self.files = []
        self.holes: dict[int, int] = {}
        self.unpunched: list[int] = []

    def punch(self) -> None:
        """Unmap the holes made since the last punch: after the areas are mapped, so that no area
        fills another's hole.  A hole punched before is never unmapped again: the page there may
        be someone else's by now (regmap's handler's trampoline, mapped by `map_registers`)."""
        while self.unpunched:
            assert _libc.munmap(self.unpunched.pop(), PAGE) == 0

    def still_arranged(self, base: int) -> bool:
        """Whether the area's hole is still one (another mmap of the process may fill it)."""
        hole = self.holes.get(base)
        vector = ctypes.create_string_buffer(1)
        return hole is None or (_libc.mincore(hole, PAGE, vector) == -1 and ctypes.get_errno() == 12)

    def area(self, case: str) -> tuple[int, int]:
        """(sp, the area's base) for `case`."""
        base = _libc.mmap(None, 3 * PAGE, 3, 0x22, -1, 0)
        assert base not in (None, ctypes.c_void_p(-1).value)
        self.areas.append(base)
        ctypes.memmove(base, PATTERN, 3 * PAGE)      # the same bytes around every probe
        a, b, c = base, base + PAGE, base + 2 * PAGE
        protect = {"read-only": (b, 1), "below read-only": (a, 1), "PROT_NONE": (b, 0),
                   "below PROT_NONE": (a, 0)}
        if case in protect:
            assert _libc.mprotect(protect[case][0], PAGE, protect[case][1]) == 0
        hole = {"below unmapped": a, "straddling unmapped below": a, "unmapped": b,
                "straddling unmapped above": b}.get(case)
        if hole is not None:
            self.holes[base] = hole     # unmapped by `punch`, after the other areas are made
            self.unpunched.append(hole)
        if case == "past the end of a file":
            handle = tempfile.TemporaryFile()
            handle.write(b"x")
            handle.flush()
            self.files.append(handle)
            got = _libc.mmap(b, PAGE, 3, 0x11, handle.fileno(), PAGE)     # MAP_SHARED|MAP_FIXED
            assert got == b
        sp = {"normal": b + 0x800, "edge": b, "straddling": b + 4,
              "straddling unmapped below": b + 4, "straddling unmapped above": b - 4,
              "below unmapped": b, "below read-only": b, "below PROT_NONE": b}.get(case, b + 0x800)
        return sp, base

    def close(self):
        for base in self.areas:
            for page in range(base, base + 3 * PAGE, PAGE):
                if page != self.holes.get(base):     # a hole may be someone else's page now
                    _libc.munmap(page, PAGE)
        for handle in self.files:
            handle.close()


PATTERN = random.Random(3).randbytes(3 * PAGE)
CASES = ("normal", "edge", "straddling", "read-only", "below read-only", "PROT_NONE",
         "below PROT_NONE", "unmapped", "below unmapped", "straddling unmapped below",
         "straddling unmapped above", "past the end of a file")


def probe(lib, name: str, sp: int, base: int, values: tuple[int, int]) -> tuple:
    """Run one probe; return what can be compared between the window and register forms."""
    block = Probe()
    block[1], block[2], block[3] = values[0], values[1], sp
    faulted = getattr(lib, name)(ctypes.addressof(block))
    insn = ctypes.cast(getattr(lib, name + "_insn"), ctypes.c_void_p).value
    if not faulted:
        stack = ctypes.string_at(sp - 16, 32) if _readable(sp - 16, 32) else None
        rdx = block[5]
        if name.startswith("call"):    # pushed the return address: where the call ends, per copy
            rdx = None
            stack = None if stack is None else stack[:8] + bytes(8) + stack[16:]
        return ("ran", block[4] - sp, rdx, stack)
    signo, code, addr, rip, rsp, err, trapno, cr2 = block[6:14]
    code = ctypes.c_int32(code & 0xFFFFFFFF).value
    return ("fault", signo, code, addr and addr - sp, rip - insn, rsp - sp, err, trapno,
            cr2 - sp if trapno == 14 else None)      # addresses relative to the probe's rsp


def _readable(address: int, size: int) -> bool:
    from regmap.runtime import _sys
    buffer = ctypes.create_string_buffer(size)
    return _sys.vm_transfer(address, buffer, size, write=False) == size


def oracle_and_window(lib, form: str, case: str, values=(0x1122334455667788, 0x99AABBCCDDEEFF00)):
    """(register form without regmap, window form under regmap) for one case, fresh areas.  A run
    whose hole another mmap filled meanwhile (regmap maps its code pages lazily, at a first
    fault) is run again on fresh areas: the case is the hole, not whatever took its place."""
    window, native = FORMS[form]
    if form == "call":
        values = (ctypes.cast(lib.probe_done, ctypes.c_void_p).value, values[1])
    expected = _arranged(lambda stacks, sp, base: probe(lib, native, sp, base, values), case)

    def under_regmap(stacks, sp, base):
        regmap.map_registers()
        try:
            # the first run at a site takes the general path, later ones the compiled fast path
            return [probe(lib, window, sp, base, values) for _ in range(3)]
        finally:
            regmap.unmap_registers()
    runs = _arranged(under_regmap, case)
    got = runs[0]
    assert runs[1:] == [got, got]
    return expected, got


def _arranged(run, case: str, tries: int = 3):
    """``run(stacks, sp, base)`` on a fresh area for ``case`` whose hole stayed a hole throughout."""
    for _ in range(tries):
        stacks = Stacks()
        try:
            sp, base = stacks.area(case)
            stacks.punch()
            result = run(stacks, sp, base)
            if stacks.still_arranged(base):
                return result
        finally:
            stacks.close()
    raise AssertionError(f"{case}: another mapping filled the area's hole in each of {tries} tries")


@pytest.fixture
def handler(lib):
    assert lib.probe_altstack() == 0
    assert lib.probe_handler_install() == 0
    try:
        yield
    finally:
        assert lib.probe_handler_remove() == 0


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("form", list(FORMS))
def test_window_form_meets_the_stack_as_the_register_form_does(lib, handler, form, case):
    expected, got = oracle_and_window(lib, form, case)
    assert got == expected


def test_the_cases_are_the_ones_meant(lib, handler):
    """The oracle itself: faults where the case says, with the si_code the case is about."""
    segv, bus = 11, 7
    maperr, accerr, adrerr = 1, 2, 2
    want = {"normal": None, "edge": None, "straddling": None, "read-only": (segv, accerr),
            "PROT_NONE": (segv, accerr), "unmapped": (segv, maperr),
            "below unmapped": (segv, maperr), "straddling unmapped below": (segv, maperr),
            "past the end of a file": (bus, adrerr)}
    for case, fault in want.items():
        expected, _ = oracle_and_window(lib, "push", case)
        assert (expected[0] == "ran") if fault is None else (expected[1:3] == fault), case
    expected, _ = oracle_and_window(lib, "pop", "read-only")
    assert expected[0] == "ran"          # a read-only stack pops


def test_under_threads(lib, handler):
    """Eight threads probe every case at once, each on its own areas, many times over."""
    expected = {(form, case): oracle_and_window(lib, form, case)[0]
                for form in ("push", "pop") for case in CASES}
    failures: list = []
    filled: list = []

    mine = [Stacks() for _ in range(8)]
    areas = [{key: stacks.area(key[1]) for key in expected} for stacks in mine]
    for stacks in mine:
        stacks.punch()

    def worker(index: int):
        try:
            assert lib.probe_altstack() == 0
            for round_ in range(20):
                for (form, case), want in expected.items():
                    sp, base = areas[index][(form, case)]
                    got = probe(lib, FORMS[form][0], sp, base,
                                (0x1122334455667788, 0x99AABBCCDDEEFF00))
                    if not mine[index].still_arranged(base):
                        filled.append((form, case))   # another mmap of the process took the hole
                    elif got != want:
                        failures.append((index, round_, form, case, got, want))
        except BaseException as error:  # noqa: BLE001
            failures.append((index, repr(error)))

    regmap.map_registers()
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        regmap.unmap_registers()
        for stacks in mine:
            stacks.close()
    assert not failures, failures[:5]
    assert len(filled) < 8 * 20 * len(expected) // 10, filled[:5]


# -- a fault in regmap's own handler still ends the process -----------------------------------

BUGGY = textwrap.dedent('''
    import ctypes, resource, sys
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.path.insert(0, {snippets!r})
    from runtime_build import declare
    import regmap
    from regmap.runtime import handler, usercopy
    lib = declare(ctypes.CDLL({library!r}))
    regmap.map_registers()
    assert lib.echo_rdi(5) == 5

    def wild(*args):
        return ctypes.string_at(0xDEAD0000, 8)     # a native fault inside the handler

    if sys.argv[1] == "once":
        handler.emulate = wild                    # the general path faults; the nested one forwards
    else:
        usercopy.recover = wild                   # every nested fault faults again: recursion
        handler.emulate = wild
    lib.window_mix(3, 4)                          # a new site: the general path
    print("survived")
''')


@pytest.mark.parametrize("bug", ["once", "recursive"])
def test_a_fault_of_the_handler_itself_ends_with_sigsegv(tmp_path, bug):
    """SIGSEGV is not blocked while the handler emulates: a fault of its own re-enters it, which
    hands it on as a genuine fault (here: the default action); a handler faulting inside itself
    level after level is stopped at `handler.NESTING_LIMIT` of alternate stack with the default
    action.  Never a hang, never another end."""
    from runtime_build import SNIPPETS, python_env
    library = build_library(tmp_path)
    script = tmp_path / "buggy.py"
    script.write_text(BUGGY.format(snippets=str(SNIPPETS.parent), library=str(library)))
    done = subprocess.run([sys.executable, str(script), bug], capture_output=True, text=True,
                          env=python_env(), timeout=120)
    assert done.returncode == -signal.SIGSEGV, (done.returncode, done.stdout, done.stderr[-2000:])
    assert "survived" not in done.stdout
    if bug == "recursive":     # stopped by regmap, not by CPython's recursion limit (which loops)
        assert done.stderr.count("nested too deep") == 1, done.stderr[-2000:]


def test_a_window_access_inside_the_handler_is_emulated_too(tmp_path):
    """A trace callback that calls native code using the window: the handler runs nested, on the
    same alternate stack, for the callback's own thread state."""
    from runtime_build import declare
    lib = declare(ctypes.CDLL(str(build_library(tmp_path))))
    inside: list = []

    def sink(event):
        if not inside:                         # the nested fault is traced too: once is enough
            inside.append(None)
            inside[0] = lib.echo_rdi(7)        # echo_rdi reads its own rdi through [0x38]

    regmap.map_registers()
    try:
        regmap.runtime.set_trace(sink)
        try:
            assert lib.echo_rdi(5) == 5
        finally:
            regmap.runtime.set_trace(None)
    finally:
        regmap.unmap_registers()
    assert inside == [7]
