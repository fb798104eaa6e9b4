"""Issue 19 items 7 and 9: every backend lists exactly the window bytes an instruction reads and
writes, and shows each access in one text form and one JSON record.

The reference for "exactly" is iced-x86's used-memory list (InstructionInfoFactory): a
recorded read lies in a range iced-x86 says is read, a recorded write in one it says is written,
and an unconditional access (READ, WRITE, READ_WRITE) is recorded over its whole range.  A
conditional or masked store is listed where it happened: the masked-on elements (the SDM: a
masked-on element is stored, a masked-off one is not accessed), the elements a ``rep`` stored.
"""
from __future__ import annotations

import ctypes
import io
import json
import mmap
import shutil
import subprocess
import sys
from pathlib import Path

import iced_x86
import pytest
from iced_x86 import OpAccess

import regmap
from regmap.cli import main
from regmap.x86 import host
from regmap.x86.emulator import Emulator

needs_as = pytest.mark.skipif(shutil.which("as") is None or shutil.which("objcopy") is None,
                              reason="needs the system assembler (as, objcopy) on PATH")
FLAGS = host.current().flags
READS = {OpAccess.READ, OpAccess.COND_READ, OpAccess.READ_WRITE, OpAccess.READ_COND_WRITE}
WRITES = {OpAccess.WRITE, OpAccess.COND_WRITE, OpAccess.READ_WRITE, OpAccess.READ_COND_WRITE}
ALWAYS_READ = {OpAccess.READ, OpAccess.READ_WRITE}
ALWAYS_WRITTEN = {OpAccess.WRITE, OpAccess.READ_WRITE}
INDICES = sum(3 * i << 32 * i for i in range(16))      # a gather's or scatter's dword indices
X = 0x1111_1111_2222_2222_3333_3333_4444_4444_5555_5555_6666_6666_7777_7777_8888_8888

# (Intel syntax, registers, the CPU feature it needs): stores, loads, read-modify-write,
# conditional and masked stores, rep strings; Python semantics and native-engine forms
FORMS = [
    ("mov qword ptr [0x18], rax", {"rax": 5}, None),
    ("mov rax, qword ptr [0x18]", {"rbx": 7}, None),
    ("add qword ptr [0x8], rax", {"rax": 5, "rcx": 9}, None),
    ("xchg qword ptr [0x8], rax", {"rax": 5, "rcx": 9}, None),
    ("setz byte ptr [0x9]", {"zf": 1}, None),
    ("cmpxchg qword ptr [0x8], rdx", {"rax": 1, "rcx": 2}, None),      # fails: stores back
    ("rep stosq", {"rdi": 0x100, "rcx": 3, "rax": 9}, None),
    ("rep movsq", {"rsi": 0x100, "rdi": 0x200, "rcx": 2}, None),
    ("fstp qword ptr [0x18]", {}, None),
    ("fld qword ptr [0x18]", {"rbx": 0x3FF0_0000_0000_0000}, None),
    ("fist word ptr [0x8]", {}, None),
    ("fxsave [rbx]", {"rbx": 0x100}, "fxsr"),
    # masked: [rbx+0x40] is zmm8's slot, away from the operands
    ("vmaskmovps [rbx+0x40], ymm2, ymm1", {"rbx": 0x1C0, "ymm1": X, "ymm2": 1 << 255 | 1 << 63}, "avx"),
    ("vmaskmovps ymm1, ymm2, [rbx+0x40]", {"rbx": 0x1C0, "ymm2": 1 << 127 | 1 << 31}, "avx"),
    ("vmovdqu32 [rbx+0x40]{k1}, zmm1", {"rbx": 0x1C0, "k1": 0b1000_0101, "zmm1": X}, "avx512f"),
    ("vmovdqu32 zmm1{k1}, [rbx+0x40]", {"rbx": 0x1C0, "k1": 0b0110}, "avx512f"),
    ("vpscatterdd [rbx+zmm2*4]{k1}, zmm1", {"rbx": 0x200, "k1": 0b1001, "zmm1": X, "zmm2": INDICES}, "avx512f"),
    ("vpgatherdd zmm1{k1}, [rbx+zmm2*4]", {"rbx": 0x200, "k1": 0b0110, "zmm2": INDICES}, "avx512f"),
    # a masked-on element that stores the bytes already there is still stored
    ("vmovdqu32 [rbx+0x40]{k1}, zmm1", {"rbx": 0x1C0, "k1": 0b11, "zmm1": 0}, "avx512f"),
    ("vmaskmovps [rbx+0x40], ymm2, ymm1", {"rbx": 0x1C0, "ymm1": 0, "ymm2": 1 << 63}, "avx"),
    ("vpscatterdd [rbx+zmm2*4]{k1}, zmm1", {"rbx": 0x200, "k1": 0b0101, "zmm1": 0, "zmm2": INDICES}, "avx512f"),
]


