"""EVEX memory fault suppression: a masked-off element is never accessed, so never faults.

Expands read their first popcnt(k) elements, compresses store popcnt(k) elements, the vertical
arithmetic, compare and convert forms read their masked-on elements, a broadcast its one element
if any mask bit is set (`regmap.x86.native.masked`).  The host CPU is the judge: every such form
runs natively with its operand across one of the shadow page's guard pages, cut at several
places and under several masks, and it page-faults exactly when the footprint leaves the mapped
bytes.  Then the emulator, on the default layout (a hole from 0x300), faults exactly when the
footprint meets the hole and otherwise gives the CPU's result.
"""
from __future__ import annotations

import random

import pytest
from iced_x86 import (Code, Decoder, Encoder, EncodingKind, Instruction, MemoryOperand, MemorySizeExt, OpCodeInfo,
                      OpKind, Register)

import forms
import native_cpu as N
from regmap.errors import WindowHole
from regmap.layout import load_layout
from regmap.pure import PureMachine, emulator_for
from regmap.x86.native import engine, masked
from regmap.x86.native.state import NativeState

pytestmark = pytest.mark.skipif(N.host.platform_problem() is not None or "avx512f" not in N.cpu_flags(),
                                reason="needs the native engine and AVX-512")
PAGE = 4096
SI_KERNEL = 0x80
ALL = (1 << 64) - 1


class _Opmasks:
    """The part of a `Cpu` a `masked.Mask` reads."""

    def __init__(self, k: int):
        self.k = k

    def reg(self, name: str) -> int:
        return self.k


def _masked_form(code: int, broadcast: bool) -> Instruction | None:
    """``code`` with its memory operand ``[rbx]``, merging under k1 (a broadcast if asked)."""
    try:
        drawn = forms.random_form(code, random.Random(code))
    except Exception:          # a form the generator cannot drive
        return None
    ins = Decoder(64, drawn.bytes, ip=0x400000).decode()
    if ins.is_vsib or not any(ins.op_kind(i) == OpKind.MEMORY for i in range(ins.op_count)):
        return None
    ins.memory_base, ins.memory_index = Register.RBX, Register.NONE
    ins.memory_displacement, ins.memory_displ_size = 0, 0
    ins.segment_prefix, ins.op_mask, ins.zeroing_masking = Register.NONE, Register.K1, False
    ins.is_broadcast = broadcast
    return ins


def _cases():
    flags = N.cpu_flags()
    for code in range(len(Code.__dict__)):
        try:
            info = OpCodeInfo(code)
        except (ValueError, TypeError):
            break
        if info.encoding != EncodingKind.EVEX or not info.can_use_op_mask_register:
            continue
        if info.mnemonic in masked._OPMASK_MOVES or not forms.host_can_run(code, flags)[0]:
            continue       # the masked moves: tests/test_native_masked.py (their alignment #GP aside)
        for broadcast in (False, True) if info.can_broadcast else (False,):
            ins = _masked_form(code, broadcast)
            if ins is not None and masked.mask_of(ins, 0) is not None:
                yield pytest.param(ins, id=f"{forms.code_name(code)}{'-bcst' if broadcast else ''}")


def _masks(count: int) -> list[int]:
    rng = random.Random(count)
    top = 1 << (count - 1)
    return sorted({0, 1, top, (1 << count) - 1, ALL, top | 1, *(rng.getrandbits(count) for _ in range(3))})


def _encode(ins: Instruction, at: int) -> bytes:
    encoder = Encoder(64)
    encoder.encode(ins, at)
    return encoder.take_buffer()


