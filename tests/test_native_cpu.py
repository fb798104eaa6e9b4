"""The native runner on its own: results computed in Python from random inputs."""
from __future__ import annotations

import signal
import struct

import platform
import sys

import pytest
from hypothesis import given, settings, strategies as st

if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
    pytest.skip("the native runner needs an x86-64 Linux host", allow_module_level=True)

import native_cpu as N  # noqa: E402

u64 = st.one_of(st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1, 0x80, 0x7F, 0xFF]),
                st.integers(0, 2**64 - 1))
u128 = st.integers(0, 2**128 - 1)
M64 = 2**64 - 1
CF, PF, AF, ZF, SF, DF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x400, 0x800


def image(gpr: dict[str, int]) -> bytes:
    """The default layout's GPR area by hand: rax..r15 little-endian at 0x00..0x7f."""
    page = bytearray(N.SHADOW_SIZE)
    for i, name in enumerate(N.GPRS):
        struct.pack_into("<Q", page, 8 * i, gpr.get(name, 0))
    return bytes(page)


def state_from(gpr: dict[str, int], **kw) -> N.NativeState:
    s = N.NativeState(**kw)
    s.gpr.update(gpr)
    s.shadow = image(s.gpr)
    return s


def parity(x: int) -> int:
    return PF if bin(x & 0xFF).count("1") % 2 == 0 else 0


def add_flags(a: int, b: int, bits: int = 64) -> int:
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)
    r = (a + b) & mask
    f = CF if a + b > mask else 0
    f |= ZF if r == 0 else 0
    f |= SF if r & sign else 0
    f |= OF if (~(a ^ b) & (a ^ r)) & sign else 0
    f |= AF if (a ^ b ^ r) & 0x10 else 0
    return f | parity(r)


def sub_flags(a: int, b: int, bits: int = 64) -> int:
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)
    r = (a - b) & mask
    f = CF if a < b else 0
    f |= ZF if r == 0 else 0
    f |= SF if r & sign else 0
    f |= OF if ((a ^ b) & (a ^ r)) & sign else 0
    f |= AF if (a ^ b ^ r) & 0x10 else 0
    return f | parity(r)


STATUS = CF | PF | AF | ZF | SF | OF


def test_region_is_low_enough_for_disp32():
    assert N.SHADOW_BASE + N.SHADOW_SIZE < 2**31
    assert N.REGION_BASE % 0x1000 == 0


def test_absolute_operand_is_sib_not_rip_relative():
    placed = N.place(bytes.fromhex("4803042508000000"))          # add rax, [8]
    assert not placed.instruction.is_ip_rel_memory_operand
    assert placed.native == bytes.fromhex("48030425") + struct.pack("<i", 8 + N.SHADOW_BASE)
    assert placed.after == placed.address + len(placed.native)
    assert placed.emulator_rip + len(placed.code) == placed.after


@given(rax=u64, rcx=u64)
def test_add_rax_from_window_adds_rcx(rax, rcx):
    out = N.run_native(bytes.fromhex("4803042508000000"), state_from({"rax": rax, "rcx": rcx}))
    assert out.gpr["rax"] == (rax + rcx) & M64
    assert out.gpr["rcx"] == rcx
    assert out.rflags & STATUS == add_flags(rax, rcx)
    assert out.shadow == image({"rax": rax, "rcx": rcx})          # a read leaves the page alone


@given(a=u64, b=u64)
def test_cmp_flags(a, b):
    out = N.run_native(bytes.fromhex("483b042508000000"), state_from({"rax": a, "rcx": b}))   # cmp rax,[8]
    assert out.rflags & STATUS == sub_flags(a, b)
    assert out.gpr["rax"] == a


@given(rax=u64, rbx=u64)
def test_mov_al_from_offset_1_reads_ah(rax, rbx):
    out = N.run_native(bytes.fromhex("8a042501000000"), state_from({"rax": rax, "rbx": rbx}))  # mov al,[1]
    assert out.gpr["rax"] == (rax & ~0xFF) | ((rax >> 8) & 0xFF)


