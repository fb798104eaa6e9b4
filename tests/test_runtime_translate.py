"""Hot-site translation in-process: map_registers(translate=N) on native loops built now.

Each form runs in a loop (its flags carried from one iteration to the next) from the same
random registers twice: with every execution emulated, and with the site rewritten into its
register form after three faults.  The two must end with the same registers and flags.
"""
from __future__ import annotations

import ctypes
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import build_library, cpu_flags, declare, in_threads, why_not_native  # noqa: E402

import regmap  # noqa: E402
from regmap.runtime import _sys, patch  # noqa: E402
from regmap.runtime.frame import CODE_SITES  # noqa: E402
from regmap.layout import load_layout  # noqa: E402
from regmap.x86.translate import translate  # noqa: E402

REASON = why_not_native()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
FLAGS_OFFSET, VECTORS_OFFSET, STATE_SIZE = 128, 136, 136 + 4 * 32
ITERATIONS = 50
STATES = 4



def red_zone(instruction: str, top: int) -> str:
    """`instruction` between stores of 14 registers to the red zone, from rsp - `top` down, and
    loads of them back: a trampoline that wrote there would change the registers."""
    saved = [r for r in GPRS if r not in ("rax", "rsp")]
    slots = [(r, top + 8 * i) for i, r in enumerate(saved)]
    return ("\n".join(f"    mov qword ptr [rsp - {at}], {r}" for r, at in slots)
            + f"\n@   {instruction}\n"
            + "\n".join(f"    mov {r}, qword ptr [rsp - {at}]" for r, at in slots))


# (instruction(s), whether the window instruction is translated in place: else a trampoline)
FORMS = [
    ("add rax, qword ptr [8]", True),
    ("add eax, dword ptr [0x10]", True),
    ("sub r9, qword ptr [0x18]", True),
    ("adc rbx, qword ptr [8]", True),
    ("sbb cx, word ptr [0x10]", True),
    ("and dl, byte ptr [9]", True),
    ("or al, byte ptr [0x11]", True),
    ("xor r10, qword ptr [0x30]", True),
    ("cmp rax, qword ptr [0x10]", True),
    ("test qword ptr [8], rdx", True),
    ("mov qword ptr [0x10], rax", True),
    ("mov word ptr [0x18], cx", True),
    ("mov byte ptr [9], al", True),
    ("mov rsi, qword ptr [0x38]", True),
    ("movzx eax, byte ptr [9]", True),
    ("movsx rbx, word ptr [8]", True),
    ("inc qword ptr [0x40]", True),
    ("neg word ptr [0x48]", True),
    ("not byte ptr [0x50]", True),
    ("shl qword ptr [0x18], cl", True),
    # OF beyond one bit is undefined, and an Intel CPU leaves it alone for rol r64, imm8 but not
    # for rol m64, imm8: translated only where the host answers alike (None: the host decides)
    ("rol qword ptr [8], 5", None),
    ("imul rax, qword ptr [0x10], 7", True),
    ("imul rdx, qword ptr [8]", True),
    ("mul qword ptr [0x18]", True),
    ("cmovc rax, qword ptr [0x10]", True),
    ("setnz byte ptr [0x19]", True),
    ("xchg qword ptr [8], rax", True),
    ("xadd qword ptr [0x10], rbx", True),
    ("cmpxchg qword ptr [0x18], rcx", True),
    ("bts qword ptr [8], 7", True),
    ("push qword ptr [8]\n    pop rdx", True),
    ("movdqu xmm1, xmmword ptr [0x100]", True),
    ("paddd xmm0, xmmword ptr [0x120]", True),
    ("movdqu xmmword ptr [0x140], xmm1", True),
    ("pinsrq xmm0, qword ptr [8], 1", True),
    ("pextrq qword ptr [0x18], xmm1, 1", True),
    ("pshufd xmm3, xmmword ptr [0x120], 0x1b", True),
    ("popcnt rax, qword ptr [8]", True),
    ("mov rsi, qword ptr [0x80]", True),           # the rip slot: lea rsi, [rip]
    # call rdx pushes the same return address as call [0x10] (the padding prefixes go in front)
    ("lea rdx, [rip + 3f]\n@   call qword ptr [0x10]\n    jmp 2f\n3:  pop r8\n    push r8\n    ret\n2:",
     True),
    ("mov dword ptr [8], eax", False),
    ("add rax, qword ptr [4]", False),
    # trampolines: the forms of issue 17
    ("mov rax, qword ptr [4]", False),
    ("mov byte ptr [1], 7", True),                # mov ah, 7
    ("add rdx, qword ptr [0x7c]", False),          # straddles r15 and rip
    ("or qword ptr [0x88], 0x400", False),         # the rflags slot: the window write wins
    ("and qword ptr [0x88], -2", False),
    ("mov rbx, qword ptr [0x88]", False),          # a read of rflags is a pushfq
    ("movdqu xmm0, xmmword ptr [0]", False),       # rcx:rax
    ("addsd xmm0, qword ptr [0x8]", False),
    ("fld qword ptr [0x10]\n    fstp st(0)", False),
    ("add rdx, qword ptr [0x84]", False),          # the rip slot's upper half and rflags
    ("add rbx, qword ptr [0x1c]", False),          # rbx[63:32] and the rsp slot's low half
    ("sub dword ptr [0x20], 64\n    add rsp, 64", False),     # a write to the rsp slot
    ("addr32 add rax, qword ptr [4]", False),      # 67h: [disp32] zero-extended
    # the red zone (128 bytes below rsp, a leaf function's own) is left alone
    (red_zone("mov rax, qword ptr [4]", 8), False),
    (red_zone("mov rax, qword ptr [4]", 24), False),
]
AVX_FORMS = [
    ("vpaddq ymm0, ymm1, ymmword ptr [0x160]", True),
    ("vmovdqu ymm2, ymmword ptr [0x100]", True),
    ("vmovdqu xmmword ptr [0x100], xmm1", False),
    ("vpaddd ymm1, ymm2, ymmword ptr [0x110]", False),   # half of ymm0, half of ymm1
    ("vmovdqu ymmword ptr [0x110], ymm3", False),        # half of ymm0, half of ymm1
    ("vaesenc xmm3, xmm3, xmmword ptr [0x128]", False),
    (red_zone("vpaddd ymm1, ymm2, ymmword ptr [0x110]", 8), False),
]
AVX = "avx2" in cpu_flags()


