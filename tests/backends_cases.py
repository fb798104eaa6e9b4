"""What tests/test_backends_agree.py runs: the instructions, the random full states, and the four
ways of running one instruction on one state (pure, in-process, traced, the plain CPU).

Every backend runs the same state runner (programs/backends_runner.{c,s}): a batch file holds
the code region and, per case, a full register state and three data pages at fixed addresses
(a stack, a buffer, and for the plain CPU an image of the window); the runner loads the state
(FXRSTOR, VMOVDQU64, KMOVQ, LDMXCSR, POPFQ, the GPRs), jumps to the case's instruction, which
jumps back, and saves everything again.  The pure backend is `regmap.emulate` on the same state.
"""
from __future__ import annotations

import dataclasses
import random
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from iced_x86 import Decoder

import regmap
from regmap.layout import load_layout
from regmap.elf import elf_section_contents
from regmap.x86 import host, supported_codes

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROGRAMS = HERE / "programs"

STATE_IN, STATE_OUT = 0x30000000, 0x30001000
STACK_PAGE, BUFFER_PAGE, IMAGE_PAGE = 0x3002F000, 0x30038000, 0x30040000
PAGES = (STACK_PAGE, BUFFER_PAGE, IMAGE_PAGE)
CODE, CODE_SIZE, SLOT = 0x30100000, 0x10000, 64
PAGE = 0x1000
JUMP_BACK = bytes.fromhex("ff2425") + struct.pack("<I", STATE_IN + 0xA0)   # jmp [IN + 0xa0]

GPRS = "rax rcx rdx rbx rsp rbp rsi rdi r8 r9 r10 r11 r12 r13 r14 r15".split()
CF, PF, AF, ZF, SF, TF, IF, DF, OF, NT, AC, ID = (1 << b for b in (0, 2, 4, 6, 7, 8, 9, 10, 11, 14, 18, 21))
ARITHMETIC = CF | PF | AF | ZF | SF | OF
ID_NT = ID | NT

PROFILE = host.current()
WIDTH = PROFILE.vector_width                 # bits of each vector register the host has
VECTORS = PROFILE.vector_count
MODE = {128: 0, 256: 1}.get(WIDTH, 3 if PROFILE.wide_opmasks else 2)
K_MASK = ((1 << 64) - 1 if PROFILE.wide_opmasks else 0xFFFF) if WIDTH == 512 else 0
MXCSR_WRITABLE = PROFILE.mxcsr_mask


@dataclasses.dataclass(frozen=True)
class Case:
    """One instruction.  `text` is Intel syntax with ``{w}`` where the window's base goes (0, or
    the image page for the plain CPU); `fix` adjusts the random state (pointers, counts);
    `undefined` the flags the SDM leaves undefined; `cpu` false where the plain CPU on an image
    of the window says nothing (rip, the rflags and mxcsr slots, string pointers into it)."""
    name: str
    text: str
    fix: Callable[[random.Random, dict], None] | None = None
    undefined: int = 0
    cpu: bool = True
    needs: str = ""                          # a /proc/cpuinfo flag the instruction needs
    slot_write: bool = False                 # writes the rflags slot


def _string(rsi=True, rdi=True, count=False):
    def fix(rng, regs):
        if rsi:
            regs["rsi"] = rng.randrange(0x30, 0x60)               # in the window (rax..r11)
        if rdi:
            regs["rdi"] = BUFFER_PAGE + rng.randrange(0x100, 0xF00)
        if count:
            regs["rcx"] = rng.randrange(0, 5)
    return fix


