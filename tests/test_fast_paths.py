"""The compiled fast paths beyond constant addresses, against the generic path and the host CPU.

- Pure: every form below has a fast function, and for random registers it leaves exactly what
  the generic path (``trace=True``) leaves: every register, real-memory write and refusal.
  (tests/test_oracle.py runs ``regmap.emulate(trace=False)``, so the fast paths of all the
  forms it draws are also checked there against the CPU.)
- In-process: each form runs natively under ``map_registers()`` beside its register
  equivalent (``xadd [8], rax`` beside ``xadd rcx, rax``); the CPU's result is the oracle.
- Bulk string runs: a ``rep movsb`` out of the window, and one whose destination ends part-way
  (rcx, rsi and rdi stop where the CPU's would).
"""
from __future__ import annotations

import ctypes
import random
import sys
from pathlib import Path

import pytest

import regmap
from regmap.errors import RegmapError
from regmap.pure import emulator_for
from regmap.x86.compiler import compile_form

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import build_library, why_not_native  # noqa: E402

M64 = (1 << 64) - 1
STACK = 0x7000_0000
GENERAL = ("rax", "rcx", "rdx", "rbx", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
           "r13", "r14", "r15")

# (bytes, registers forced for the window address)
FORMS = [
    ("48 03 07", {"rdi": 8}),                          # add rax, [rdi]
    ("48 03 07", {"rdi": 0x13}),                       # add rax, [rdi], unaligned
    ("8b 44 9d 00", {"rbp": 4, "rbx": 1}),             # mov eax, [rbp+rbx*4]
    ("48 8b 44 9d 10", {"rbp": 0x70, "rbx": 1}),       # mov rax, [rbp+rbx*4+0x10]: rip slot
    ("67 48 8b 07", {"rdi": 0xFFFF_FFFF_0000_0010}),   # mov rax, [edi]: wraps at 32 bits
    ("66 89 46 02", {"rsi": 0x3A}),                    # mov [rsi+2], ax
    ("48 0f c1 04 25 08 00 00 00", {}),                # xadd [8], rax
    ("48 0f c1 0c 25 08 00 00 00", {}),                # xadd [8], rcx
    ("0f c1 0c 25 04 00 00 00", {}),                   # xadd [4], ecx
    ("86 04 25 09 00 00 00", {}),                      # xchg [9], al
    ("48 87 04 25 04 00 00 00", {}),                   # xchg [4], rax
    ("48 87 0b", {"rbx": 0x10}),                       # xchg [rbx], rcx
    ("48 0f b1 0c 25 10 00 00 00", {}),                # cmpxchg [0x10], rcx
    ("0f b1 0c 25 04 00 00 00", {}),                   # cmpxchg [4], ecx
    ("f0 48 0f b1 0c 25 00 00 00 00", {}),             # lock cmpxchg [0], rcx: always equal
    ("ff 34 25 08 00 00 00", {}),                      # push qword [8]
    ("ff 34 25 20 00 00 00", {}),                      # push qword [0x20]: the old rsp
    ("66 ff 34 25 08 00 00 00", {}),                   # push word [8]
    ("8f 04 25 10 00 00 00", {}),                      # pop qword [0x10]
    ("8f 04 25 20 00 00 00", {}),                      # pop qword [0x20]: the popped value wins
    ("ff 14 25 08 00 00 00", {}),                      # call [8]
    ("ff 24 25 08 00 00 00", {}),                      # jmp [8]
    ("66 0f fe 0c 25 00 00 00 00", {}),                # paddd xmm1, [0]
    ("66 0f fb 0c 25 10 00 00 00", {}),                # psubq xmm1, [0x10]
    ("66 0f f8 0c 25 20 00 00 00", {}),                # psubb xmm1, [0x20]
    ("66 0f ee 0c 25 00 00 00 00", {}),                # pmaxsw xmm1, [0]
    ("66 0f ef 0c 25 30 00 00 00", {}),                # pxor xmm1, [0x30]
    ("c5 f1 fe 04 25 00 00 00 00", {}),                # vpaddd xmm0, xmm1, [0]
    ("c5 f5 fd 04 25 00 01 00 00", {}),                # vpaddw ymm0, ymm1, [0x100]
    ("66 0f fe 0c 25 08 00 00 00", {}),                # paddd xmm1, [8]: misaligned, #GP
    ("f3 0f 6f 04 25 00 01 00 00", {}),                # movdqu xmm0, [0x100]
    ("f3 a4", {"rsi": 0x40, "rdi": STACK - 0x100, "rcx": 64}),        # rep movsb out
    ("f3 48 a5", {"rsi": 0x0, "rdi": STACK - 0xF8, "rcx": 20}),       # rep movsq out
    ("f3 a4", {"rsi": 0x30, "rdi": STACK - 0x100, "rcx": 0x60}),      # over the rip slot
    ("f3 a4", {"rsi": 0x40, "rdi": STACK - 0x100, "rcx": 64, "rflags": 0x400}),  # backwards
    ("f3 a4", {"rsi": 0x40, "rdi": STACK + 0xF0, "rcx": 64}),         # runs off the memory
]