@pytest.mark.parametrize("ins", list(_cases()))
def test_the_cpu_faults_exactly_where_the_footprint_leaves_the_page(ins):
    r = N.region()
    code = _encode(ins, r.insn)
    mask = masked.mask_of(ins, 0)
    size = max(MemorySizeExt.size(ins.memory_size), 1)
    count = mask.count if mask.mode in ("broadcast", "tiled") else size // mask.element
    for k in _masks(count):
        pieces = masked.pieces(mask, _Opmasks(k), 0, size)
        # mapped: the operand's bytes from `low` to `high` (the guard pages below and above the
        # shadow page hold the rest), cut at element boundaries, or none of them
        for low, high in [(size, size)] + [(0, cut) for cut in range(mask.element, size, max(mask.element, size // 4))] + \
                         [(cut, size) for cut in range(mask.element, size, max(mask.element, size // 4))]:
            state = NativeState()
            state.gpr["rbx"] = r.shadow - low if low else r.shadow + PAGE - high
            state.k[1] = k
            try:
                engine.execute(code, state, watchdog=N.WATCHDOG_SECONDS)
                faulted = False
            except engine.NativeFault as fault:
                assert fault.si_code != SI_KERNEL, f"{ins} k1={k:#x}: {fault} (not a page fault)"
                faulted = True
            expected = any(at < low or at + length > high for at, length in pieces)
            assert faulted == expected, f"{ins} k1={k:#x}, operand bytes {low}..{high} mapped: " \
                                        f"footprint {pieces}, the CPU {'faulted' if faulted else 'did not'}"


LAYOUT = load_layout()
HOLE = 0x300            # the default layout's registers end there
GPRS = {"rax": 0x1111_2222_3333_4444, "rcx": 0x5555_6666_7777_8888}
ZMM1 = sum((0x0101_0101_0101_0101 * (i + 1)) << 64 * i for i in range(8))


def _window_case(text_code: int, k: int, store: bool, at: int = 0x2E0):
    operand = MemoryOperand(displ=at, displ_size=4)
    if store:
        ins = Instruction.create_mem_reg(text_code, operand, Register.ZMM1)
    elif OpCodeInfo(text_code).op_count == 3:
        ins = Instruction.create_reg_reg_mem(text_code, Register.ZMM0, Register.ZMM1, operand)
    else:
        ins = Instruction.create_reg_mem(text_code, Register.ZMM0, operand)
    ins.op_mask = Register.K1
    regs = {**GPRS, "zmm1": ZMM1, "k1": k, "ymm15": 0x0F0E_0D0C_0B0A_0908_0706_0504_0302_0100 * 3}
    return ins, regs


@pytest.mark.parametrize("code, store", [(Code.EVEX_VPEXPANDQ_ZMM_K1Z_ZMMM512, False),
                                         (Code.EVEX_VEXPANDPS_ZMM_K1Z_ZMMM512, False),
                                         (Code.EVEX_VPCOMPRESSQ_ZMMM512_K1Z_ZMM, True),
                                         (Code.EVEX_VPCOMPRESSB_ZMMM512_K1Z_ZMM, True),
                                         (Code.EVEX_VPADDQ_ZMM_K1Z_ZMM_ZMMM512B64, False),
                                         (Code.EVEX_VCVTPS2PD_ZMM_K1Z_YMMM256B32_SAE, False),
                                         (Code.EVEX_VPMOVQB_XMMM64_K1Z_ZMM, True)])
@pytest.mark.parametrize("k", [0, 1, 0b1000_0001, 0xF, 0xF0, 0x1F, 0xFFFF_FFFF, ALL])
def test_the_emulator_faults_only_where_a_masked_on_element_meets_a_hole(code, store, k):
    ins, regs = _window_case(code, k, store)
    mask = masked.mask_of(ins, 0)
    size = MemorySizeExt.size(ins.memory_size)
    touches_hole = any(at + length > HOLE for at, length in masked.pieces(mask, _Opmasks(k), 0x2E0, size))
    code_bytes = _encode(ins, 0x400000)
    machine = PureMachine({"rip": 0x400000, "rflags": 2, "mxcsr": 0x1F80, "fcw": 0x37F, **regs},
                          {0x400000: code_bytes})
    if touches_hole:
        with pytest.raises(WindowHole):
            emulator_for(LAYOUT).step(machine)
        return
    emulator_for(LAYOUT).step(machine)
    # the CPU over the same window image: the same destination (a store: the same ymm15 bytes)
    state = NativeState()
    state.gpr.update(GPRS)
    state.zmm[1], state.k[1] = ZMM1, k
    state.shadow = LAYOUT.image(regs)
    after = N.run_native(_encode(ins, N.region().insn), state)
    if store:
        assert LAYOUT.image(machine.registers)[0x2E0:HOLE] == after.shadow[0x2E0:HOLE]
    else:
        assert machine.registers.get("zmm0", 0) == after.zmm[0]
    assert machine.registers.get("k1", 0) == after.k[1]


def test_a_broadcast_under_a_zero_mask_reads_nothing():
    # vaddpd zmm0{k1}, zmm1, [0x300]{1to8}: the element is in the hole; the CPU with the element
    # unmapped (the guard page) agrees that k1 = 0 reads nothing
    ins = Instruction.create_reg_reg_mem(Code.EVEX_VADDPD_ZMM_K1Z_ZMM_ZMMM512B64_ER, Register.ZMM0, Register.ZMM1,
                                         MemoryOperand(displ=HOLE, displ_size=4, is_broadcast=True))
    ins.op_mask = Register.K1
    for k in (0, 0x100, 1, 0x80):      # bit 8 is beyond the form's 8 elements
        machine = PureMachine({"rip": 0x400000, "rflags": 2, "mxcsr": 0x1F80, "k1": k},
                              {0x400000: _encode(ins, 0x400000)})
        if k & 0xFF:
            with pytest.raises(WindowHole):
                emulator_for(LAYOUT).step(machine)
        else:
            emulator_for(LAYOUT).step(machine)
            assert machine.registers["rip"] == 0x400000 + len(_encode(ins, 0x400000))
