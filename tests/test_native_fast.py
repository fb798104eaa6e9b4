"""The native engine's per-form caches: its fast path, its placements, its transfers, its signals.

A native form keeps, per form, a `Transfer` (which registers go into the state block, generated
once) and a fast function with one placement per window address; the region keeps the last
instruction it ran and routes only the fault signals a run may raise.  None of it may leak from
one form, address, register or thread into another: each result here is checked against
Python's own IEEE arithmetic (the host CPU rounds as Python does) or against the engine's
generic path through the `Cpu`.
"""
from __future__ import annotations

import platform
import random
import signal
import struct
import sys
import threading

import pytest

if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
    pytest.skip("the native engine runs on an x86-64 Linux host", allow_module_level=True)

from regmap.errors import InstructionFault, NotWindowAccess  # noqa: E402
from regmap.pure import PureMachine  # noqa: E402
from regmap.x86 import Emulator  # noqa: E402
from regmap.x86.native import fast as native_fast  # noqa: E402
from regmap.x86.host import cpu_flags  # noqa: E402

RIP = 0x400000
ADDSD_XMM0_8 = bytes.fromhex("f20f58042508000000")        # addsd xmm0, [8]     (rcx's slot)
ADDSD_XMM3_8 = bytes.fromhex("f20f581c2508000000")        # addsd xmm3, [8]
ADDSD_XMM3_RDI = bytes.fromhex("f20f581f")                # addsd xmm3, [rdi]
MULSD_XMM2_10 = bytes.fromhex("f20f59142510000000")       # mulsd xmm2, [0x10]  (rdx's slot)
DIVSD_XMM0_8 = bytes.fromhex("f20f5e042508000000")        # divsd xmm0, [8]
FST_10 = bytes.fromhex("dd142510000000")                  # fst qword [0x10]
VMASKMOVPS_100 = bytes.fromhex("c4e2752e142500010000")    # vmaskmovps [0x100], ymm1, ymm2
ZM = 1 << 9                                               # MXCSR's divide-by-zero mask
AC = 1 << 18
FPE_FLTDIV, BUS_ADRALN = 3, 1


def f64(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", value))[0]


def double(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits & (2**64 - 1)))[0]


def machine(code: bytes, **registers) -> PureMachine:
    return PureMachine({"rip": RIP, "rflags": 0x202, "mxcsr": 0x1F80, "fcw": 0x37F, **registers}, {RIP: code})


def step(emulator: Emulator, code: bytes, fast: bool = True, **registers) -> PureMachine:
    """Run ``code`` once from ``registers``: through the form's fast path, or (``fast`` False)
    with it taken away, through the `Cpu`."""
    form = emulator.form_at(RIP, code)
    assert form.native is not None, "not a native form"
    if fast:
        assert form.fast is not None, "the fast path does not take this form"
    else:
        form.fast = None
    m = machine(code, **registers)
    emulator.step(m)
    return m


def test_forms_sharing_a_code_keep_their_own_registers():
    emulator = Emulator()
    rng = random.Random(1)
    for _ in range(20):
        a, b, x0, x3 = (rng.uniform(-1e6, 1e6) for _ in range(4))
        one = step(emulator, ADDSD_XMM0_8, rcx=f64(a), zmm0=f64(x0), zmm3=f64(x3))
        other = step(emulator, ADDSD_XMM3_8, rcx=f64(b), zmm0=f64(x0), zmm3=f64(x3))
        assert double(one.registers["zmm0"]) == x0 + a and one.registers["zmm3"] == f64(x3)
        assert double(other.registers["zmm3"]) == x3 + b and other.registers["zmm0"] == f64(x0)
        assert one.registers["rip"] == other.registers["rip"] == RIP + len(ADDSD_XMM0_8)