def _outcome(code: bytes, regs: dict, trace: bool):
    memory = {STACK - 0x100: bytes(range(256)) * 2}
    try:
        emu = regmap.emulate(code, regs, memory=memory, trace=trace, max_steps=1)
    except RegmapError as error:
        return type(error).__name__
    return dict(emu.regs), emu.memory_writes


@pytest.mark.parametrize("hex_code, fixed", FORMS, ids=[code for code, _ in FORMS])
def test_fast_path_equals_generic_path(hex_code, fixed):
    code = bytes.fromhex(hex_code)
    form = emulator_for(None).form_at(0x400000, code)
    assert form.fast is not None, f"{form.disassembly} has no fast path"
    rng = random.Random(hex_code)
    for _ in range(40):
        regs = {name: rng.getrandbits(64) for name in GENERAL}
        regs.update(rsp=STACK, rflags=rng.getrandbits(12) & 0x8D5)
        regs.update({f"zmm{n}": rng.getrandbits(256) for n in range(3)})
        if rng.random() < 0.3:      # equal operands: cmpxchg succeeds, flags of zero results
            regs["rdx"] = regs["rax"]
        regs.update(fixed)
        assert _outcome(code, regs, False) == _outcome(code, regs, True), form.disassembly


def test_register_address_outside_the_window_is_left_to_the_generic_path():
    code = bytes.fromhex("48 03 07")                   # add rax, [rdi]
    regs = {"rdi": STACK - 0x100, "rax": 5}
    assert _outcome(code, regs, False) == _outcome(code, regs, True)
    form = emulator_for(None).form_at(0x400000, code)
    assert STACK - 0x100 not in form.fast.bodies        # declined, not cached


def test_one_compiled_function_per_instruction_not_per_site():
    layout = regmap.layout.load_layout()
    emulator = emulator_for(layout)
    first = emulator.form_at(0x500000, bytes.fromhex("48 03 04 25 08 00 00 00"))
    second = emulator.form_at(0x600000, bytes.fromhex("48 03 04 25 08 00 00 00"))
    assert first.fast is second.fast                   # the next rip is rip + the length
    assert compile_form(first, layout) is first.fast
    regs = {"rax": 1, "rcx": 2}
    for rip in (0x500000, 0x600000):                   # and each lands after its own copy
        emu = regmap.emulate("48 03 04 25 08 00 00 00", regs, rip=rip, trace=False,
                             max_steps=1)
        assert emu.regs["rip"] == rip + 8 and emu.regs["rax"] == 3


# -- bulk string runs ---------------------------------------------------------------------------

def test_rep_movsb_out_of_the_window_copies_the_register_image():
    rng = random.Random(7)
    regs = {name: rng.getrandbits(64) for name in GENERAL}
    regs.update(rsi=0x40, rdi=0x10000, rcx=64)
    emu = regmap.emulate("f3 a4", regs, memory={0x10000: bytes(64)}, max_steps=1)
    image = b"".join(regs[f"r{n}"].to_bytes(8, "little") for n in range(8, 16))
    assert emu.memory_writes == [(0x10000, image)]
    assert (emu.regs["rcx"], emu.regs["rsi"], emu.regs["rdi"]) == (0, 0x80, 0x10040)


