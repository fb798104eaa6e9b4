"""Exactness rules found by a differential harness (issue 8), each pinned by name.

Where the host CPU can say what is right, the test asks it (``oracle.check`` runs the instruction
natively against a shadow of the window); where the point is a fault on a hole of the layout (the
shadow page has no holes), the emulator is held to the CPU's rule for unmapped memory.
"""
from __future__ import annotations

import platform
import sys

import pytest

import regmap
from regmap.errors import NotWindowAccess

NATIVE = sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")
if NATIVE:
    import native_cpu as N
    import oracle
native = pytest.mark.skipif(not NATIVE, reason="needs an x86-64 Linux host to run instructions natively")


def has(feature: str) -> bool:
    return NATIVE and feature in N.cpu_flags()


def emulate(hex_code: str, regs: dict):
    return regmap.emulate(bytes.fromhex(hex_code), regs)


# -- bt/bts/btr/btc: the bit string's unit wraps at 32 bits under 67h ------------------------------

BIT_TESTS_A32 = {  # 67 4d 0f xx 14 24: op [r12d], r10
    "bt": "67 4d 0f a3 14 24", "bts": "67 4d 0f ab 14 24",
    "btr": "67 4d 0f b3 14 24", "btc": "67 4d 0f bb 14 24",
}


@pytest.mark.parametrize("name", BIT_TESTS_A32)
def test_a32_bit_string_unit_wraps_at_32_bits(name):
    """r12 = 0x10, r10 = 0x8_0000_0040: the unit is the qword at 0x10 + 0x1_0000_0008 mod 2**32."""
    regs = {"r12": 0x10, "r10": 0x8_0000_0040, "rbx": 0b10}    # 0x18 is rbx; bit 0 of it
    result = emulate(BIT_TESTS_A32[name], regs).regs
    assert result["rflags"] & 1 == 0                             # CF: bit 0 of rbx was clear
    assert result["rbx"] == {"bt": 0b10, "bts": 0b11, "btr": 0b10, "btc": 0b11}[name]


@native
@pytest.mark.parametrize("name", BIT_TESTS_A32)
@pytest.mark.parametrize("rbx", [0, 1, 0x8000_0000_0000_0001])
def test_a32_bit_string_agrees_with_the_cpu(name, rbx):
    outcome = oracle.check(bytes.fromhex(BIT_TESTS_A32[name]),
                           {"r12": 0x10, "r10": 0x8_0000_0040, "rbx": rbx, "rsp": N.STACK_TOP})
    assert outcome.kind == "compared"


# -- AVX-512 opmasks: a masked-off element is never accessed ------------------------------------------

LOAD_2E0 = "62 f1 7e 49 6f 04 25 e0 02 00 00"     # vmovdqu32 zmm0{k1}, [0x2e0]
STORE_2E0 = "62 f1 7e 49 7f 04 25 e0 02 00 00"    # vmovdqu32 [0x2e0]{k1}, zmm0
ONES256 = (1 << 256) - 1


def test_a_masked_load_reaching_into_a_hole_touches_only_the_selected_elements():
    """k1 = 0xff selects the 8 dwords at 0x2e0..0x2ff (ymm15); 0x300.. is a hole, never read."""
    result = emulate(LOAD_2E0, {"k1": 0xFF, "ymm15": 0x1234 << 200 | 0x5678,
                                "zmm0": (1 << 512) - 1}).regs
    assert result["zmm0"] == (ONES256 << 256) | 0x1234 << 200 | 0x5678   # merging keeps 256..511


def test_a_masked_store_reaching_into_a_hole_touches_only_the_selected_elements():
    result = emulate(STORE_2E0, {"k1": 0xFF, "zmm0": (7 << 256) | 0xABCDEF}).regs
    assert result["ymm15"] == 0xABCDEF


def test_a_selected_element_in_the_hole_still_faults():
    with pytest.raises(NotWindowAccess, match="hole"):
        emulate(LOAD_2E0, {"k1": 0x100})
    with pytest.raises(NotWindowAccess, match="hole"):
        emulate(STORE_2E0, {"k1": 0x1FF})


@pytest.mark.skipif(not has("avx512f"), reason="host CPU lacks avx512f (masked loads checked on the emulator only)")
@pytest.mark.parametrize("code", [LOAD_2E0, STORE_2E0])
@pytest.mark.parametrize("selector", [0xFF, 0x0F, 0x81])
def test_masked_moves_agree_with_the_cpu(code, selector):
    regs = {"k1": selector, "zmm0": (1 << 512) - 1 - 0xF0F0, "zmm15": 0x1122334455667788 << 64 | 0x99,
            "rsp": N.STACK_TOP}
    assert oracle.check(bytes.fromhex(code), regs).kind == "compared"


