"""IEEE arithmetic and conversions through the native engine, against values Python computes itself.

Python's ``float`` is IEEE double with round-to-nearest-even; single precision is ``struct``'s
rounding of the exact double result (double has more than 2p + 2 bits for p = 24, so rounding the
double of a single-precision sum, product, quotient or square root once more is exact).  The
instructions run on window operands through `regmap.emulate`, i.e. on the host CPU via the
native engine.
"""
from __future__ import annotations

import math
import platform
import struct
import sys

import pytest
from hypothesis import given, settings, strategies as st

import regmap

pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                                reason="the native engine needs Linux on x86-64")

doubles = st.floats(allow_nan=False, allow_infinity=False, width=64)
singles = st.floats(allow_nan=False, allow_infinity=False, width=32)
FEW = settings(max_examples=60, deadline=None, database=None)


def d2q(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def q2d(q: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", q & (2**64 - 1)))[0]


def f2i(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def i2f(i: int) -> float:
    return struct.unpack("<f", struct.pack("<I", i & 0xFFFFFFFF))[0]


def single(x: float) -> float | None:
    """``x`` rounded to single precision, or None if it overflows."""
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return None


# scalar double: op xmm0, [8] (rcx)
SD = {"addsd": ("f2 0f 58", lambda a, b: a + b), "subsd": ("f2 0f 5c", lambda a, b: a - b),
      "mulsd": ("f2 0f 59", lambda a, b: a * b), "divsd": ("f2 0f 5e", lambda a, b: a / b)}
SS = {"addss": ("f3 0f 58", lambda a, b: a + b), "subss": ("f3 0f 5c", lambda a, b: a - b),
      "mulss": ("f3 0f 59", lambda a, b: a * b), "divss": ("f3 0f 5e", lambda a, b: a / b)}


def run_xmm0(opcode: str, xmm0: int, rcx: int) -> int:
    code = bytes.fromhex(opcode + " 04 25 08 00 00 00")
    return regmap.emulate(code, {"xmm0": xmm0, "rcx": rcx}).regs["xmm0"]


@pytest.mark.parametrize("name", SD)
@FEW
@given(a=doubles, b=doubles)
def test_scalar_double_arithmetic_is_pythons(name, a, b):
    opcode, op = SD[name]
    try:
        want = op(a, b)
    except (ZeroDivisionError, OverflowError):
        return
    if math.isinf(want):
        return
    got = run_xmm0(opcode, d2q(a) | 0xABCD << 64, d2q(b))
    assert got == d2q(want) | 0xABCD << 64               # the upper lane is kept


@pytest.mark.parametrize("name", SS)
@FEW
@given(a=singles, b=singles)
def test_scalar_single_arithmetic_is_pythons_rounded_once_more(name, a, b):
    opcode, op = SS[name]
    try:
        want = single(op(a, b))
    except ZeroDivisionError:
        return
    if want is None or math.isinf(want):
        return
    got = run_xmm0(opcode, f2i(a) | 0x1234 << 32, f2i(b))
    assert got == f2i(want) | 0x1234 << 32


@FEW
@given(a=st.floats(min_value=0, allow_infinity=False, allow_nan=False))
def test_sqrtsd_is_math_sqrt(a):
    assert q2d(run_xmm0("f2 0f 51", 0, d2q(a))) == math.sqrt(a)


@FEW
@given(n=st.integers(-2**63, 2**63 - 1))
def test_cvtsi2sd_rounds_like_float(n):
    code = bytes.fromhex("f2 48 0f 2a 04 25 08 00 00 00")           # cvtsi2sd xmm0, qword [8]
    assert regmap.emulate(code, {"rcx": n & (2**64 - 1)}).regs["xmm0"] == d2q(float(n))


@FEW
@given(a=st.floats(allow_nan=True, allow_infinity=True, width=64))
def test_cvttsd2si_truncates_or_gives_the_integer_indefinite(a):
    code = bytes.fromhex("f2 48 0f 2c 04 25 08 00 00 00")           # cvttsd2si rax, qword [8]
    got = regmap.emulate(code, {"rcx": d2q(a)}).regs["rax"]
    if math.isfinite(a) and -2**63 <= math.trunc(a) < 2**63:
        assert got == math.trunc(a) & (2**64 - 1)
    else:
        assert got == 2**63                                          # the integer indefinite


@FEW
@given(a=doubles)
def test_cvtsd2ss_rounds_like_struct(a):
    want = single(a)
    code = bytes.fromhex("f2 0f 5a 04 25 08 00 00 00")              # cvtsd2ss xmm0, [8]
    got = regmap.emulate(code, {"rcx": d2q(a)}).regs["xmm0"] & 0xFFFFFFFF
    if want is None:
        assert got in (0x7F800000, 0xFF800000)
    else:
        assert got == f2i(want)


@FEW
@given(a=singles)
def test_cvtss2sd_is_exact(a):
    code = bytes.fromhex("f3 0f 5a 04 25 08 00 00 00")              # cvtss2sd xmm0, [8]
    assert regmap.emulate(code, {"rcx": f2i(a)}).regs["xmm0"] & (2**64 - 1) == d2q(a)


def test_rounding_mode_and_flags_in_mxcsr():
    # 1/3 rounded down and up differ in the last bit; inexact sets PE (bit 5)
    code = bytes.fromhex("f2 0f 5e 04 25 08 00 00 00")              # divsd xmm0, [8]
    down = regmap.emulate(code, {"xmm0": d2q(1.0), "rcx": d2q(3.0), "mxcsr": 0x3F80})
    up = regmap.emulate(code, {"xmm0": d2q(1.0), "rcx": d2q(3.0), "mxcsr": 0x5F80})
    assert up.regs["xmm0"] - down.regs["xmm0"] == 1
    assert down.regs["mxcsr"] == 0x3F80 | 0x20
    assert q2d(down.regs["xmm0"]) <= 1 / 3 <= q2d(up.regs["xmm0"])


def test_x87_extended_arithmetic_and_the_stack():
    # fld qword [8]; the stack grows down: TOP 7, physical register 7 tagged, st0 the value
    fld = bytes.fromhex("dd 04 25 08 00 00 00")
    after = regmap.emulate(fld, {"rcx": d2q(2.5)})
    assert after.regs["top"] == 7 and after.regs["ftw"] == 0x80
    assert after.regs["st0"] == (0x4000 << 64) | 0xA000000000000000    # 2.5 in 80-bit format
    # fadd qword [0x10] on that state: st0 = 2.5 + 0.25
    fadd = bytes.fromhex("dc 04 25 10 00 00 00")
    regs = {k: after.regs[k] for k in ("st0", "fsw", "ftw", "fcw")}
    summed = regmap.emulate(fadd, {**regs, "rdx": d2q(0.25)})
    assert summed.regs["st0"] == (0x4000 << 64) | 0xB000000000000000   # 2.75
    # fstp qword [0x18] pops into rbx
    fstp = bytes.fromhex("dd 1c 25 18 00 00 00")
    popped = regmap.emulate(fstp, {k: summed.regs[k] for k in ("st0", "fsw", "ftw", "fcw")})
    assert q2d(popped.regs["rbx"]) == 2.75 and popped.regs["top"] == 0 and popped.regs["ftw"] == 0


def test_x87_stack_overflow_and_underflow_as_on_the_cpu():
    fld = bytes.fromhex("dd 04 25 08 00 00 00")
    # a full stack (all eight tagged): the push overflows, IE and SF set, C1 = 1, the masked
    # response loads the QNaN indefinite
    full = regmap.emulate(fld, {"rcx": d2q(1.0), "ftw": 0xFF})
    fsw = full.regs["fsw"]
    assert fsw & 0x41 == 0x41 and fsw & 0x200             # SF, IE; C1: overflow
    assert full.regs["st0"] == 0xFFFF_C000000000000000
    # an empty stack: fstp underflows, IE and SF set, C1 = 0, the indefinite is stored
    fstp = bytes.fromhex("dd 1c 25 18 00 00 00")
    empty = regmap.emulate(fstp, {"rbx": 0})
    assert empty.regs["fsw"] & 0x241 == 0x41
    assert empty.regs["rbx"] == 0xFFF8000000000000


def test_fnsave_stores_the_state_then_resets_it():
    # fnsave [0x100]: 108 bytes into ymm0..ymm3's slots, then FNINIT's state
    fnsave = bytes.fromhex("dd 34 25 00 01 00 00")
    state = {"fcw": 0x27F, "fsw": 0x3800, "ftw": 0x80, "st0": (0x3FFF << 64) | 1 << 63}
    saved = regmap.emulate(fnsave, state)
    assert saved.regs["fcw"] == 0x37F and saved.regs["fsw"] == 0 and saved.regs["ftw"] == 0
    image = b"".join(saved.regs[f"ymm{i}"].to_bytes(32, "little") for i in range(4))
    assert struct.unpack_from("<H", image, 0)[0] == 0x27F             # FCW
    assert struct.unpack_from("<H", image, 4)[0] == 0x3800            # FSW, TOP 7
    assert struct.unpack_from("<H", image, 8)[0] == 0x3FFF            # full tag word: only r7 valid
    assert image[28:38] == ((0x3FFF << 64) | 1 << 63).to_bytes(10, "little")   # ST(0)


def test_fxsave_and_xsave_store_the_state_into_the_window():
    # fxsave [0x100]: the 512-byte image lands on ymm0..ymm15's slots, after the register writes
    saved = regmap.emulate(bytes.fromhex("0f ae 04 25 00 01 00 00"), {"fcw": 0x27F, "mxcsr": 0x3F80})
    image = b"".join(saved.regs[f"ymm{i}"].to_bytes(32, "little") for i in range(16))
    assert struct.unpack_from("<H", image, 0)[0] == 0x27F and struct.unpack_from("<I", image, 24)[0] == 0x3F80
    # xsave [0x100]: its header (+512) would be at 0x300, a hole of the default layout: the store
    # faults as a store to unmapped memory does, and nothing changes
    from regmap.errors import NotWindowAccess
    with pytest.raises(NotWindowAccess, match="hole"):
        regmap.emulate(bytes.fromhex("0f ae 24 25 00 01 00 00"), {"rax": 3, "rdx": 0})
