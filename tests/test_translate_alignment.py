"""A window operand at an address its size does not divide stays in memory form.

With a layout that places xmm0 at 0x108, ``movaps xmm0, [0x108]`` raises #GP on the CPU (the
emulator delivers it; ``addps`` runs on the host CPU itself, through the native engine), where
``movaps xmm0, xmm0`` never faults.  The same holds for #AC on a misaligned general register
when the thread sets AC.  So translation asks for natural alignment.
"""
from __future__ import annotations

import platform
import sys

import pytest

from regmap.errors import GeneralProtection, InstructionFault
from regmap.layout import load_layout
from regmap.pure import PureMachine
from regmap.x86 import Emulator
from regmap.x86.translate import translate, why_not

ADDRESS = 0x401000
LAYOUT_TEXT = """include amd64;
layout page : 4096 {
  0x000: rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r{8..15};
  0x080: rip;
  0x088: rflags;
  0x090: mxcsr;
  0x108: xmm{0..3};
}
"""
MISALIGNED = [
    "0f 28 04 25 08 01 00 00",          # movaps xmm0, [0x108]      (Python semantics)
    "66 0f 6f 0c 25 18 01 00 00",       # movdqa xmm1, [0x118]
    "0f 58 0c 25 08 01 00 00",          # addps xmm1, [0x108]       (the host CPU, natively)
]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    path = tmp_path_factory.mktemp("layouts") / "misaligned_xmm.regs"
    path.write_text(LAYOUT_TEXT)
    return load_layout(str(path))


@pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                    reason="the native engine needs Linux on x86-64")
@pytest.mark.parametrize("code", MISALIGNED)
def test_a_misaligned_operand_that_faults_is_not_translated(layout, code):
    code = bytes.fromhex(code)
    machine = PureMachine({"rip": ADDRESS, "rflags": 0x202, "mxcsr": 0x1F80}, {ADDRESS: code})
    with pytest.raises((GeneralProtection, InstructionFault)):
        Emulator(layout).step(machine)          # the memory form faults ...
    assert translate(ADDRESS, code, layout) is None     # ... so its register form is not exact
    assert "aligned" in why_not(ADDRESS, code, layout)


def test_an_aligned_operand_is_still_translated():
    translation = translate(ADDRESS, bytes.fromhex("0f 28 04 25 00 01 00 00"), load_layout())
    assert translation is not None and translation.new_text == "movaps xmm0,xmm0"
