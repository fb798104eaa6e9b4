"""Short register-addressed sites (regmap.x86.stub): the jump covers the instruction after them.

``mov rbx, [rdi]`` is 3 bytes; its jump takes the first two bytes of the ``add rdx, rbx`` after
it, which moves into the stub, and the jump's byte on the add's first byte is int3.  A thread
that enters at the add -- here, a loop whose first turn jumps straight to it -- traps there and
goes on in the add's copy.  Checked in-process (one thread, eight threads while the site is
rewritten under them, unmapping) and under `regmap exec --translate`; the drawn forms of
tests/test_stub_forms.py (``short``) check the stubs' results from every kind of state.
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import assembled, in_threads, why_not_native  # noqa: E402
from test_runtime_trampoline import unmapped  # noqa: E402,F401 - a fixture
from tracer_host import CC, TRACED_PROGRAMS  # noqa: E402

import regmap  # noqa: E402

REASON = why_not_native()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

# hot(n, skip): n turns of rdx += rbx, rbx read through [rdi] with rdi = 0 (the window: rax = 5);
# with skip the first turn starts at the add (rbx = 3): 5n, or 3 + 5(n - 1)
HOT = """
    .globl hot
hot:
    push rbx
    mov rcx, rdi
    mov r8, rsi
    xor edi, edi
    xor edx, edx
    mov ebx, 3
    mov eax, 5
    test r8, r8
    jnz 2f
    .globl site
site:
1:  mov rbx, qword ptr [rdi]
    .globl after
after:
2:  add rdx, rbx
    dec rcx
    jnz 1b
    mov rax, rdx
    pop rbx
    ret