@pytest.mark.parametrize("hex_code, size", [("f3 a4", 1), ("f3 48 a5", 8), ("f3 48 ab", 8)])
def test_a_fault_part_way_stops_where_the_cpu_does(hex_code, size):
    """The destination's page ends 24 bytes in: the elements before it are done, rcx, rsi and
    rdi count them, rip stays on the instruction (it restarts, and faults, natively)."""
    end = 0x10000
    count = 64 // size
    regs = {"rsi": 0x40, "rdi": end - 24, "rcx": count, "rax": 0x1122334455667788}
    emu = regmap.emulate(hex_code, regs, memory={end - 0x1000: bytes(0x1000)}, max_steps=1)
    done = 24 // size
    assert emu.regs["rip"] == 0x400000
    assert emu.regs["rcx"] == count - done
    assert emu.regs["rdi"] == end - 24 + done * size
    if hex_code != "f3 48 ab":
        assert emu.regs["rsi"] == 0x40 + done * size
    assert sum(len(data) for _, data in emu.memory_writes) == done * size
    with pytest.raises(regmap.errors.MemoryFault):     # and the restart faults at once
        regmap.emulate(hex_code, dict(emu.regs), memory={end - 0x1000: bytes(0x1000)},
                       max_steps=1)


# -- in-process, against the CPU ----------------------------------------------------------------

# state: rax rcx rdx rbx rsi rdi r8 rflags xmm1(2 words) out(8 words)
LOAD = """
    push rbx
    push rbp
    mov rbp, rdi
    mov rax, [rbp + 0]
    mov rcx, [rbp + 8]
    mov rdx, [rbp + 16]
    mov rbx, [rbp + 24]
    mov rsi, [rbp + 32]
    mov rdi, [rbp + 40]
    mov r8, [rbp + 48]
    movdqu xmm1, [rbp + 64]
    push qword ptr [rbp + 56]
    popfq
"""
STORE = """
    pushfq
    pop qword ptr [rbp + 56]
    mov [rbp + 0], rax
    mov [rbp + 8], rcx
    mov [rbp + 16], rdx
    mov [rbp + 24], rbx
    mov [rbp + 32], rsi
    mov [rbp + 40], rdi
    mov [rbp + 48], r8
    movdqu [rbp + 64], xmm1
    pop rbp
    pop rbx
    ret
"""
# name: (through the window, the same natively); the loads set rdi = 8 where an address needs it
PAIRS = {
    "xadd": ("xadd qword ptr [8], rax", "xadd rcx, rax"),
    "xchg": ("xchg qword ptr [4], rax", "mov r8, rax\n shr r8, 32\n shl rcx, 32\n shr rcx, 32\n"
             " shl r8, 32\n or r8, rcx\n mov rcx, r8\n mov r8d, eax\n shl rax, 32\n shr rax, 32\n"
             " mov rax, [rbp+8]\n shr rax, 32\n shl rax, 32\n or rax, 0\n"),
    "cmpxchg": ("cmpxchg qword ptr [0x10], rcx", "cmpxchg rdx, rcx"),
    "add_rdi": ("mov rdi, 8\n add rax, qword ptr [rdi]", "mov rdi, 8\n add rax, rcx"),
    "index": ("xor ebx, ebx\n mov rsi, 4\n sub rax, qword ptr [rbx + rsi*4]",
              "xor ebx, ebx\n mov rsi, 4\n sub rax, rdx"),
    "push_pop": ("push qword ptr [8]\n pop qword ptr [0x10]", "push rcx\n pop rdx"),
    "call": ("lea rcx, [rip + 1f]\n call qword ptr [8]\n 1: pop r8",
             "lea rcx, [rip + 1f]\n call rcx\n 1: pop r8"),
    "paddd": ("paddd xmm1, xmmword ptr [0]", "movq xmm2, rax\n pinsrq xmm2, rcx, 1\n paddd xmm1, xmm2"),
    "psubw": ("psubw xmm1, xmmword ptr [0x10]",
              "movq xmm2, rdx\n pinsrq xmm2, rbx, 1\n psubw xmm1, xmm2"),
}
del PAIRS["xchg"]   # the window form's partial overlap has no one-instruction equivalent


def _source() -> str:
    lines = ["    .intel_syntax noprefix", "    .text"]
    for name, (window, native) in PAIRS.items():
        for kind, body in (("window", window), ("native", native)):
            lines += [f"    .globl {name}_{kind}", f"{name}_{kind}:", LOAD,
                      *("    " + line.strip() for line in body.split("\n")), STORE]
    lines += ["    .globl movsb_window", "movsb_window:",     # rep movsb 64 bytes from [0x40]
              "    push r12", "    mov r8, rdi", "    lea r9, [rdi + 8]", "    mov r10, rsi",
              "    mov r11, 0x1122334455667788", "    mov r12, -1", "    mov rdi, rsi",
              "    mov esi, 0x40", "    mov ecx, 64", "    rep movsb", "    mov rax, rcx",
              "    pop r12", "    ret", '    .section .note.GNU-stack,"",@progbits']
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    reason = why_not_native()
    if reason is not None:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("fast-paths")
    source = directory / "pairs.s"
    source.write_text(_source())
    return ctypes.CDLL(str(build_library(directory, source, "libpairs.so")))


