"""Native forms the random form generator cannot drive, each on a window operand, with expected
values computed here from the inputs (implicit operands, x87 environment and state images)."""
from __future__ import annotations

import platform
import random
import sys

import pytest

import regmap

pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                                reason="the native engine needs Linux on x86-64")
rng = random.Random(9)


def ymm_bytes(regs: dict, first: int, count: int) -> bytes:
    return b"".join(regs[f"ymm{i}"].to_bytes(32, "little") for i in range(first, first + count))


def test_xlat_reads_the_window_at_rbx_plus_al():
    ymm0 = rng.getrandbits(256)
    for al in (0, 3, 31):
        out = regmap.emulate(bytes.fromhex("d7"), {"rbx": 0x100, "rax": 0x5500 | al, "ymm0": ymm0})
        assert out.regs["rax"] == 0x5500 | (ymm0 >> (8 * al) & 0xFF)
        assert out.regs["rbx"] == 0x100


def masked_store(old: int, data: int, mask: int, count: int) -> int:
    """`old` with each of its low `count` bytes replaced by `data`'s where `mask`'s byte has
    its top bit set: what MASKMOVDQU/MASKMOVQ store."""
    want = bytearray(old.to_bytes(64, "little"))      # room for any register here
    for i in range(count):
        if mask >> (8 * i + 7) & 1:
            want[i] = data >> (8 * i) & 0xFF
    return int.from_bytes(want, "little")


def test_maskmovdqu_stores_the_selected_bytes_at_rdi():
    data, mask, old = rng.getrandbits(128), rng.getrandbits(128), rng.getrandbits(256)
    out = regmap.emulate(bytes.fromhex("66 0f f7 ca"), {"rdi": 0x100, "xmm1": data, "xmm2": mask, "ymm0": old})
    assert out.regs["ymm0"] == masked_store(old, data, mask, 16) and out.regs["rdi"] == 0x100


def test_maskmovq_on_mmx_registers_sets_the_x87_tags():
    # mm1 and mm2 are physical registers 1 and 2: st1 and st2 while TOP is 0
    data, mask, old = rng.getrandbits(64), rng.getrandbits(64), rng.getrandbits(64)
    out = regmap.emulate(bytes.fromhex("0f f7 ca"), {"rdi": 0x8, "st1": data, "st2": mask, "rcx": old})
    assert out.regs["rcx"] == masked_store(old, data, mask, 8)
    assert out.regs["top"] == 0 and out.regs["ftw"] == 0xFF          # an MMX instruction's effect


@pytest.mark.parametrize("code, register", [("d9 3c 25 08 00 00 00", "fcw"),     # fnstcw [8]
                                            ("dd 3c 25 08 00 00 00", "fsw")])    # fnstsw [8]
def test_fnstcw_and_fnstsw_store_the_words(code, register):
    out = regmap.emulate(bytes.fromhex(code), {"fcw": 0x27F, "fsw": 0x3820, "rcx": 2**64 - 1})
    assert out.regs["rcx"] == (2**64 - 1) & ~0xFFFF | {"fcw": 0x27F, "fsw": 0x3820}[register]


def test_fnstenv_then_fldenv_round_trip_through_the_window():
    env = regmap.emulate(bytes.fromhex("d9 34 25 00 01 00 00"),                 # fnstenv [0x100]
                         {"fcw": 0x260, "fsw": 0x3000, "ftw": 0x60})
    image = ymm_bytes(env.regs, 0, 1)
    assert int.from_bytes(image[0:2], "little") == 0x260 and int.from_bytes(image[4:6], "little") == 0x3000
    assert env.regs["fcw"] == 0x260 | 0x3F             # fnstenv masks every exception afterwards
    restored = regmap.emulate(bytes.fromhex("d9 24 25 00 01 00 00"),            # fldenv [0x100]
                              {"ymm0": env.regs["ymm0"]})
    assert restored.regs["fcw"] == 0x260 and restored.regs["fsw"] == 0x3000 and restored.regs["ftw"] == 0x60


def test_fxrstor_loads_the_state_from_the_window():
    # the image: FCW 0x27f, MXCSR 0x1f80, xmm0 = the 16 bytes at +160 (ymm5's slot)
    ymm0 = 0x27F | 0x1F80 << (8 * 24)
    xmm_image = rng.getrandbits(128)
    out = regmap.emulate(bytes.fromhex("0f ae 0c 25 00 01 00 00"), {"ymm0": ymm0, "ymm5": xmm_image})
    assert out.regs["fcw"] == 0x27F and out.regs["mxcsr"] == 0x1F80
    assert out.regs["xmm0"] == xmm_image