"""
SITE_BYTES = bytes.fromhex("48 8b 1f 48 01 da")      # mov rbx, [rdi]; add rdx, rbx


def expected(n: int, skip: int) -> int:
    return 3 + 5 * (n - 1) if skip else 5 * n


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    lib = assembled(tmp_path_factory.mktemp("short-stub"), ".intel_syntax noprefix\n.text\n" + HOT
                    + '.section .note.GNU-stack,"",@progbits\n', "shortstub")
    lib.hot.argtypes, lib.hot.restype = [ctypes.c_long, ctypes.c_long], ctypes.c_long
    return lib


def address(lib, name: str) -> int:
    return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value


def test_the_site_and_the_instruction_after_it_move_into_the_stub(library, unmapped):
    site = address(library, "site")
    assert ctypes.string_at(site, 6) == SITE_BYTES
    with regmap.mapped(translate=2, fast_faults=False):
        assert library.hot(10, 0) == expected(10, 0)
        translated = regmap.stats().translated
        jump = ctypes.string_at(site, 6)
        before = regmap.stats().emulated
        assert library.hot(100_000, 0) == expected(100_000, 0)
        assert regmap.stats().emulated == before            # no fault: the stub's trampoline
        for n in (1, 2, 1000):                              # in at the add: a trap, then on
            assert library.hot(n, 1) == expected(n, 1)
    assert [t.kind for t in translated] == ["register-addressed"]
    assert jump[0] == 0xE9 and jump[3] == 0xCC              # the jump, its byte on the add int3
    assert ctypes.string_at(site, 6) == SITE_BYTES          # unmapping put both back


def test_threads_in_the_loop_while_the_site_is_rewritten(library, unmapped):
    """Eight threads, half of them entering at the add, run while the site becomes the jump (the
    text_poke_bp protocol with an int3 on both instructions' first bytes)."""
    results = {}

    def work(i: int) -> None:     # (entering at the add 3 times a thread: under PUN_TRAPS)
        skip = i % 2
        results[i] = [library.hot(2000, skip and turn % 7 == 0) for turn in range(20)]
    with regmap.mapped(translate=50, fast_faults=False):
        in_threads(work, 8)
        translated = regmap.stats().translated
    assert [t.kind for t in translated] == ["register-addressed"]
    assert all(r == [expected(2000, i % 2 and turn % 7 == 0) for turn in range(20)]
               for i, r in results.items())


def test_a_moved_instruction_that_keeps_trapping_gives_the_site_back(library, unmapped):
    """Entered by a jump again and again (a loop's head would be, every turn), the add traps each
    time: after PUN_TRAPS traps the site has its own bytes again, for good, and faults."""
    from regmap.x86 import stub
    site = address(library, "site")
    with regmap.mapped(translate=2, fast_faults=False):
        library.hot(10, 0)
        assert [t.kind for t in regmap.stats().translated] == ["register-addressed"]
        assert all(library.hot(3, 1) == expected(3, 1) for _ in range(stub.PUN_TRAPS + 4))
        assert ctypes.string_at(site, 6) == SITE_BYTES and regmap.stats().translated == ()
        before = regmap.stats().emulated
        assert library.hot(100, 0) == expected(100, 0)
        assert regmap.stats().emulated - before == 100        # faulting again, not rewritten


def test_a_forked_child_keeps_the_stub_and_its_trap(library, unmapped):
    with regmap.mapped(translate=2, fast_faults=False):
        library.hot(10, 0)
        pid = os.fork()
        if pid == 0:
            ok = library.hot(1000, 1) == expected(1000, 1) and library.hot(5, 0) == expected(5, 0)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


HOT4 = """
    .globl hot4
hot4:                           # hot4(n): n turns of rdx += [rdi + 8] (rcx = 7), a 4-byte site
    push rbx
    mov r8, rdi
    xor edi, edi
    xor edx, edx
    mov ecx, 7
    .globl site4
site4:
1:  mov rbx, qword ptr [rdi + 8]
    add rdx, rbx
    dec r8
    jnz 1b
    mov rax, rdx
    pop rbx
    ret
"""


def test_a_4_byte_site_finds_room_in_its_one_range_where_its_start_is_taken(tmp_path, unmapped):
    """A 4-byte site's jump is ``cs jmp rel32``, so that its pun falls on the rel32's byte 2 (a
    64 KiB range every 16 MiB) and not its top byte (one range, 832 MiB away, which the full
    suite's crowded address space had filled).  With the nearest range's first 64 KiB taken,
    the stub goes elsewhere."""
    from regmap.runtime import _sys, trampolines
    from regmap.x86 import stub
    lib = assembled(tmp_path, ".intel_syntax noprefix\n.text\n" + HOT4
                    + '.section .note.GNU-stack,"",@progbits\n', "shortstub4")
    lib.hot4.argtypes, lib.hot4.restype = [ctypes.c_long], ctypes.c_long
    site = address(lib, "site4")
    first = stub.pun_windows(stub.pun(site, ctypes.string_at(site, 15)), trampolines.REACH,
                             trampolines.REGION_SIZE)[0] & ~0xFFF
    taken = _sys.LIBC_HELD.mmap(first, trampolines.REGION_SIZE, 0,
                                _sys.MAP_PRIVATE | _sys.MAP_ANONYMOUS | trampolines.MAP_FIXED_NOREPLACE,
                                -1, 0)
    try:
        assert taken == first or not any(r[0] <= first < r[1] for r in trampolines.REGIONS)
        with regmap.mapped(translate=2, fast_faults=False):
            assert lib.hot4(1000) == 7000
            translated = regmap.stats().translated
        assert [t.kind for t in translated] == ["register-addressed"]
    finally:
        if taken == first:
            _sys.unmap(first, trampolines.REGION_SIZE)


AFTER_REWRITTEN = """
    .globl both
both:                           # both(n, skip): n turns of rbx = [rdi]; rax = [8] (rcx)
    push rbx
    mov r8, rdi
    xor edi, edi
    mov ecx, 9
    test rsi, rsi
    jnz 2f
    .globl short_site
short_site:
1:  mov rbx, qword ptr [rdi]
    .globl next_site
next_site:
2:  mov rax, qword ptr [8]
    dec r8
    jnz 1b
    pop rbx
    ret
"""


def test_a_short_site_is_not_rewritten_over_a_rewritten_instruction(tmp_path, unmapped):
    """`mov rax, [8]` after the short site is rewritten in place first (the loop entered past
    the short site); the short site's jump would take in its rewritten bytes, and put those back
    as the program's at unmapping: it is declined, and unmapping gives both their bytes."""
    lib = assembled(tmp_path, ".intel_syntax noprefix\n.text\n" + AFTER_REWRITTEN
                    + '.section .note.GNU-stack,"",@progbits\n', "afterrewritten")
    lib.both.argtypes, lib.both.restype = [ctypes.c_long, ctypes.c_long], ctypes.c_long
    short, after = address(lib, "short_site"), address(lib, "next_site")
    original = ctypes.string_at(short, 11)
    with regmap.mapped(translate=2, fast_faults=False):
        assert lib.both(1, 1) == 9 and lib.both(1, 1) == 9 and lib.both(1, 1) == 9
        assert [t.address for t in regmap.stats().translated] == [after]
        assert lib.both(100, 0) == 9
        assert [t.address for t in regmap.stats().translated] == [after]
    assert ctypes.string_at(short, 11) == original


PROGRAM = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
long hot(long n, long skip);
__asm__(".intel_syntax noprefix\n.text\n" HOT_SOURCE ".att_syntax\n");

static long entered;        /* turns a thread entering at the add starts there */

static void *work(void *arg) {
    long bad = 0;
    for (int i = 0; i < 50; i++) {
        long skip = (long)arg % 2 && i < entered;
        bad += hot(2000, skip) != (skip ? 3 + 5 * 1999 : 5 * 2000);
    }
    return (void *)bad;
}

int main(int argc, char **argv) {
    entered = atol(argv[1]);
    pthread_t threads[4];
    long bad = 0;
    for (long i = 0; i < 4; i++)
        pthread_create(&threads[i], NULL, work, (void *)i);
    for (int i = 0; i < 4; i++) {
        void *result;
        pthread_join(threads[i], &result);
        bad += (long)result;
    }
    printf("%ld %ld %ld\n", hot(100, 0), hot(100, 1), bad);
    return 0;
}
"""


@TRACED_PROGRAMS[0]
@TRACED_PROGRAMS[1]
@pytest.mark.parametrize("entered", [3, 50])
def test_traced_the_same(tmp_path, entered):
    """Under `regmap exec --translate=3`: four threads, two entering at the add `entered` times
    each, through the stub the tracer places (and the trap it maps on to the add's copy); after
    PUN_TRAPS traps the site has its bytes back and faults."""
    from regmap.x86.stub import PUN_TRAPS
    source = tmp_path / "short.c"
    hot = "".join(f'"{line}\\n"' for line in HOT.strip("\n").splitlines())
    source.write_text(PROGRAM.replace("HOT_SOURCE", hot))
    program = tmp_path / "short"
    subprocess.run([CC, "-O2", "-pthread", "-o", program, source], check=True)
    done = subprocess.run([sys.executable, "-m", "regmap.cli", "exec", "--translate=3", "--stats",
                           "--json", "--fast-faults", "0", program, str(entered)],
                          capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == f"{expected(100, 0)} {expected(100, 1)} 0\n"
    stats = next(json.loads(line) for line in done.stderr.splitlines() if '"event":"stats"' in line)
    if 2 * entered < PUN_TRAPS:
        assert [site["kind"] for site in stats["translated"]] == ["register-addressed"]
        assert stats["faults"] < 100
    else:
        assert stats["faults"] > 100_000         # given back: faulting (fast faults off)