@given(regs=st.fixed_dictionaries({r: u64 for r in N.GPRS if r != "rsp"}), offset=st.integers(0, 0x7C))
def test_unaligned_dword_read(regs, offset):
    # mov edx, [offset]: a 32-bit destination is zero-extended
    code = bytes.fromhex("8b1425") + struct.pack("<i", offset)
    s = state_from(regs)
    out = N.run_native(code, s)
    assert out.gpr["rdx"] == struct.unpack_from("<I", s.shadow, offset)[0]


@given(rbx=u64, rdx=u64)
def test_store_goes_to_the_shadow_page_only(rbx, rdx):
    s = state_from({"rbx": rbx, "rdx": rdx})
    out = N.run_native(bytes.fromhex("48891c2510000000"), s)       # mov [16], rbx
    assert struct.unpack_from("<Q", out.shadow, 16)[0] == rbx
    assert out.gpr["rdx"] == rdx and out.gpr["rbx"] == rbx


@given(rcx=st.integers(0, 0x78), rdx=st.integers(0, 8), rsi=u64)
def test_base_and_index(rcx, rdx, rsi):
    # add rsi, [rcx+rdx*8-8] with the effective address kept in the GPR area
    ea = rcx + 8 * rdx - 8
    if not 0 <= ea <= 0x78:
        return
    s = state_from({"rcx": rcx, "rdx": rdx, "rsi": rsi})
    out = N.run_native(bytes.fromhex("480374d1f8"), s)
    assert out.gpr["rsi"] == (rsi + struct.unpack_from("<Q", s.shadow, ea)[0]) & M64


@given(rax=u64, rcx=u64, upper=st.integers(0, 2**384 - 1))
def test_movdqu_loads_rax_rcx_and_keeps_upper_bits(rax, rcx, upper):
    s = state_from({"rax": rax, "rcx": rcx})
    s.zmm[0] = upper << 128
    out = N.run_native(bytes.fromhex("f30f6f042500000000"), s)     # movdqu xmm0, [0]
    low = rax | rcx << 64
    expect_upper = (upper << 128) & ((1 << N.vector_width()) - 1)
    assert out.zmm[0] == expect_upper | low


@given(regs=st.fixed_dictionaries({r: u64 for r in N.GPRS}), flags=st.integers(0, 2**12 - 1),
       vec=st.lists(st.integers(0, 2**512 - 1), min_size=32, max_size=32),
       k=st.lists(u64, min_size=8, max_size=8), rc=st.integers(0, 3), daz_ftz=st.booleans())
@settings(max_examples=40)
def test_state_round_trips_through_a_nop(regs, flags, vec, k, rc, daz_ftz):
    mxcsr = 0x1F80 | rc << 13 | (0x8040 if daz_ftz else 0)
    s = state_from(regs, rflags=flags, zmm=list(vec), k=list(k), mxcsr=mxcsr)
    out = N.run_native(b"\x90", s)
    assert out.gpr == s.gpr
    assert out.rflags & 0xFFF == (flags & N.USER_RFLAGS) | 0x202    # IF is always set in user mode
    width = N.vector_width()
    for i in range(N.vector_count()):
        assert out.zmm[i] == vec[i] & ((1 << width) - 1)
    if width == 512:
        kmask = M64 if "avx512bw" in N.cpu_flags() else 0xFFFF
        assert out.k == [x & kmask for x in k]
    assert out.mxcsr == mxcsr


@given(rax=u64)
def test_push_window_operand_onto_scratch_stack(rax):
    s = state_from({"rax": rax, "rsp": N.STACK_TOP})
    out = N.run_native(bytes.fromhex("ff342500000000"), s)          # push qword [0]
    assert out.gpr["rsp"] == N.STACK_TOP - 8
    at = N.STACK_TOP - 8 - N.STACK_BASE
    assert struct.unpack_from("<Q", out.stack, at)[0] == rax


