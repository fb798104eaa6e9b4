"""A read of the rflags slot (0x88) gives exactly what PUSHFQ gives, under every backend.

The kernel sets RF (bit 16) in the rflags it saves for a faulting instruction;
PUSHFQ never shows RF (nor VM).  Each native test runs PUSHFQ and a window read
of 0x88 in the same program, with the same flags, and compares the two.
"""
from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import build_library, python_env, why_not_native  # noqa: E402

import regmap  # noqa: E402

REASON = why_not_native()
native = pytest.mark.skipif(REASON is not None, reason=REASON or "")
ROOT = Path(__file__).resolve().parent.parent
RF, VM = 1 << 16, 1 << 17

# rflags_pair(out): out[0] = PUSHFQ, out[1] = the rflags slot, with CF and DF set in between.
PAIR = """
    .globl rflags_pair
rflags_pair:
    stc
    std
    pushfq
    popq (%rdi)
    movq 0x88, %rcx
    cld
    movq %rcx, 8(%rdi)
    ret
"""

# A whole program for `regmap run`: exit status 0 when the slot equals PUSHFQ's value, 1 if not.
PROGRAM = """
    .globl _start
_start:
    stc
    pushfq
    popq %rdx
    movq 0x88, %rcx
    xorl %edi, %edi
    cmpq %rdx, %rcx
    setne %dil
    movl $60, %eax
    syscall
"""


def test_the_pure_emulator_hides_rf_and_vm():
    code = bytes.fromhex("48 8b 0c 25 88 00 00 00")  # mov rcx, [0x88]
    result = regmap.emulate(code, {"rflags": 0x203 | RF | VM})
    assert result.regs["rcx"] == 0x203


def test_a_write_to_the_slot_never_sets_rf():
    """RF is not a program's to write (POPFQ cannot set it); the kernel's RF is cleared as the
    instruction completes (tests/test_resume_flag.py)."""
    code = bytes.fromhex("48 c7 04 25 88 00 00 00 ff ff ff ff")  # mov qword [0x88], -1
    for before in (0x202 | RF, 0x202):
        after = regmap.emulate(code, {"rflags": before}).regs["rflags"]
        assert after & 1 and not after & RF


@native
def test_map_registers_read_equals_pushfq(tmp_path):
    source = tmp_path / "pair.s"
    source.write_text(PAIR)
    library = ctypes.CDLL(str(build_library(tmp_path, source, "libpair.so")))
    library.rflags_pair.argtypes, library.rflags_pair.restype = [ctypes.c_void_p], None
    out = (ctypes.c_uint64 * 2)()
    with regmap.mapped():
        library.rflags_pair(out)
    pushed, slot = out
    assert pushed & 0x401 == 0x401 and not pushed & RF   # CF and DF were set; PUSHFQ has no RF
    assert hex(slot) == hex(pushed)


@native
def test_regmap_run_read_equals_pushfq(tmp_path):
    source = tmp_path / "rflags.s"
    source.write_text(PROGRAM)
    result = subprocess.run([sys.executable, "-m", "regmap.cli", "run", str(source)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT, env=python_env())
    if "not allowed to trace" in result.stderr:
        pytest.skip("ptrace is not permitted here: " + result.stderr.strip())
    assert (result.returncode, result.stderr) == (0, "")