def test_forms_sharing_generated_code_keep_their_own_instruction():
    """addsd, subsd, mulsd and divsd xmm0, [8] generate the same fast-path text (same registers,
    same window bytes, same length): the compiled code is shared, each form runs its own bytes."""
    emulator = Emulator()
    operations = {0x58: float.__add__, 0x5C: float.__sub__, 0x59: float.__mul__, 0x5E: float.__truediv__}
    rng = random.Random(4)
    for _ in range(10):
        for opcode, operation in operations.items():
            code = bytes([0xF2, 0x0F, opcode]) + bytes.fromhex("042508000000")
            a, b = rng.uniform(1, 1e6), rng.uniform(1, 1e6)
            m = step(emulator, code, rcx=f64(a), zmm0=f64(b))
            assert double(m.registers["zmm0"]) == operation(b, a), code.hex()


def test_only_what_the_instruction_changes_is_written():
    emulator = Emulator()
    m = step(emulator, ADDSD_XMM0_8, rcx=f64(1.5), zmm0=f64(2.0) | 0xAB << 64, rdi=7, zmm3=5)
    # the upper bits of xmm0 are kept by a legacy SSE scalar write; nothing else moved
    assert m.registers == {"rip": RIP + len(ADDSD_XMM0_8), "rflags": 0x202, "mxcsr": 0x1F80, "fcw": 0x37F,
                           "rcx": f64(1.5), "zmm0": f64(3.5) | 0xAB << 64, "rdi": 7, "zmm3": 5}


def test_a_form_after_another_changed_the_engine_state():
    """The region's instruction slot and state block hold the last form's: the next form (or
    the same form again) must load its own."""
    emulator = Emulator()
    for a, b in ((1.25, 3.0), (-7.5, 0.5), (1e300, 1e10)):
        first = step(emulator, ADDSD_XMM0_8, rcx=f64(a), zmm0=f64(b))
        second = step(emulator, MULSD_XMM2_10, rdx=f64(a), zmm2=f64(b), zmm0=f64(99.0))
        again = step(emulator, ADDSD_XMM0_8, rcx=f64(b), zmm0=f64(a))
        assert double(first.registers["zmm0"]) == b + a
        assert double(second.registers["zmm2"]) == b * a and second.registers["zmm0"] == f64(99.0)
        assert double(again.registers["zmm0"]) == a + b


def plain_double_slots(layout) -> list[int]:
    """Window addresses whose 8 bytes are one general register or the low quadword of a vector."""
    out = []
    for address in range(0, layout.size - 8, 8):
        try:
            slices = layout.resolve(address, 8)
        except Exception:      # a hole
            continue
        if len(slices) == 1 and slices[0].basis in native_fast.PLAIN and slices[0].hi - slices[0].lo == 63:
            out.append(address)
    return out


def test_a_computed_address_keeps_one_placement_per_address_and_starts_over_when_full():
    emulator = Emulator()
    layout = emulator.layout
    slots = plain_double_slots(layout)
    assert len(slots) > native_fast.ADDRESSES       # enough addresses to fill the placements
    form = emulator.form_at(RIP, ADDSD_XMM3_RDI)
    rng = random.Random(2)
    for address in slots + slots[:5]:
        ((basis, hi, lo),) = layout.resolve(address, 8)
        value = rng.uniform(-100, 100)
        registers = {basis: f64(value) << lo, "rdi": address}
        x3 = registers.get("zmm3", f64(0.5))
        registers["zmm3"] = x3
        m = step(emulator, ADDSD_XMM3_RDI, **registers)
        want = double(x3) + double(registers[basis] >> lo)
        assert double(m.registers["zmm3"]) == want, hex(address)
        assert len(form.fast.placements) <= native_fast.ADDRESSES


def test_addresses_the_fast_path_does_not_take_go_the_generic_way():
    emulator = Emulator()
    # the rflags slot (0x88): the generic path keeps its rule (it reads as PUSHFQ shows it)
    want = step(Emulator(), ADDSD_XMM3_RDI, fast=False, rdi=0x88, rflags=0x10202, zmm3=f64(1.0))
    got = step(emulator, ADDSD_XMM3_RDI, rdi=0x88, rflags=0x10202, zmm3=f64(1.0))
    assert got.registers == want.registers
    with pytest.raises(NotWindowAccess):                 # not the window at all
        step(emulator, ADDSD_XMM3_RDI, rdi=0x10000)