State = ctypes.c_uint64 * 10


@pytest.mark.parametrize("name", list(PAIRS))
def test_in_process_against_the_cpu(library, name):
    rng = random.Random(name)
    regmap.map_registers()
    try:
        for _ in range(30):
            values = [rng.getrandbits(64) for _ in range(7)] + [rng.getrandbits(12) & 0x8D5 | 2]
            values += [rng.getrandbits(64), rng.getrandbits(64)]
            if rng.random() < 0.3:
                values[2] = values[0]          # cmpxchg: equal
            window, native = State(*values), State(*values)
            getattr(library, f"{name}_window")(window)
            getattr(library, f"{name}_native")(native)
            mask = [M64] * 7 + [0x8D5] + [M64] * 2
            got = [w & m for w, m in zip(window, mask)]
            want = [n & m for n, m in zip(native, mask)]
            if name == "call":      # rcx, the target, is where the call returns to: r8, popped
                assert got[6] == got[1] and want[6] == want[1]
                got[1] = got[6] = want[1] = want[6] = 0      # addresses differ per copy
            assert got == want, name
    finally:
        regmap.unmap_registers()


def test_in_process_rep_movsb_out_of_the_window(library):
    out = ctypes.create_string_buffer(64)
    regmap.map_registers()
    try:
        library.movsb_window.restype = ctypes.c_uint64
        library.movsb_window.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        rcx = library.movsb_window(0x1000, ctypes.addressof(out))
    finally:
        regmap.unmap_registers()
    base = ctypes.addressof(out)
    # r8 = rdi on entry, r9 = rdi + 8, r10 = rsi on entry (the buffer), r11, r12 = -1, r13..r15
    # are the caller's: only what the snippet set is checked
    words = [int.from_bytes(out.raw[i:i + 8], "little") for i in range(0, 64, 8)]
    assert rcx == 0
    assert words[:5] == [0x1000, 0x1008, base, 0x1122334455667788, M64]


CHECKER = r"""
#include <stdint.h>
#include <stdio.h>
#include <string.h>
typedef void pair(uint64_t *);
%(declarations)s
static struct { const char *name; pair *window, *native; } pairs[] = { %(table)s };
static uint64_t next(uint64_t *s) { *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s; }
int main(void) {
    uint64_t seed = 88172645463325252ULL, mask[10] = {~0ULL, ~0ULL, ~0ULL, ~0ULL, ~0ULL, ~0ULL,
                                                      ~0ULL, 0x8d5, ~0ULL, ~0ULL};
    int bad = 0;
    for (unsigned p = 0; p < sizeof pairs / sizeof *pairs; p++)
        for (int round = 0; round < 20; round++) {
            uint64_t w[10], n[10];
            for (int i = 0; i < 10; i++) w[i] = next(&seed);
            w[7] = (w[7] & 0x8d5) | 2;
            if (round %% 3 == 0) w[2] = w[0];
            memcpy(n, w, sizeof w);
            pairs[p].window(w);
            pairs[p].native(n);
            if (!strcmp(pairs[p].name, "call")) { w[1] = w[6] = n[1] = n[6] = 0; }
            for (int i = 0; i < 10; i++)
                if ((w[i] & mask[i]) != (n[i] & mask[i])) {
                    printf("%%s: word %%d: %%llx != %%llx\n", pairs[p].name, i,
                           (unsigned long long)w[i], (unsigned long long)n[i]);
                    bad = 1;
                }
        }
    return bad;
}
"""


