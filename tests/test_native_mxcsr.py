"""The native engine loads the thread's whole MXCSR and hands it back unchanged.

AMD's misaligned-SSE mode (MXCSR.MM, bit 17, where the CPU's MXCSR_MASK has it) is a bit of the
thread's MXCSR like any other: the CPU runs a misaligned legacy SSE operand with it set, and an
instruction that does not write MXCSR leaves it set.
"""
from __future__ import annotations

import platform
import sys

import pytest

from regmap.pure import PureMachine
from regmap.x86 import Emulator
from regmap.x86 import host

MM = 1 << 17
RIP = 0x400000
pytestmark = [
    pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                       reason="the native engine needs Linux on x86-64"),
    pytest.mark.skipif(not host.current().mxcsr_mask & MM, reason="the CPU has no misaligned-SSE mode (MXCSR_MASK bit 17)"),
]


def step(code: str, mxcsr: int) -> PureMachine:
    machine = PureMachine({"rip": RIP, "rflags": 0x202, "mxcsr": mxcsr, "fcw": 0x37F},
                          {RIP: bytes.fromhex(code)})
    Emulator().step(machine)
    return machine


def test_an_instruction_that_does_not_write_mxcsr_keeps_mm():
    machine = step("0f 58 04 25 10 00 00 00", 0x1F80 | MM)        # addps xmm0, [0x10]
    assert machine.registers["mxcsr"] == 0x1F80 | MM


def test_mm_lets_a_misaligned_legacy_sse_operand_run_as_on_the_cpu():
    machine = step("0f 58 04 25 14 00 00 00", 0x1F80 | MM)        # addps xmm0, [0x14]
    assert machine.registers["rip"] == RIP + 8