# -- bextr reads its source whatever the start --------------------------------------------------------

BEXTR_9C = "c4 e2 78 f7 04 25 9c 00 00 00"         # bextr eax, [0x9c], eax (0x94..0xff is a hole)


@pytest.mark.parametrize("start", [0, 31, 32, 0xFF])
def test_bextr_from_a_hole_faults_whatever_the_start(start):
    with pytest.raises(NotWindowAccess, match="hole"):
        emulate(BEXTR_9C, {"rax": 0x800 | start})


@pytest.mark.skipif(not has("bmi1"), reason="host CPU lacks bmi1")
@pytest.mark.parametrize("start", [0, 4, 32, 0x40, 0xFF])
def test_bextr_with_a_large_start_agrees_with_the_cpu(start):
    code = bytes.fromhex("c4 e2 70 f7 04 25 08 00 00 00")      # bextr eax, [8], ecx
    regs = {"rcx": 0x2000 | start, "rax": 0xDEAD, "rsp": N.STACK_TOP}
    assert oracle.check(code, regs).kind == "compared"


# -- cache-line flushes of a hole fault as on unmapped memory ----------------------------------------

FLUSHES = {"clflush": "0f ae 3c 25 {}", "clflushopt": "66 0f ae 3c 25 {}", "clwb": "66 0f ae 34 25 {}"}


@pytest.mark.parametrize("name", FLUSHES)
def test_flushing_a_hole_faults(name):
    with pytest.raises(NotWindowAccess, match="hole"):
        emulate(FLUSHES[name].format("00 03 00 00"), {})            # [0x300]
    with pytest.raises(NotWindowAccess, match="hole"):
        emulate(FLUSHES[name].format("98 00 00 00"), {})            # [0x98]: the mxcsr slot's padding


@pytest.mark.parametrize("name", FLUSHES)
def test_flushing_a_register_changes_nothing_but_rip(name):
    code = FLUSHES[name].format("08 00 00 00")                     # [8]
    before = {"rcx": 5, "rax": 7}
    after = emulate(code, before).regs
    assert (after["rcx"], after["rax"], after["rip"]) == (5, 7, 0x400000 + len(bytes.fromhex(code)))


# -- the top-level API ----------------------------------------------------------------------------------

def test_runtime_functions_are_importable_from_regmap():
    from regmap import reset_stats, set_trace, stats
    import regmap.runtime
    assert (set_trace, stats, reset_stats) == (regmap.runtime.set_trace, regmap.runtime.stats,
                                               regmap.runtime.reset_stats)


# -- 67h rep string instructions with ecx = 0 ---------------------------------------------------------

REP_A32 = {"rep movsb": "67 f3 a4", "rep movsq": "67 f3 48 a5", "rep stosb": "67 f3 aa",
           "rep lodsd": "67 f3 ad", "repe cmpsb": "67 f3 a6", "repne scasw": "67 66 f2 af"}
UPPER = {"rcx": 5 << 32, "rsi": (6 << 32) + 0x10, "rdi": (7 << 32) + 0x20}


@pytest.mark.skipif(NATIVE, reason="machine code runs here: the host's answer (below)")
@pytest.mark.parametrize("name", REP_A32)
def test_a32_rep_with_ecx_zero_changes_no_register(name):
    """Where no machine code runs, regmap's choice (docs/emulator.md): nothing repeats, nothing
    is written, as on AMD CPUs."""
    result = emulate(REP_A32[name], dict(UPPER)).regs
    assert {r: result[r] for r in UPPER} == UPPER


@native
@pytest.mark.parametrize("name", REP_A32)
def test_a32_rep_with_ecx_zero_on_the_host(name):
    """The host either leaves rcx/rsi/rdi alone (AMD) or zeroes their upper halves (Intel, which
    writes them as 32-bit registers even when nothing repeats); regmap gives what it gives, every
    bit (the oracle compares whole registers)."""
    code = bytes.fromhex(REP_A32[name])
    state = N.NativeState()
    state.gpr.update(UPPER, rsp=N.STACK_TOP)
    after = {r: N.run_native(code, state).gpr[r] for r in UPPER}
    assert all(after[r] in (value, value & 0xFFFFFFFF) for r, value in UPPER.items())
    assert {r: emulate(REP_A32[name], dict(UPPER)).regs[r] for r in UPPER} == after
    assert oracle.check(code, dict(UPPER, rsp=N.STACK_TOP)).kind == "compared"