def all_forms():
    return FORMS + (AVX_FORMS if AVX else [])


def loop_source(index: int, instruction: str) -> str:
    """form_INDEX(state, n): registers and flags from `state`, `instruction` n times, back to it.

    The window instruction is the first, or the one after "@" (labelled insn_INDEX)."""
    if "@" not in instruction:
        instruction = "@" + instruction
    instruction = instruction.replace("@", f".globl insn_{index}\ninsn_{index}:\n    ")
    loads = "\n".join(f"    mov {r}, [rdi + {8 * i}]" for i, r in enumerate(GPRS)
                      if r not in ("rsp", "rdi"))
    saves = "\n".join(f"    mov [rdi + {8 * i}], {r}" for i, r in enumerate(GPRS)
                      if r not in ("rsp", "rdi"))
    vector = "vmovdqu" if AVX else "movdqu"
    register = "ymm" if AVX else "xmm"
    vload = "\n".join(f"    {vector} {register}{i}, [rdi + {VECTORS_OFFSET + 32 * i}]" for i in range(4))
    vsave = "\n".join(f"    {vector} [rdi + {VECTORS_OFFSET + 32 * i}], {register}{i}" for i in range(4))
    return f"""
    .globl form_{index}
form_{index}:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rip + state_{index}], rdi
    mov [rip + count_{index}], rsi
    mov rax, [rdi + {FLAGS_OFFSET}]
    mov [rip + flags_{index}], rax
{vload}
{loads}
    mov rdi, [rdi + 56]
1:  push qword ptr [rip + flags_{index}]
    popfq
    {instruction}
    pushfq
    pop qword ptr [rip + flags_{index}]
    dec qword ptr [rip + count_{index}]
    jnz 1b
    push rdi
    mov rdi, [rip + state_{index}]
{saves}
    pop qword ptr [rdi + 56]
    mov rax, [rip + flags_{index}]
    mov [rdi + {FLAGS_OFFSET}], rax
{vsave}
    {"vzeroupper" if AVX else ""}
    cld
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
    .data
state_{index}: .quad 0
count_{index}: .quad 0
flags_{index}: .quad 0
    .text
"""


@pytest.fixture(scope="module")
def forms_library(tmp_path_factory):
    directory = tmp_path_factory.mktemp("translate-forms")
    source = directory / "forms.s"
    source.write_text(".intel_syntax noprefix\n.text\n"
                      + "".join(loop_source(i, text) for i, (text, _) in enumerate(all_forms()))
                      + '.section .note.GNU-stack,"",@progbits\n')
    library = ctypes.CDLL(str(build_library(directory, source, "libforms.so")))
    for i in range(len(all_forms())):
        getattr(library, f"form_{i}").argtypes = [ctypes.c_void_p, ctypes.c_long]
        getattr(library, f"form_{i}").restype = None
    return library


@pytest.fixture(scope="module")
def snippets(tmp_path_factory):
    return declare(ctypes.CDLL(str(build_library(tmp_path_factory.mktemp("translate-snippets")))))