def test_traced_against_the_cpu(tmp_path):
    """The same pairs in a program under ``regmap exec``: the fast paths over the tracer's
    register namespace (PTRACE_GETREGS buffer, XSAVE area) against the CPU."""
    import subprocess
    reason = why_not_native()
    if reason is not None:
        pytest.skip(reason)
    from regmap.trace import run_traced
    names = list(PAIRS)
    source = tmp_path / "checker.c"
    source.write_text(CHECKER % {
        "declarations": "\n".join(f"pair {n}_window, {n}_native;" for n in names),
        "table": ", ".join(f'{{"{n}", {n}_window, {n}_native}}' for n in names)})
    assembly = tmp_path / "pairs.s"
    assembly.write_text(_source())
    program = tmp_path / "checker"
    subprocess.run(["gcc", "-O1", "-o", str(program), str(source), str(assembly)], check=True)
    assert run_traced([str(program)]) == 0


def test_an_exception_inside_the_handler_is_reported_and_forwarded(tmp_path):
    """A bug in regmap's handler (here: the general path raising) prints one line and the fault
    goes on as genuine: the process dies of SIGSEGV as it would without regmap."""
    import signal
    import subprocess
    reason = why_not_native()
    if reason is not None:
        pytest.skip(reason)
    script = tmp_path / "bug.py"
    script.write_text(
        "import ctypes, regmap\n"
        "from regmap.runtime import handler\n"
        "regmap.map_registers()\n"
        "def broken(*args):\n"
        "    raise RuntimeError('a bug')\n"
        "handler.emulate = broken\n"
        "ctypes.string_at(0x38, 8)\n"
        "print('survived')\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert result.returncode == -signal.SIGSEGV
    assert "regmap: internal error" in result.stderr and "RuntimeError: a bug" in result.stderr
    assert "survived" not in result.stdout


def test_repe_repne_cmps_scas_in_blocks_stop_where_the_element_loop_stops(monkeypatch):
    """Forward repe/repne cmps and scas read a page (or the window) at a time: every register
    and flag as the element-by-element run leaves them; where that run faults on a page past
    the elements done, the block run stops before it with rip on the instruction (restartable)
    and the restart faults."""
    from regmap.x86.semantics import string
    bulk = string._bulk_compare

    def run(code, regs, memory, blocks):
        monkeypatch.setattr(string, "_bulk_compare", bulk if blocks else lambda *a: False)
        try:
            emu = regmap.emulate(code, regs, memory=memory, trace=False, max_steps=1)
            return dict(emu.regs)
        except RegmapError as error:
            return type(error).__name__

    rng = random.Random(10)
    base = 0x10000
    for _ in range(150):
        code = rng.choice(["f2 ae", "f3 ae", "f2 48 af", "f3 66 af", "f3 a6", "f2 a6", "f3 48 a7"])
        data = bytearray(rng.choice([0, 0x41]) for _ in range(0x2000))
        for _ in range(rng.randint(0, 5)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        memory = {base: bytes(data[:rng.choice([0x1000, 0x2000])])}
        regs = {name: rng.getrandbits(64) for name in ("rax", "rbx", "rdx", "r8", "r9")}
        if rng.random() < 0.5:
            regs["rax"] = rng.choice([0, 0x41, 0x4141, 0x41414141])
        regs["rcx"] = rng.choice([5, 64, 0x1800, 0x3000, M64])
        regs["rdi"] = base + rng.randrange(0x1000) if rng.random() < 0.7 else rng.randrange(0x100)
        regs["rsi"] = base + rng.randrange(0x1000) if rng.random() < 0.5 else rng.randrange(0x80)
        blocks, elements = run(code, regs, memory, True), run(code, regs, memory, False)
        if elements == "MemoryFault" and isinstance(blocks, dict) and blocks["rip"] == 0x400000:
            again = {k: blocks[k] for k in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9",
                                            "rflags")}
            assert run(code, again, memory, True) == "MemoryFault"
            continue
        assert blocks == elements, (code, regs)


def test_register_address_over_every_window_offset():
    """`add rax, [rdi]` at every offset of the window and past it (more addresses than one
    form keeps bodies for): fast and generic agree at each, holes and special slots included."""
    code = bytes.fromhex("48 03 07")
    rng = random.Random(5)
    regs = {name: rng.getrandbits(64) for name in GENERAL}
    regs.update(rflags=0x202, zmm0=rng.getrandbits(256), zmm1=rng.getrandbits(256))
    for offset in range(0, 0x220, 3):
        regs["rdi"] = offset
        assert _outcome(code, regs, False) == _outcome(code, regs, True), hex(offset)
    form = emulator_for(None).form_at(0x400000, code)
    assert len(form.fast.bodies) <= 64