def assemble(texts: list[str], directory: Path) -> list[bytes]:
    """Each line's machine code, assembled by the test itself (``as``, then ``objcopy``)."""
    codes = []
    for i, text in enumerate(texts):
        source, obj, raw = (directory / f"form{i}{suffix}" for suffix in (".s", ".o", ".bin"))
        source.write_text(f".intel_syntax noprefix\n{text}\n")
        subprocess.run(["as", "--64", "-o", obj, source], check=True, capture_output=True)
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", obj, raw], check=True)
        codes.append(raw.read_bytes())
    return codes


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    codes = assemble([text for text, _, _ in FORMS], tmp_path_factory.mktemp("forms"))
    return [(text, code, regs, need) for (text, regs, need), code in zip(FORMS, codes)]


def _bytes(ranges) -> set[int]:
    return {at for start, size in ranges for at in range(start, start + size)}


def _iced_accesses(code: bytes, regs: dict[str, int]):
    """``[(kind, start, size)]`` of iced-x86's used memory, addresses from the given registers."""
    instruction = iced_x86.Decoder(64, code, ip=0x400000).decode()
    out = []
    for m in iced_x86.InstructionInfoFactory().info(instruction).used_memory():
        address = m.displacement
        for register, scale in ((m.base, 1), (m.index, m.scale)):
            if register != iced_x86.Register.NONE:
                name = iced_x86.Formatter(iced_x86.FormatterSyntax.INTEL).format_register(
                    iced_x86.RegisterExt.full_register(register))
                address += scale * regs.get(name, 0)
        out.append((m.access, address & (1 << 64) - 1, iced_x86.MemorySizeExt.size(m.memory_size)))
    return out


def _masked_on(regs: dict[str, int], start: int, element: int, count: int, mask: str) -> set[int]:
    """The bytes of the masked-on elements (opmask k1, or the top bit of each ymm2 element)."""
    if mask == "k1":
        bits = [regs["k1"] >> i & 1 for i in range(count)]
    else:
        bits = [regs["ymm2"] >> (element * 8 * i + element * 8 - 1) & 1 for i in range(count)]
    return _bytes((start + element * i, element) for i in range(count) if bits[i])


def _expected(text: str, code: bytes, regs: dict[str, int]):
    """(bytes surely read, bytes possibly read, bytes surely written, bytes possibly written)."""
    accesses = _iced_accesses(code, regs)
    if text.startswith("rep "):      # each of rcx elements; iced-x86 lists one, conditional
        size = 8
        count = regs["rcx"]
        reads = _bytes((regs["rsi"] + size * i, size) for i in range(count)) if "movs" in text else set()
        writes = _bytes((regs["rdi"] + size * i, size) for i in range(count))
        return reads, reads, writes, writes
    if "zmm2*4" in text:              # iced-x86 lists a VSIB operand once: its masked-on elements
        elements = _bytes((regs["rbx"] + 4 * (regs["zmm2"] >> 32 * i & 0xFFFFFFFF), 4)
                          for i in range(16) if regs["k1"] >> i & 1)
        return ((set(), set(), elements, elements) if "scatter" in text
                else (elements, elements, set(), set()))
    sure_r = _bytes((s, n) for kind, s, n in accesses if kind in ALWAYS_READ)
    may_r = _bytes((s, n) for kind, s, n in accesses if kind in READS)
    sure_w = _bytes((s, n) for kind, s, n in accesses if kind in ALWAYS_WRITTEN)
    may_w = _bytes((s, n) for kind, s, n in accesses if kind in WRITES)
    if "{k1}" in text or "vmaskmov" in text:
        (_, start, size), = accesses
        on = _masked_on(regs, start, 4, size // 4, "k1" if "{k1}" in text else "ymm2")
        sure_r, may_r = (on, on) if may_r else (set(), set())
        sure_w, may_w = (on, on) if may_w else (set(), set())
    if text.startswith("cmpxchg"):   # the SDM: the destination is written back when it differs
        sure_w = may_w
    return sure_r, may_r, sure_w, may_w


def _check(text, code, regs, accesses):
    reads = _bytes((a.address, a.size) for a in accesses if not a.write)
    writes = _bytes((a.address, a.size) for a in accesses if a.write)
    sure_r, may_r, sure_w, may_w = _expected(text, code, regs)
    assert sure_r <= reads <= may_r, f"{text}: read {sorted(reads)}"
    assert sure_w <= writes <= may_w, f"{text}: wrote {sorted(writes)}"


def _runnable(need):
    if need and need not in FLAGS:
        pytest.skip(f"the host lacks {need}")


@needs_as
@pytest.mark.parametrize("index", range(len(FORMS)), ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(FORMS)])
def test_the_api_lists_exactly_the_bytes_read_and_written(forms, index):
    text, code, regs, need = forms[index]
    _runnable(need)
    result = regmap.emulate(code, regs)
    step, = result.steps
    _check(text, code, regs, step.accesses)


@needs_as
def test_both_kinds_of_form_are_covered(forms):
    emulator = Emulator()
    native = [emulator.form_at(0x400000, code).native is not None for _, code, _, _ in forms]
    assert any(native) and not all(native)