@pytest.fixture
def unmapped():
    regmap.unmap_registers()
    regmap.runtime.reset_stats()    # the per-site counts translate=N compares with start at 0
    yield
    regmap.unmap_registers()


def site_address(library, index: int) -> int:
    return ctypes.cast(getattr(library, f"insn_{index}"), ctypes.c_void_p).value


def random_state(rng: random.Random) -> ctypes.Array:
    state = ctypes.create_string_buffer(STATE_SIZE)
    for i in range(16):
        ctypes.c_uint64.from_address(ctypes.addressof(state) + 8 * i).value = rng.getrandbits(64)
    flags = 0x202 | rng.choice((0, 0x1, 0x40, 0x8D5, 0x85, 0x400, 0x8D5 | 0x400))
    ctypes.c_uint64.from_address(ctypes.addressof(state) + FLAGS_OFFSET).value = flags
    ctypes.memmove(ctypes.addressof(state) + VECTORS_OFFSET, rng.randbytes(128), 128)
    return state


def run_form(library, index: int, state: ctypes.Array) -> bytes:
    copy = ctypes.create_string_buffer(state.raw, STATE_SIZE)
    getattr(library, f"form_{index}")(copy, ITERATIONS)
    return copy.raw


def test_each_form_gives_the_same_registers_and_flags_translated(forms_library, unmapped):
    rng = random.Random(1111)
    # several states per form: the first makes the site hot, the others run translated throughout
    states = [[random_state(rng) for _ in range(STATES)] for _ in all_forms()]
    with regmap.mapped(translate=0):
        emulated = [[run_form(forms_library, i, s) for s in form] for i, form in enumerate(states)]
        assert not regmap.stats().translated
    regmap.runtime.reset_stats()   # a site's count is what translate=N compares with
    with regmap.mapped(translate=3):
        before = regmap.stats().emulated
        translated = [[run_form(forms_library, i, s) for s in form] for i, form in enumerate(states)]
        stats = regmap.stats()
        done = {t.address: t for t in stats.translated}
    expected_faults = 0
    for i, (text, expect_translated) in enumerate(all_forms()):
        # every flag, those the SDM leaves undefined too: emulated, they are the host CPU's
        assert translated[i] == emulated[i], f"{text}: registers or flags differ"
        site = site_address(forms_library, i)
        if expect_translated is None:
            expect_translated = translate(site, ctypes.string_at(site, 15), load_layout()) is not None
        kind = "in place" if expect_translated else "trampoline"
        assert site in done and done[site].kind == kind, text
        expected_faults += 3
    assert stats.emulated - before == expected_faults


def test_eight_threads_run_one_site_while_it_is_translated(snippets, unmapped):
    """The multi-threaded protocol: int3, sync, tail, sync, first byte, sync (membarrier)."""
    if not patch.sync_core_available():
        pytest.skip("membarrier SYNC_CORE is not available: threads are never patched")
    faults = 100_000
    results: dict[int, int] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(index: int) -> None:
        try:
            start.wait()
            results[index] = snippets.add_rcx_loop(faults, index + 1)
        except BaseException as error:  # pragma: no cover
            errors.append(error)

    with regmap.mapped(translate=2000):
        in_threads(work, 8)
        translated = regmap.stats().translated
    assert not errors
    assert results == {i: faults * (i + 1) for i in range(8)}
    assert [t.new_text for t in translated] == ["add rax,rcx"]
    assert translated[0].address in patch.PLANTED       # the int3 protocol was used


def indirect_library(tmp_path, after: str):
    """``long indirect(long n, long rcx)``: n times ``add rax, [rdi]`` with rdi = 8 (rcx), a
    3-byte site, then `after`, then the loop's count."""
    source = tmp_path / "indirect.s"
    source.write_text(f""".intel_syntax noprefix
    .text
    .globl indirect
indirect:
    mov rcx, rsi
    mov rsi, rdi
    mov edi, 8
    xor eax, eax
1:  add rax, qword ptr [rdi]
    {after}
    test rsi, rsi
    jnz 1b
    ret
    .section .note.GNU-stack,"",@progbits
""")
    library = ctypes.CDLL(str(build_library(tmp_path, source, "libindirect.so")))
    library.indirect.argtypes, library.indirect.restype = [ctypes.c_long, ctypes.c_long], ctypes.c_long
    return library


def test_a_short_register_addressed_site_is_patched_with_the_instruction_after_it(tmp_path, unmapped):
    """Its jump covers ``dec rsi`` too, which moves into the stub (regmap.x86.stub)."""
    library = indirect_library(tmp_path, "dec rsi")
    with regmap.mapped(translate=1, fast_faults=False):
        before = regmap.stats().emulated
        assert library.indirect(200, 5) == 1000
        stats = regmap.stats()
    assert [t.kind for t in stats.translated] == ["register-addressed"]
    assert "dec rsi" in stats.translated[0].new_text
    assert stats.emulated - before < 5


