"""Every form the native engine runs on this host, against the host CPU through the oracle.

The native engine is the CPU too, but the path differs: the emulator builds the window image from
the registers through the layout, re-encodes the instruction with an absolute shadow address,
runs it with its own stack and commits the difference (register writes first, window stores
last); the oracle runs the instruction as placed with the registers' own values and overlays the
stored bytes itself.  Each form is checked with a few random register sets (edge values in the
lanes the instruction looks at), its operand aligned or not.
"""
from __future__ import annotations

import platform
import random
import sys

import pytest

if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
    pytest.skip("the native engine runs on an x86-64 Linux host", allow_module_level=True)

import oracle  # noqa: E402
from forms import Impossible, code_name, form_info, random_form  # noqa: E402
from test_oracle import random_inputs  # noqa: E402

from regmap.x86.support import coverage  # noqa: E402

NATIVE = [entry.code for entry in coverage().entries if entry.status == "native"]
FORMS_PER_CODE = 2
REGISTER_SETS = 3

# 80-bit values: ±0, ±1, ±inf, QNaN (and the indefinite), SNaN, a denormal, a pseudo-denormal,
# the largest finite, an unnormal (no integer bit: invalid operand)
_FP80 = (0, 1 << 79, (0x3FFF << 64) | 1 << 63, (0xBFFF << 64) | 1 << 63, (0x7FFF << 64) | 1 << 63,
         (0xFFFF << 64) | 1 << 63, (0x7FFF << 64) | 3 << 62, (0xFFFF << 64) | 3 << 62,
         (0x7FFF << 64) | 1 << 63 | 1, 1, 1 << 63, (0x7FFE << 64) | (2**64 - 1), 0x4000 << 64 | 1)


def x87_state(rng: random.Random) -> dict[str, int]:
    """An x87 stack of any depth 0..8 with any TOP, edge values in its registers, any rounding and
    precision control; exceptions masked, except now and then one (then both sides must fault)."""
    depth, top = rng.randrange(9), rng.randrange(8)
    tags = sum(1 << ((top + i) % 8) for i in range(depth))
    fcw = 0x40 | 0x3F | rng.randrange(4) << 10 | rng.choice((3, 3, 2, 0)) << 8
    if rng.randrange(8) == 0:
        fcw &= ~(1 << rng.randrange(6))
    state = {"fcw": fcw, "fsw": top << 11 | rng.choice((0, 0x4700)), "ftw": tags}
    for i in range(8):
        state[f"st{i}"] = rng.choice(_FP80) if rng.randrange(3) else rng.getrandbits(80)
    return state


@pytest.mark.parametrize("code", NATIVE, ids=code_name)
def test_native_form_agrees_with_the_cpu(code):
    info = form_info(code)
    if not info.drivable:
        pytest.skip(f"generator: {info.reason}")
    rng = random.Random(code)
    kinds = []
    for aligned in (True, False)[:FORMS_PER_CODE]:
        try:
            form = random_form(code, rng, aligned=aligned)
        except Impossible as exc:
            pytest.skip(f"generator: {exc}")
        for _ in range(REGISTER_SETS):
            regs, stack = random_inputs(form, rng)
            regs.update(x87_state(rng))
            kinds.append(oracle.check_minimized(form, regs, stack=stack).kind)
    assert kinds


# the special slots: a read of rip's gives the next instruction's address; a store to rip's jumps,
# to rflags' changes only what POPFQ may, to mxcsr's is refused (#GP) for reserved bits as LDMXCSR
_SLOT_CODES = ("ADDSD_XMM_XMMM64", "CVTSI2SD_XMM_RM64", "VEX_VFMADD231SD_XMM_XMM_XMMM64", "FLD_M64FP",
               "FIADD_M32INT", "FSTP_M64FP", "FST_M32FP", "FNSTCW_M2BYTE", "FISTTP_M64INT",
               "VEX_VEXTRACTPS_RM32_XMM_IMM8")


@pytest.mark.parametrize("name", _SLOT_CODES)
def test_native_form_on_the_special_slots(name):
    from iced_x86 import Code
    code = getattr(Code, name)
    if code not in NATIVE:
        pytest.skip(f"{name} is not a native form on this host")
    rng = random.Random(name)
    kinds = []
    for _ in range(8):
        try:
            form = random_form(code, rng, kinds=("special",))
        except Impossible as exc:
            pytest.skip(f"generator: {exc}")
        regs, stack = random_inputs(form, rng)
        regs.update(x87_state(rng))
        kinds.append(oracle.check_minimized(form, regs, stack=stack).kind)
    assert kinds