@needs_as
@pytest.mark.parametrize("index", range(len(FORMS)), ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(FORMS)])
def test_emulate_json_lists_exactly_the_bytes_read_and_written(forms, index, capsys):
    text, code, regs, need = forms[index]
    _runnable(need)
    assert main(["emulate", "--json", "--hex", code.hex(), *(f"{k}={v:#x}" for k, v in regs.items())]) == 0
    step, = json.loads(capsys.readouterr().out)["steps"]
    records = [_Record(**record) for record in step["accesses"]]
    _check(text, code, regs, records)


class _Record:
    def __init__(self, address, size, write, names, before, after):
        self.address, self.size, self.write = address, size, write


@needs_as
def test_a_native_store_is_one_write_in_emulate_text(capsys):
    # fstp qword ptr [0x18]: the native engine runs it; it stores rbx's bytes, reads none
    assert main(["emulate", "--hex", "dd 1c 25 18 00 00 00"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["write", "[0x18]", "8", "bytes", "0x0", "->", "0xfff8000000000000", "(rbx)"]
    assert lines[2] == ""


# -- one format: emulate, exec --trace and --json, the in-process trace ------------------------

PROGRAM = """\
        .intel_syntax noprefix
        .text
        .globl  _start
_start:
        fld1
        fstp    qword ptr [0x18]        # rbx = 1.0: a native-engine store
        mov     rdx, qword ptr [0x18]   # a load of it
        mov     eax, 60
        xor     edi, edi
        syscall
        .section .note.GNU-stack, "", @progbits
"""
FSTP, LOAD = "dd 1c 25 18 00 00 00", "48 8b 14 25 18 00 00 00"
ST0_IS_ONE = ("st0=0x3fff8000000000000000", "fsw=0x3800", "ftw=0x80")     # as fld1 leaves the x87 stack
ONE = 0x3FF0_0000_0000_0000


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    if shutil.which("as") is None or shutil.which("ld") is None:
        pytest.skip("needs as and ld")
    directory = tmp_path_factory.mktemp("program")
    (directory / "p.s").write_text(PROGRAM)
    subprocess.run(["as", "--64", "-o", directory / "p.o", directory / "p.s"], check=True)
    subprocess.run(["ld", "-o", directory / "p", directory / "p.o"], check=True)
    return directory / "p"


def _exec(*args):
    return subprocess.run([sys.executable, "-m", "regmap", "exec", *args], capture_output=True,
                          text=True, timeout=60)


def _emulated(code: str, capsys, *values, json_output=False):
    """The accesses ``regmap emulate`` lists for ``code``: its text lines, or its JSON records."""
    assert main(["emulate", "--hex", code, *values, *(["--json"] if json_output else [])]) == 0
    out = capsys.readouterr().out
    if json_output:
        return [access for step in json.loads(out)["steps"] for access in step["accesses"]]
    return [line for line in out.splitlines() if line.startswith("    ")]


def test_exec_trace_shows_a_native_store_as_one_write_in_the_one_format(program, capsys):
    done = _exec("--trace", str(program))
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "[0x18]" in line]
    assert len(lines) == 2, done.stderr
    store, load = lines
    assert "fstp" in store and "mov rdx" in load
    # the access part of each line is what emulate prints for the same instruction and bytes
    assert store.endswith("  " + _emulated(FSTP, capsys, *ST0_IS_ONE)[0].strip())
    assert load.endswith("  " + _emulated(LOAD, capsys, f"rbx={ONE:#x}")[0].strip())


def test_exec_json_and_emulate_json_are_one_record(program, capsys):
    done = _exec("--json", str(program))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    store, load = [r for r in records if r["event"] == "access"]
    fields = ("address", "size", "write", "names", "before", "after")
    assert {k: store[k] for k in fields} == _emulated(FSTP, capsys, *ST0_IS_ONE, json_output=True)[0]
    assert {k: load[k] for k in fields} == _emulated(LOAD, capsys, f"rbx={ONE:#x}", json_output=True)[0]
    assert load["after"] == load["before"] == hex(ONE)


def test_the_in_process_trace_uses_the_one_format(capsys):
    import regmap.runtime
    if host.platform_problem() is not None:
        pytest.skip(host.platform_problem())
    # fld1; fstp qword ptr [0x10] (rdx, caller-saved); mov rax, rdx; ret
    code = bytes.fromhex("d9e8" "dd1c2510000000" "4889d0" "c3")
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    function = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    stream = io.StringIO()
    with regmap.mapped():
        regmap.runtime.set_trace(stream)
        try:
            assert function() == ONE
        finally:
            regmap.runtime.set_trace(None)
    line, = stream.getvalue().splitlines()
    expected = _emulated("dd 1c 25 10 00 00 00", capsys, *ST0_IS_ONE)[0].strip()
    # rdx held whatever the caller left: compare all but the value before
    assert line.split("  ", 2)[2].split()[:4] == expected.split()[:4]
    assert line.endswith(f"-> {ONE:#x}  (rdx)")