def test_call_through_the_window_lands_after_the_instruction():
    code = bytes.fromhex("ff142508000000")                          # call [8]
    placed = N.place(code)
    s = state_from({"rcx": placed.after, "rsp": N.STACK_TOP})
    out = N.run_native(code, s)
    assert out.gpr["rsp"] == N.STACK_TOP - 8
    assert struct.unpack_from("<Q", out.stack, N.STACK_TOP - 8 - N.STACK_BASE)[0] == placed.after


def test_jmp_through_the_window_lands_after_the_instruction():
    code = bytes.fromhex("ff242508000000")                          # jmp [8]
    out = N.run_native(code, state_from({"rcx": N.place(code).after, "rax": 3}))
    assert out.gpr["rax"] == 3


@given(rax=u64, rdx=u64)
@settings(max_examples=20)
def test_divide_by_zero_is_reported_not_fatal(rax, rdx):
    s = state_from({"rax": rax, "rdx": rdx, "rcx": 0})
    with pytest.raises(N.NativeFault) as info:
        N.run_native(bytes.fromhex("48f7342508000000"), s)         # div qword [8]  (rcx = 0)
    assert info.value.signo == signal.SIGFPE
    assert info.value.rip == N.INSN_ADDRESS
    # the runner still works afterwards
    assert N.run_native(b"\x90", s).gpr["rax"] == rax


def test_divide_overflow_is_sigfpe():
    s = state_from({"rax": 0, "rdx": 5, "rcx": 2})                 # quotient 5 * 2**63 does not fit
    with pytest.raises(N.NativeFault) as info:
        N.run_native(bytes.fromhex("48f7342508000000"), s)
    assert info.value.signo == signal.SIGFPE


def test_divide_error_kills_a_real_process_with_sigfpe():
    s = state_from({"rax": 1, "rcx": 0})
    assert N.run_in_child(bytes.fromhex("48f7342508000000"), s) == signal.SIGFPE


def test_other_faults():
    with pytest.raises(N.NativeFault) as info:
        N.run_native(bytes.fromhex("0f0b"), N.NativeState())       # ud2
    assert info.value.signo == signal.SIGILL
    with pytest.raises(N.NativeFault) as info:
        N.run_native(b"\x50", N.NativeState())                      # push rax with rsp = 0
    assert info.value.signo == signal.SIGSEGV
    # movdqa with a misaligned operand: #GP
    with pytest.raises(N.NativeFault) as info:
        N.run_native(bytes.fromhex("660f6f042508000000"), N.NativeState())
    assert info.value.signo == signal.SIGSEGV


def test_effective_address_outside_the_window_is_refused():
    with pytest.raises(ValueError):
        N.run_native(bytes.fromhex("488b01"), state_from({"rcx": 0x2000}))   # mov rax, [rcx]
    with pytest.raises(ValueError):
        N.run_native(bytes.fromhex("488b0425fc0f0000"), N.NativeState())     # mov rax, [0xffc]: crosses the end


@given(rsi=st.integers(0, 0x78), rdi=st.integers(0, 0x78), regs=st.fixed_dictionaries({"rax": u64, "rbx": u64}))
def test_string_instruction_with_biased_pointers(rsi, rdi, regs):
    s = state_from(dict(regs, rsi=rsi, rdi=rdi))
    bias = {"rsi": N.SHADOW_BASE, "rdi": N.SHADOW_BASE}
    out = N.run_native(bytes.fromhex("48a5"), s, bias=bias)         # movsq
    assert out.gpr["rsi"] == rsi + 8 and out.gpr["rdi"] == rdi + 8
    assert out.shadow[rdi:rdi + 8] == s.shadow[rsi:rsi + 8]


def test_stray_access_hits_a_guard_page_not_the_state_block():
    # bt [0], r12 with a bit offset far past the shadow page: the CPU goes where the offset says
    s = state_from({"r12": 0x8860})
    with pytest.raises(N.NativeFault) as info:
        N.run_native(bytes.fromhex("4c0fbb242500000000"), s)       # btc [0], r12
    assert info.value.signo == signal.SIGSEGV
    assert N.run_native(b"\x90", s).gpr["r12"] == 0x8860


