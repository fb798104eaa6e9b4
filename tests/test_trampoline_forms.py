"""Every supported form that gets a trampoline, run through it on the CPU and compared with emulation.

For each instruction form regmap supports and the host runs, a random encoding with a constant
window address is drawn; those without an exact register form whose trampoline
`regmap.x86.trampoline.plan` accepts are assembled into native trials (tests/test_runtime_trampoline
has the harness: every general register, rflags, the x87/SSE state (FXSAVE) and every vector
register loaded from a state, the instruction run once, all of it stored back; a fault recorded by
a handler in assembly).  Each trial runs from several random states with every execution
emulated, then with translate=2: once the site has run twice it is a trampoline, and every
state must give the same registers, flags, vector and x87 state, or the same signal, si_code,
si_addr and registers.
"""
from __future__ import annotations

import ctypes
import random
import sys
from pathlib import Path

import pytest
from iced_x86 import Code, OpCodeInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from forms import Impossible, form_info, host_can_run, random_form  # noqa: E402
from runtime_build import assembled, cpu_flags, why_not_native  # noqa: E402
from test_runtime_trampoline import AC, FLAGS, HANDLER, catching  # noqa: E402
from test_runtime_trampoline import trial_source as runtime_trial  # noqa: E402

import regmap  # noqa: E402
from regmap.layout import load_layout  # noqa: E402
from regmap.x86 import host, supported_codes  # noqa: E402
from regmap.x86.trampoline import Declined, plan  # noqa: E402
from regmap.x86.translate import translate  # noqa: E402

REASON = why_not_native()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

LAYOUT = load_layout()
FX = 192                         # FXSAVE area, 16-byte aligned (the buffer is 64-aligned)
VECTORS = FX + 512
WIDE = host.vector_width() >= 512
COUNT, SIZE = (32, 64) if WIDE else (16, 32)
OPMASKS = VECTORS + COUNT * SIZE     # k0-k7 (glibc's own AVX-512 code changes them between runs)
KMOV = "kmovq" if "avx512bw" in cpu_flags() else "kmovw"
STATE_SIZE = OPMASKS + (64 if WIDE else 0)
STATES = 4


def draw_forms(rng: random.Random, shapes: tuple[str, ...], accept, **options) -> list:
    """A form a code regmap supports, the host runs and this vector width reaches, in code order,
    those `accept(form)` keeps.  The address shape is `shapes`' only one (not drawn: `rng.choice`
    would take a number from `rng` even so), or drawn from them before each form: the calls on
    `rng` are the draw, and a seed gives the same forms every time (the traced twins of these tests
    rely on it)."""
    flags = frozenset(cpu_flags())
    encodings = (0, 1, 2) if WIDE else (0, 1)       # legacy, VEX, EVEX
    chosen = []
    for code in sorted(supported_codes()):
        if code == Code.INVALID or OpCodeInfo(code).encoding not in encodings:
            continue
        if not form_info(code).drivable or not host_can_run(code, flags)[0]:
            continue
        try:
            shape = shapes if len(shapes) == 1 else (rng.choice(shapes),)
            form = random_form(code, rng, shapes=shape, **options)
        except Impossible:
            continue
        if accept(form):
            chosen.append(form)
    return chosen


def trampolined(form, at: int | None = None) -> bool:
    """Whether the form gets a trampoline (for the window address `at` of a register address)
    that a trial can run: a random rsp would leave the trial without a stack (test_runtime_translate
    has a write to the rsp slot)."""
    try:
        planned = plan(0x401000, form.bytes, LAYOUT, host.vector_width(), at)
    except Declined:
        return False
    return not (planned.writes and any(name == "rsp" for name, _, _ in planned.placements))


def forms(rng: random.Random) -> list:
    """The constant-address forms without an exact register form that get a trampoline."""
    return draw_forms(rng, ("abs",), lambda form: not form.fixed
                      and translate(0x401000, form.bytes, LAYOUT) is None and trampolined(form))


def trial_source(index: int, code: bytes) -> str:
    """test_runtime_trampoline's trial, with the x87/SSE image, every vector and opmask register
    moved in and out too, and the form as bytes."""
    move = "vmovdqu64" if WIDE else "vmovdqu"
    name = "zmm" if WIDE else "ymm"
    vload = "\n".join(f"    {move} {name}{i}, [rdi + {VECTORS + SIZE * i}]" for i in range(COUNT))
    vsave = "\n".join(f"    {move} [rdi + {VECTORS + SIZE * i}], {name}{i}" for i in range(COUNT))
    if WIDE:
        vload += "\n" + "\n".join(f"    {KMOV} k{i}, [rdi + {OPMASKS + 8 * i}]" for i in range(8))
        vsave += "\n" + "\n".join(f"    {KMOV} [rdi + {OPMASKS + 8 * i}], k{i}" for i in range(8))
    return runtime_trial(index, ".byte " + ", ".join(str(b) for b in code),
                         load=f"    fxrstor [rdi + {FX}]\n{vload}", save=f"{vsave}\n    fxsave [rdi + {FX}]")