def _equal_rax(slot):
    def fix(rng, regs):
        if rng.random() < 0.5:
            regs["rax"] = regs[GPRS[slot // 8]]
    return fix


def _flags_value(rng, regs):
    regs["rax"] = rng.getrandbits(64) & ~(TF | AC)            # never TF, never AC


def _mxcsr_value(rng, regs):
    regs["rcx"] = random_mxcsr(rng) | (rng.getrandbits(32) << 32)


CASES = [
    # Python semantics
    Case("mov-load", "mov rax, qword ptr [{w}+0x8]"),
    Case("mov-store", "mov qword ptr [{w}+0x10], rbx"),
    Case("mov-store-upper-half", "mov dword ptr [{w}+0x14], ecx"),
    Case("mov-imm-unaligned", "mov word ptr [{w}+0x3f], 0x1234"),
    Case("add", "add rax, qword ptr [{w}+0x8]"),
    Case("adc-byte-ch", "adc byte ptr [{w}+0x9], dl"),
    Case("sub-unaligned", "sub qword ptr [{w}+0x3], rsi"),
    Case("xor-unaligned", "xor r9, qword ptr [{w}+0x44]"),
    Case("cmp", "cmp qword ptr [{w}+0x18], r10"),
    Case("test", "test dword ptr [{w}+0x30], edi"),
    Case("inc-unaligned", "inc word ptr [{w}+0x41]"),
    Case("neg", "neg qword ptr [{w}+0x60]"),
    Case("shl-cl", "shl qword ptr [{w}+0x58], cl", undefined=OF | AF),
    Case("shl-1", "shl dword ptr [{w}+0x50], 1", undefined=AF),
    Case("ror-5", "ror qword ptr [{w}+0x68], 5", undefined=OF),
    Case("bt-imm", "bt qword ptr [{w}+0x8], 37", undefined=OF | SF | AF | PF),
    Case("cmovz", "cmovz rax, qword ptr [{w}+0x28]"),
    Case("cmovnz-32", "cmovnz ecx, dword ptr [{w}+0x38]"),
    Case("setc-ah", "setc byte ptr [{w}+0x1]"),
    Case("xadd", "xadd qword ptr [{w}+0x8], rax"),
    Case("cmpxchg", "cmpxchg qword ptr [{w}+0x10], rcx", fix=_equal_rax(0x10)),
    Case("movzx-unaligned", "movzx eax, word ptr [{w}+0x7]"),
    Case("push", "push qword ptr [{w}+0x8]"),
    Case("pop", "pop qword ptr [{w}+0x10]"),
    Case("movsb", "movsb", fix=_string(), cpu=False),
    Case("rep-movsq", "rep movsq", fix=_string(count=True), cpu=False),
    Case("lodsd", "lodsd", fix=_string(rdi=False), cpu=False),
    Case("stosw", "stosw", fix=lambda rng, regs: regs.update(rdi=rng.randrange(0x30, 0x60)), cpu=False),
    Case("rep-cmpsb", "repe cmpsb", fix=_string(count=True), cpu=False),
    Case("read-rip", "mov rax, qword ptr [{w}+0x80]", cpu=False),
    Case("read-rflags", "mov rdx, qword ptr [{w}+0x88]"),
    Case("write-rflags", "mov qword ptr [{w}+0x88], rax", fix=_flags_value, cpu=False, slot_write=True),
    Case("read-mxcsr", "mov esi, dword ptr [{w}+0x90]"),
    Case("write-mxcsr", "mov dword ptr [{w}+0x90], ecx", fix=_mxcsr_value, cpu=False),
    Case("movdqu-unaligned", "movdqu xmm3, xmmword ptr [{w}+0x1a3]"),
    Case("vmovdqu-ymm", "vmovdqu ymm2, ymmword ptr [{w}+0x120]", needs="avx"),
    # the native engine
    Case("addsd", "addsd xmm1, qword ptr [{w}+0x108]"),
    Case("addsd-unaligned", "addsd xmm9, qword ptr [{w}+0x10b]"),
    Case("cvtsi2sd", "cvtsi2sd xmm2, qword ptr [{w}+0x18]"),
    Case("fld", "fld qword ptr [{w}+0x100]"),
    Case("fadd", "fadd qword ptr [{w}+0x128]"),
    Case("fstp", "fstp qword ptr [{w}+0x140]"),
    Case("fstp-tbyte-unaligned", "fstp tbyte ptr [{w}+0x1c6]"),
    Case("aesenc", "aesenc xmm4, xmmword ptr [{w}+0x160]", needs="aes"),
    Case("vfmadd231sd", "vfmadd231sd xmm5, xmm6, qword ptr [{w}+0x1a0]", needs="fma"),
    Case("kmovq-load", "kmovq k1, qword ptr [{w}+0x8]", needs="avx512bw"),
    Case("kmovq-store-unaligned", "kmovq qword ptr [{w}+0x43], k2", needs="avx512bw"),
    Case("vpaddd-zmm", "vpaddd zmm1, zmm2, zmmword ptr [{w}+0x100]", needs="avx512f"),
    Case("vpaddd-zmm-masked-unaligned", "vpaddd zmm3{{k1}}, zmm4, zmmword ptr [{w}+0x205]",
         needs="avx512f"),
    Case("vmovdqu64-masked-store", "vmovdqu64 zmmword ptr ds:{w}+0x180{{k2}}, zmm7", needs="avx512f"),
]


def available(case: Case) -> str | None:
    """Why `case` cannot run on this host, or None."""
    if case.needs and case.needs not in PROFILE.flags:
        return f"the host lacks {case.needs}"
    return None


def assemble(texts: list[str], directory: Path) -> list[bytes]:
    """Each Intel-syntax line's machine code, from one run of ``as``."""
    source, obj = directory / "cases.s", directory / "cases.o"
    body = [".intel_syntax noprefix"]
    for i, text in enumerate(texts):
        body += [f'.section .text.case{i},"ax",@progbits', text]
    source.write_text("\n".join(body) + "\n")
    done = subprocess.run(["as", "--64", "-o", str(obj), str(source)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"as cannot assemble the cases: {done.stderr}")
    sections = elf_section_contents(str(obj))
    return [sections[f".text.case{i}"] for i in range(len(texts))]


def is_native(code: bytes) -> bool:
    """Whether the instruction runs on the native engine (it has no Python semantics)."""
    return Decoder(64, code).decode().code not in supported_codes()


# -- random states ----------------------------------------------------------------------------

def _word(rng: random.Random) -> int:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice((0, 1, 2, (1 << 64) - 1, 1 << 63, (1 << 63) - 1, 0x80, 0xFF, 0x8000_0000))
    if kind == 1:
        return rng.getrandbits(8)
    if kind == 2:
        return struct.unpack("<Q", struct.pack("<d", rng.uniform(-1e6, 1e6)))[0]
    return rng.getrandbits(64)


def random_mxcsr(rng: random.Random) -> int:
    """Every exception masked; random sticky flags, DAZ, rounding and FZ."""
    return (0x1F80 | (rng.getrandbits(16) & (0x3F | 0x40 | 0x6000 | 0x8000))) & MXCSR_WRITABLE


def random_state(rng: random.Random) -> dict:
    """A full register state: basis register name -> value, as the pure backend names them."""
    regs = {name: _word(rng) for name in GPRS}
    regs["rsp"] = STACK_PAGE + 0x400 + rng.randrange(0, 0x800, 8)
    regs["rflags"] = 0x2 | IF | (rng.getrandbits(64) & (ARITHMETIC | DF | NT | ID))
    regs["mxcsr"] = random_mxcsr(rng)
    for i in range(32):
        lanes = [_word(rng) for _ in range(8)] if i < VECTORS else [0] * 8
        value = sum(lane << (64 * n) for n, lane in enumerate(lanes))
        regs[f"zmm{i}"] = value & ((1 << WIDTH) - 1)
    for i in range(8):
        regs[f"k{i}"] = rng.getrandbits(64) & K_MASK
    top, valid = rng.randrange(8), rng.randrange(5)
    for i in range(8):          # ST(i), in stack order
        exponent = rng.randrange(0x3FFF - 40, 0x3FFF + 40) | (rng.getrandbits(1) << 15)
        regs[f"st{i}"] = (exponent << 64) | (1 << 63) | rng.getrandbits(63)
    regs["ftw"] = sum(1 << ((top + i) & 7) for i in range(valid))       # abridged, by physical register
    regs["fcw"] = 0x7F | (rng.choice((0, 2, 3)) << 8) | (rng.randrange(4) << 10)
    regs["fsw"] = (top << 11) | (rng.getrandbits(16) & 0x4700)          # C0..C3
    return regs


def random_page(rng: random.Random) -> bytes:
    return rng.randbytes(PAGE)


# -- the runner's state page -------------------------------------------------------------------

def encode(regs: dict, code_address: int) -> bytes:
    page = bytearray(PAGE)
    for i, name in enumerate(GPRS):
        struct.pack_into("<Q", page, 8 * i, regs[name])
    struct.pack_into("<QIIQQ", page, 0x80, regs["rflags"], regs["mxcsr"], 0, MODE, code_address)
    for i in range(8):
        struct.pack_into("<Q", page, 0x100 + 8 * i, regs[f"k{i}"])
    struct.pack_into("<HHBxHQQII", page, 0x200, regs["fcw"], regs["fsw"], regs["ftw"], 0, 0, 0,
                     regs["mxcsr"], 0)
    for i in range(8):
        page[0x220 + 16 * i:0x22A + 16 * i] = regs[f"st{i}"].to_bytes(10, "little")
    for i in range(16):
        page[0x2A0 + 16 * i:0x2B0 + 16 * i] = (regs[f"zmm{i}"] & ((1 << 128) - 1)).to_bytes(16, "little")
    for i in range(32):
        page[0x400 + 64 * i:0x440 + 64 * i] = regs[f"zmm{i}"].to_bytes(64, "little")
    return bytes(page)


def decode(page: bytes) -> dict:
    regs = {name: struct.unpack_from("<Q", page, 8 * i)[0] for i, name in enumerate(GPRS)}
    regs["rflags"], regs["mxcsr"] = struct.unpack_from("<QI", page, 0x80)
    for i in range(8):
        regs[f"k{i}"] = struct.unpack_from("<Q", page, 0x100 + 8 * i)[0] & K_MASK
    regs["fcw"], regs["fsw"], regs["ftw"] = struct.unpack_from("<HHB", page, 0x200)
    for i in range(8):
        regs[f"st{i}"] = int.from_bytes(page[0x220 + 16 * i:0x22A + 16 * i], "little")
    for i in range(32):
        if WIDTH == 512:
            value = int.from_bytes(page[0x400 + 64 * i:0x440 + 64 * i], "little")
        elif WIDTH == 256 and i < 16:
            value = int.from_bytes(page[0x400 + 64 * i:0x420 + 64 * i], "little")
        elif i < 16:
            value = int.from_bytes(page[0x2A0 + 16 * i:0x2B0 + 16 * i], "little")
        else:
            value = 0
        regs[f"zmm{i}"] = value
    return regs


# -- running a batch ---------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """One case on one state: its code, the state and pages before, and each backend's after."""
    case: Case
    seed: int
    code: bytes
    image_code: bytes        # the same instruction on the image page (for the plain CPU)
    address: int
    before: dict
    pages: tuple[bytes, bytes, bytes]
    after: dict = dataclasses.field(default_factory=dict)       # backend -> (regs, pages)


def batch_file(path: Path, runs: list[Run], image: bool) -> None:
    code = bytearray(CODE_SIZE)
    for run in runs:
        offset = run.address - CODE
        instruction = run.image_code if image else run.code
        code[offset:offset + len(instruction) + len(JUMP_BACK)] = instruction + JUMP_BACK
    with open(path, "wb") as file:
        file.write(struct.pack("<QQ", len(runs), 0) + bytes(code))
        for run in runs:
            file.write(encode(run.before, run.address))
            stack, buffer, _ = run.pages
            file.write(stack + buffer + (window_image(run.before, run.address) if image else bytes(PAGE)))


def read_results(path: Path, runs: list[Run]) -> list[tuple[dict, tuple[bytes, ...]]]:
    data = path.read_bytes()
    size = 4 * PAGE
    assert len(data) == size * len(runs), f"the runner wrote {len(data)} bytes for {len(runs)} cases"
    out = []
    for i in range(len(runs)):
        chunk = data[i * size:(i + 1) * size]
        out.append((decode(chunk[:PAGE]), tuple(chunk[PAGE * (p + 1):PAGE * (p + 2)] for p in range(3))))
    return out


LAYOUT = load_layout()


def window_image(regs: dict, rip: int) -> bytes:
    return LAYOUT.image({**regs, "rip": rip})


def pure(run: Run) -> tuple[dict, tuple[bytes, ...]]:
    stack, buffer, image = run.pages
    memory = {STACK_PAGE: stack, BUFFER_PAGE: buffer, IMAGE_PAGE: bytes(PAGE)}
    result = regmap.emulate(run.code, run.before, rip=run.address, memory=memory, trace=False)
    pages = [bytearray(memory[p]) for p in PAGES]
    for address, data in result.memory_writes:
        index = next(i for i, p in enumerate(PAGES) if p <= address < p + PAGE)
        pages[index][address - PAGES[index]:address - PAGES[index] + len(data)] = data
    return {name: result.regs[name] for name in run.before}, tuple(bytes(p) for p in pages)


def from_image(run: Run, regs: dict, pages: tuple[bytes, ...]) -> tuple[dict, tuple[bytes, ...]]:
    """The plain CPU's result on the image page as the window's: each image byte the instruction
    changed is written to the register bytes it stands for."""
    values = dict(regs)
    before = window_image(run.before, run.address)
    for address, (old, new) in enumerate(zip(before, pages[2])):
        if old != new:
            LAYOUT.write(address, 1, new, values)
    return {name: values[name] for name in regs}, (pages[0], pages[1], bytes(PAGE))


INPROCESS = textwrap.dedent("""
    import ctypes, sys
    import regmap
    library = ctypes.CDLL(sys.argv[1])
    library.regmap_run_file.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    regmap.map_registers(fast_faults=False)     # the emulator (trampolines: test_dispatch_forms)
    status = library.regmap_run_file(sys.argv[2].encode(), sys.argv[3].encode())
    regmap.unmap_registers()
    sys.exit(status)
""")


def build(directory: Path, cc: str) -> tuple[Path, Path]:
    sources = [PROGRAMS / "backends_runner.c", PROGRAMS / "backends_runner.s"]
    executable, library = directory / "backends_runner", directory / "libbackends_runner.so"
    subprocess.run([cc, "-O1", "-o", executable, *sources], check=True)
    subprocess.run([cc, "-O1", "-shared", "-fPIC", "-o", library, *sources], check=True)
    return executable, library


def run_all(runs: list[Run], directory: Path, cc: str, env: dict) -> dict[str, str]:
    """Every run on every backend, the three processes at once; backend -> the problem, if any."""
    executable, library = build(directory, cc)
    window, image = directory / "window.in", directory / "image.in"
    batch_file(window, runs, image=False)
    batch_file(image, [r for r in runs if r.case.cpu], image=True)
    script = directory / "inprocess.py"
    script.write_text(INPROCESS)
    commands = {
        "inprocess": [sys.executable, str(script), str(library), str(window), str(directory / "inprocess.out")],
        "traced": [sys.executable, "-m", "regmap.cli", "exec", "--fast-faults", "0",  # the emulator
                   str(executable), str(window),
                   str(directory / "traced.out")],
        "cpu": [str(executable), str(image), str(directory / "cpu.out")],
    }
    processes = {name: subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
                 for name, argv in commands.items()}
    for run in runs:
        run.after["pure"] = pure(run)
    problems = {}
    for name, process in processes.items():
        _, stderr = process.communicate(timeout=300)
        if process.returncode != 0:
            problems[name] = f"exit status {process.returncode}: {stderr.strip()[-2000:]}"
            continue
        selected = [r for r in runs if r.case.cpu] if name == "cpu" else runs
        for run, result in zip(selected, read_results(directory / f"{name}.out", selected)):
            run.after[name] = from_image(run, *result) if name == "cpu" else result
    if "inprocess" not in problems:
        _rerun_id_nt(runs, directory, library, env, commands["inprocess"])
    return problems


def _rerun_id_nt(runs: list[Run], directory: Path, library: Path, env: dict, argv: list[str]) -> None:
    """In-process, ID and NT are now and then lost after an instruction (1 run in ~1000): each
    run whose ID/NT differ from pure's runs again in a batch of its own, its result kept as
    ``inprocess-again``, so that the test tells an intermittent loss from a steady one."""
    again = [r for r in runs if (r.after["inprocess"][0]["rflags"] ^ r.after["pure"][0]["rflags"]) & ID_NT]
    if not again:
        return
    window = directory / "again.in"
    batch_file(window, again, image=False)
    argv = [*argv[:3], str(window), str(directory / "again.out")]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode == 0:
        for run, result in zip(again, read_results(directory / "again.out", again)):
            run.after["inprocess-again"] = result


def make_runs(seeds: list[int], directory: Path) -> list[Run]:
    cases = [case for case in CASES if available(case) is None]
    codes = assemble([c.text.format(w=0) for c in cases] + [c.text.format(w=IMAGE_PAGE) for c in cases],
                     directory)
    runs = []
    for seed in seeds:
        for i, case in enumerate(cases):
            rng = random.Random(f"{seed}:{case.name}")
            before = random_state(rng)
            if case.fix:
                case.fix(rng, before)
            pages = (random_page(rng), random_page(rng), bytes(PAGE))
            address = CODE + SLOT * i        # the same site for every seed: later seeds run warm
            runs.append(Run(case, seed, codes[i], codes[len(cases) + i], address, before, pages))
    assert len(cases) * SLOT <= CODE_SIZE
    return runs