def test_runaway_instruction_is_stopped(monkeypatch):
    monkeypatch.setattr(N, "WATCHDOG_SECONDS", 0.2)
    code = bytes.fromhex("ff242508000000")                          # jmp [8] back onto itself
    with pytest.raises(N.NativeFault) as info:
        N.run_native(code, state_from({"rcx": N.place(code).address}))
    assert info.value.signo == signal.SIGVTALRM


def test_ldmxcsr_judges_mxcsr_values():
    assert N.mxcsr_accepted(0x1F80)
    assert N.mxcsr_accepted(0xFFFF)            # DAZ and every control bit: fine on a CPU with DAZ
    assert not N.mxcsr_accepted(0x10000)       # a reserved bit: #GP
    assert not N.mxcsr_accepted(0xFFFFFFFF)


def test_biased_pointer_with_32_bit_address_wraps_like_edi():
    # 67 a5: movsd with esi/edi, DF set: edi = 0 steps down to 0xfffffffc (zero-extended)
    s = state_from({"rsi": 0x10, "rdi": 0x5B5EF5E800000000}, rflags=0x400)
    out = N.run_native(bytes.fromhex("67a5"), s, bias={"rsi": N.SHADOW_BASE, "rdi": N.SHADOW_BASE})
    assert out.gpr["rdi"] == 0xFFFFFFFC and out.gpr["rsi"] == 0xC
    assert out.shadow[0:4] == s.shadow[0x10:0x14]


@given(mm=st.lists(u64, min_size=8, max_size=8), rax=u64)
@settings(max_examples=30)
def test_mmx_state_round_trips_and_movq_loads_mm(mm, rax):
    s = state_from({"rax": rax})
    s.st = [m | (0x4000 + i) << 64 for i, m in enumerate(mm)]
    out = N.run_native(b"\x90", s)
    assert out.st == s.st and out.fcw == 0x37F
    out = N.run_native(bytes.fromhex("0f6f1c2500000000"), s)          # movq mm3, [0]
    assert out.st[3] == rax | 0xFFFF << 64                              # MMX writes set sign+exponent to ones
    assert out.ftw == 0xFF and (out.fsw >> 11) & 7 == 0                 # every tag valid, TOP 0
    assert [x for i, x in enumerate(out.st) if i != 3] == [x for i, x in enumerate(s.st) if i != 3]


def test_x87_load_from_the_window():
    s = state_from({"rax": 0x3FF0000000000000})                        # 1.0 as a double
    out = N.run_native(bytes.fromhex("dd042500000000"), s)               # fld qword [0]
    top = (out.fsw >> 11) & 7
    assert top == 7 and out.st[0] == 0x3FFF8000000000000000             # 1.0 as an 80-bit value


@pytest.mark.skipif("avx2" not in N.cpu_flags(), reason="host CPU lacks avx2")
@given(indexes=st.lists(st.integers(0, 31), min_size=4, max_size=4), regs=st.fixed_dictionaries({"rcx": u64}))
@settings(max_examples=30)
def test_gather_reads_each_element_from_the_window(indexes, regs):
    # vpgatherdd xmm1, [rax + xmm2*4], xmm3 with rax = 0: element i is the dword at 4 * index i
    s = state_from(dict(regs, rax=0))
    s.zmm[2] = sum(v << (32 * i) for i, v in enumerate(indexes))
    s.zmm[3] = (2**128 - 1)                                            # every element enabled
    out = N.run_native(bytes.fromhex("c4e261900c90"), s)
    got = [(out.zmm[1] >> (32 * i)) & 0xFFFFFFFF for i in range(4)]
    assert got == [struct.unpack_from("<I", s.shadow, 4 * v)[0] for v in indexes]
    assert out.zmm[3] & (2**128 - 1) == 0                              # the mask is consumed


@given(rcx=st.integers(0, 0x78), rax=u64)
def test_operand_without_displacement_is_placed(rcx, rax):
    s = state_from({"rcx": rcx, "rax": rax})
    out = N.run_native(bytes.fromhex("488b01"), s)                       # mov rax, [rcx]
    assert out.gpr["rax"] == struct.unpack_from("<Q", s.shadow, rcx)[0]