def build_trials(directory: Path, chosen: list) -> ctypes.CDLL:
    """A library of ``trial_<i>(state)`` for each form of `chosen` (the other forms tests' too)."""
    lib = assembled(directory, ".intel_syntax noprefix\n.text\n" + HANDLER
                    + "".join(trial_source(i, f.bytes) for i, f in enumerate(chosen))
                    + '.section .note.GNU-stack,"",@progbits\n', directory.name)
    for i in range(len(chosen)):
        getattr(lib, f"trial_{i}").argtypes = [ctypes.c_void_p]
        getattr(lib, f"trial_{i}").restype = ctypes.c_long
    return lib


@pytest.fixture(scope="module")
def trials(tmp_path_factory):
    chosen = forms(random.Random(17))
    return build_trials(tmp_path_factory.mktemp("trampoline-forms"), chosen), chosen


def random_state(rng: random.Random, form, fx: bytes) -> bytes:
    state = bytearray(STATE_SIZE)
    for i in range(16):
        state[8 * i:8 * i + 8] = rng.getrandbits(64).to_bytes(8, "little")
    mask, value = form.rflags_fixed
    flags = (0x202 | rng.choice((0, 0x1, 0x40, 0x8D5, 0x85, 0x400))) & ~mask | value
    state[FLAGS:FLAGS + 8] = (flags & ~AC).to_bytes(8, "little")
    state[FX:FX + 512] = fx
    state[VECTORS:] = rng.randbytes(STATE_SIZE - VECTORS)
    return bytes(state)


def run(lib, index: int, state: bytes) -> tuple:
    buffer = ctypes.create_string_buffer(STATE_SIZE + 64)
    start = -ctypes.addressof(buffer) % 64
    address = ctypes.addressof(buffer) + start
    ctypes.memmove(address, state, STATE_SIZE)
    record = (ctypes.c_char * (8 * 21)).in_dll(lib, "record")
    ctypes.memset(record, 0, ctypes.sizeof(record))
    outcome = getattr(lib, f"trial_{index}")(address)
    if outcome == 2:
        return ("the red zone below rsp changed",)
    if outcome:
        return ("fault", bytes(record))
    return ("ran", ctypes.string_at(address, STATE_SIZE))


def _default_fx() -> bytes:
    fx = bytearray(512)
    fx[0:2] = (0x37F).to_bytes(2, "little")      # FCW
    fx[24:28] = (0x1F80).to_bytes(4, "little")   # MXCSR
    fx[28:32] = (0xFFFF).to_bytes(4, "little")   # MXCSR_MASK
    return bytes(fx)


def drawn_states(seed: int, chosen: list, count: int, draw=random_state) -> list[list[bytes]]:
    """`count` states a form of `chosen`, each `draw(rng, form, fx)` from one `random.Random(seed)`."""
    rng = random.Random(seed)
    fx = _default_fx()
    return [[draw(rng, form, fx) for _ in range(count)] for form in chosen]


def run_emulated(lib, states: list[list[bytes]]) -> list[list[tuple]]:
    """Each trial from each of its states, with every execution emulated."""
    with regmap.mapped(translate=0, fast_faults=False):
        return [[run(lib, i, s) for s in form_states] for i, form_states in enumerate(states)]


@pytest.fixture
def caught(trials):
    yield from catching(trials[0])


def test_every_trampoline_form_runs_as_emulated(trials, caught):
    lib, chosen = trials
    states = drawn_states(29, chosen, STATES)
    emulated = run_emulated(lib, states)
    with regmap.mapped(translate=2, fast_faults=False):
        for i, form_states in enumerate(states):        # the sites that run become hot
            for s in form_states:
                run(lib, i, s)
        through = [[run(lib, i, s) for s in form_states] for i, form_states in enumerate(states)]
        kinds = {t.address: t.kind for t in regmap.stats().translated}
    sites = [ctypes.cast(getattr(lib, f"site_{i}"), ctypes.c_void_p).value for i in range(len(chosen))]
    translated = [i for i, site in enumerate(sites) if kinds.get(site) == "trampoline"]
    wrong = [(chosen[i].instruction, j) for i in translated for j in range(STATES)
             if through[i][j] != emulated[i][j]]
    print(f"{len(chosen)} forms with a trampoline drawn, {len(translated)} run through it")
    assert not wrong, f"{len(wrong)} differ: {wrong[:20]}"
    assert len(translated) > 100