def test_a_store_goes_through_the_layout():
    emulator = Emulator()
    # fst qword [0x10] stores st0 (physical register 0 with TOP = 0, tagged valid) as a double into rdx
    st0 = (0x3FFF << 64) | (0xC << 60)                  # 1.5 in the 80-bit format
    registers = dict(st0=st0, fsw=0, ftw=0x01, rdx=12345)
    m = step(emulator, FST_10, **registers)
    assert double(m.registers["rdx"]) == 1.5
    assert m.registers == step(Emulator(), FST_10, fast=False, **registers).registers


def test_a_conditional_store_lands_only_where_bytes_changed():
    if "avx" not in cpu_flags():
        pytest.skip("host CPU lacks AVX")
    rng = random.Random(3)
    for _ in range(10):
        registers = {"zmm0": rng.getrandbits(512), "zmm1": rng.getrandbits(256), "zmm2": rng.getrandbits(256)}
        want = step(Emulator(), VMASKMOVPS_100, fast=False, **registers)
        got = step(Emulator(), VMASKMOVPS_100, **registers)
        assert got.registers == want.registers


def test_an_unmasked_exception_is_routed_and_delivered():
    emulator = Emulator()
    masked = step(emulator, DIVSD_XMM0_8, rcx=f64(0.0), zmm0=f64(1.0))
    assert double(masked.registers["zmm0"]) == float("inf") and masked.registers["mxcsr"] & ZM
    m = machine(DIVSD_XMM0_8, rcx=f64(0.0), zmm0=f64(1.0), mxcsr=0x1F80 & ~ZM)
    with pytest.raises(InstructionFault) as fault:
        emulator.step(m)
    assert (fault.value.signo, fault.value.si_code, fault.value.si_addr) == (signal.SIGFPE, FPE_FLTDIV, RIP)
    assert m.registers["zmm0"] == f64(1.0) and m.registers["rip"] == RIP      # nothing committed


def test_alignment_checking_is_routed_when_ac_is_set():
    emulator = Emulator()
    code = bytes.fromhex("f20f58042509000000")         # addsd xmm0, [9]
    step(emulator, code, rcx=0, rdx=0, zmm0=f64(1.0))    # AC clear: runs
    m = machine(code, zmm0=f64(1.0), rflags=0x202 | AC)
    with pytest.raises(InstructionFault) as fault:
        emulator.step(m)
    assert (fault.value.signo, fault.value.si_code) == (signal.SIGBUS, BUS_ADRALN)


def test_illegal_instructions_are_routed_until_the_form_has_run():
    emulator = Emulator()
    form = emulator.form_at(RIP, ADDSD_XMM0_8)
    assert form.native.signals(0x202, 0x1F80) & 1 << signal.SIGILL
    step(emulator, ADDSD_XMM0_8, rcx=f64(1.0))
    assert not form.native.signals(0x202, 0x1F80) & 1 << signal.SIGILL
    assert form.native.signals(0x202, 0x1F80) == 1 << signal.SIGSEGV
    if "avx512f" in cpu_flags():
        return
    code = bytes.fromhex("62f1f54858042500010000")     # vaddpd zmm0, zmm1, [0x100]: #UD here
    with pytest.raises(InstructionFault) as fault:
        step(emulator, code)
    assert fault.value.signo == signal.SIGILL
    assert emulator.form_at(RIP, code).native.signals(0x202, 0x1F80) & 1 << signal.SIGILL


def test_threads_each_get_their_own_results():
    emulator = Emulator()
    errors: list[str] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(200):
            code, slot, dest = rng.choice([(ADDSD_XMM0_8, "rcx", "zmm0"), (ADDSD_XMM3_8, "rcx", "zmm3"),
                                           (MULSD_XMM2_10, "rdx", "zmm2")])
            a, b = rng.uniform(-1e3, 1e3), rng.uniform(-1e3, 1e3)
            m = machine(code, **{slot: f64(a), dest: f64(b)})
            emulator.step(m)
            want = b * a if code == MULSD_XMM2_10 else b + a
            if double(m.registers[dest]) != want:
                errors.append(f"thread {seed}: {double(m.registers[dest])} != {want}")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:5]