def test_a_short_site_followed_by_a_branch_is_never_patched(tmp_path, unmapped):
    library = indirect_library(tmp_path, "jmp 2f\n2:  dec rsi")
    with regmap.mapped(translate=1, fast_faults=False):
        before = regmap.stats().emulated
        assert library.indirect(200, 5) == 1000
        stats = regmap.stats()
    assert stats.translated == () and stats.emulated - before == 200


def test_a_site_whose_bytes_changed_is_not_patched(snippets, unmapped):
    address = ctypes.cast(snippets.add_rcx_loop, ctypes.c_void_p).value
    code = ctypes.string_at(address, 64)
    site = address + code.index(bytes.fromhex("48 03 04 25 08 00 00 00"))
    original = ctypes.string_at(site, 8)
    other = bytes.fromhex("48 03 04 25 10 00 00 00")          # add rax, [0x10]: rdx
    with regmap.mapped(translate=5):
        assert snippets.add_rcx_loop(2, 3) == 6                # decoded, 2 faults: not yet hot
        assert _sys.write_code(site, other)                   # the program rewrites its code
        try:
            # the decoded bytes are stale now: the site must not be patched from them
            assert patch.translate_site(CODE_SITES[site], regmap.runtime.current_layout()) is None
            assert ctypes.string_at(site, 8) == other
            CODE_SITES[site].translation = None
            # the next faults decode the new instruction, which is then translated correctly
            snippets.add_rcx_loop(10, 3)                     # rax += rdx, whatever rdx is
            translated = {t.address: t for t in regmap.stats().translated}
            assert translated[site].old == other and translated[site].new_text == "add rax,rdx"
        finally:
            regmap.unmap_registers()
            _sys.write_code(site, original)
    assert ctypes.string_at(site, 8) == original


def test_unmapping_restores_the_original_bytes_and_the_site_faults_again(snippets, unmapped):
    address = ctypes.cast(snippets.add_rcx_loop, ctypes.c_void_p).value
    site = address + ctypes.string_at(address, 64).index(bytes.fromhex("48 03 04 25 08 00 00 00"))
    original = ctypes.string_at(site, 8)
    library_file = Path(snippets._name).read_bytes()
    with regmap.mapped(translate=3):
        assert snippets.add_rcx_loop(1000, 2) == 2000
        assert ctypes.string_at(site, 8) != original
        # the library's text is a read-only private file mapping: the page was copied on write
        assert Path(snippets._name).read_bytes() == library_file
        assert regmap.stats().by_site[site] == 3
    assert ctypes.string_at(site, 8) == original
    assert not patch.PATCHES
    with regmap.mapped(translate=0):
        before = regmap.stats().emulated
        assert snippets.add_rcx_loop(100, 2) == 200
        assert regmap.stats().emulated - before == 100


def test_trace_and_stats_report_the_translation(snippets, unmapped):
    events = []
    with regmap.mapped(translate=2):
        regmap.runtime.set_trace(events.append)
        try:
            assert snippets.add_rcx_loop(10, 1) == 10
        finally:
            regmap.runtime.set_trace(None)
        stats = regmap.stats()
    translations = [e for e in events if isinstance(e, patch.TranslationEvent)]
    assert len(translations) == 1 and translations[0].translation.new_text == "add rax,rcx"
    assert "translated: add rax,[8] -> add rax,rcx" in str(translations[0])
    assert "add rax,[8]  ->  add rax,rcx" in str(stats)


def test_translation_is_off_by_default_and_checked(snippets, unmapped):
    with regmap.mapped():
        before = regmap.stats().emulated
        assert snippets.add_rcx_loop(50, 1) == 50
        assert regmap.stats().emulated - before == 50 and not regmap.stats().translated
    with pytest.raises(ValueError, match="translate"):
        regmap.map_registers(translate=-1)


def test_a_forked_child_keeps_its_patched_code(snippets, unmapped, tmp_path):
    """fork inherits the rewritten pages and the records; the child's unmap restores its copy."""
    script = f"""
import ctypes, os, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent / 'snippets')!r})
from runtime_build import declare
import regmap
lib = declare(ctypes.CDLL({str(snippets._name)!r}))
regmap.map_registers(translate=3)
assert lib.add_rcx_loop(100, 2) == 200
pid = os.fork()
if pid == 0:
    ok = lib.add_rcx_loop(100, 3) == 300 and regmap.stats().emulated == 3
    regmap.unmap_registers()
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
assert lib.add_rcx_loop(100, 4) == 400 and regmap.stats().emulated == 3
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout == "ok\n", result.stderr
