"""What the SDM leaves undefined, on purpose: regmap must give exactly what the host CPU gives.

Intel and AMD CPUs differ on these results and flags (and an Intel CPU differs from itself
between forms: ``rol r8, imm8`` and ``rol m8, imm8``), so every case is put to the host through
``oracle.check``, which compares every register and flag, undefined ones included.  The
inputs are drawn to land in the undefined cases: 16-bit shld/shrd by 17..31, rotates by more
than one bit and by whole turns, multiplies, divides, shifts' AF and OF, the bit scans and bit
tests, the logic instructions' AF, the BMI instructions' undefined flags.
"""
from __future__ import annotations

import platform
import random
import sys

import pytest
from iced_x86 import Code, Encoder, Instruction, MemoryOperand, Register

if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
    pytest.skip("needs an x86-64 Linux host to run instructions natively", allow_module_level=True)

import native_cpu as N  # noqa: E402
import oracle  # noqa: E402

R, C = Register, Code
WINDOW = 0x18                        # the default layout's rbx: no implicit operand lives there
SOURCE = {16: R.DX, 32: R.EDX, 64: R.RDX}


def window() -> MemoryOperand:
    return MemoryOperand(displ=WINDOW, displ_size=4)


def encode(ins: Instruction) -> bytes:
    encoder = Encoder(64)
    encoder.encode(ins, 0)
    return encoder.take_buffer()


def registers(rng: random.Random, **fixed) -> dict[str, int]:
    regs = {name: rng.getrandbits(64) for name in N.GPRS}
    regs.update(rsp=N.STACK_TOP, rflags=rng.getrandbits(12) & 0x8D5)
    regs.update(fixed)
    return regs


def agree(code: bytes, regs: dict[str, int]) -> None:
    assert oracle.check(code, regs).kind == "compared", oracle.disassemble(code)


def shift(mnemonic: str, width: int, count: int | None) -> bytes:
    """``mnemonic [WINDOW], imm8`` (count given) or ``mnemonic [WINDOW], cl``: both, since a CPU
    may answer otherwise for each (an Intel one does for rotates)."""
    if count is None:
        return encode(Instruction.create_mem_reg(getattr(C, f"{mnemonic}_RM{width}_CL"), window(), R.CL))
    return encode(Instruction.create_mem_i32(getattr(C, f"{mnemonic}_RM{width}_IMM8"), window(), count))


# -- rotates by more than one bit (OF undefined), whole turns included ----------------------------

@pytest.mark.parametrize("mnemonic", ["ROL", "ROR", "RCL", "RCR"])
@pytest.mark.parametrize("width", [8, 16, 32, 64])
def test_rotates_by_more_than_one_bit(mnemonic, width):
    rng = random.Random(f"{mnemonic}{width}")
    limit = 63 if width == 64 else 31
    # every count above 1, so the 8-bit whole turns (rol by 8, 16, 24; rcl by 9, 18, 27) and the
    # 16-bit ones (rcl by 17) are all there
    for count in range(2, limit + 1):
        agree(shift(mnemonic, width, count), registers(rng))
        agree(shift(mnemonic, width, None), registers(rng, rcx=count))


# -- shifts: AF always, OF beyond one bit, CF of shl/shr by the width or more ---------------------

@pytest.mark.parametrize("mnemonic", ["SHL", "SHR", "SAR"])
@pytest.mark.parametrize("width", [8, 16, 32, 64])
def test_shifts_af_and_of(mnemonic, width):
    rng = random.Random(f"{mnemonic}{width}")
    limit = 63 if width == 64 else 31
    for count in [1, 2, 3, width - 1, width, width + 1, limit] + [rng.randint(2, limit) for _ in range(6)]:
        if count > limit:
            continue
        for _ in range(4):
            agree(shift(mnemonic, width, count), registers(rng))
            agree(shift(mnemonic, width, None), registers(rng, rcx=count))


# -- shld/shrd: a 16-bit count above 16 leaves the result and every flag undefined -----------------

@pytest.mark.parametrize("mnemonic", ["SHLD", "SHRD"])
def test_16_bit_double_shifts_by_17_to_31(mnemonic):
    rng = random.Random(mnemonic)
    by_cl = getattr(C, f"{mnemonic}_RM16_R16_CL")
    by_imm = getattr(C, f"{mnemonic}_RM16_R16_IMM8")
    for count in range(17, 32):
        for _ in range(3):
            agree(encode(Instruction.create_mem_reg_reg(by_cl, window(), R.DX, R.CL)),
                  registers(rng, rcx=count))
            agree(encode(Instruction.create_mem_reg_i32(by_imm, window(), R.DX, count)), registers(rng))


@pytest.mark.parametrize("mnemonic", ["SHLD", "SHRD"])
@pytest.mark.parametrize("width", [16, 32, 64])
def test_double_shifts_af_and_of(mnemonic, width):
    rng = random.Random(f"{mnemonic}{width}")
    code = getattr(C, f"{mnemonic}_RM{width}_R{width}_CL")
    for count in range(1, (64 if width == 64 else 32)):
        agree(encode(Instruction.create_mem_reg_reg(code, window(), SOURCE[width], R.CL)),
              registers(rng, rcx=count))


# -- multiplies (SF ZF AF PF) and divides (every flag) ---------------------------------------------

@pytest.mark.parametrize("width", [8, 16, 32, 64])
def test_multiplies(width):
    rng = random.Random(f"mul{width}")
    forms = [Instruction.create_mem(getattr(C, f"MUL_RM{width}"), window()),
             Instruction.create_mem(getattr(C, f"IMUL_RM{width}"), window())]
    if width > 8:
        forms += [Instruction.create_reg_mem(getattr(C, f"IMUL_R{width}_RM{width}"), SOURCE[width], window()),
                  Instruction.create_reg_mem_i32(getattr(C, f"IMUL_R{width}_RM{width}_IMM8"),
                                                 SOURCE[width], window(), -3)]
    for ins in forms:
        for _ in range(40):
            small = rng.random() < 0.5       # products that fit, and zero, as well as overflows
            regs = registers(rng, rax=rng.getrandbits(4) if small else rng.getrandbits(64))
            if rng.random() < 0.2:
                regs["rbx"] = 0
            agree(encode(ins), regs)


@pytest.mark.parametrize("mnemonic", ["DIV", "IDIV"])
@pytest.mark.parametrize("width", [8, 16, 32, 64])
def test_divides(mnemonic, width):
    rng = random.Random(f"{mnemonic}{width}")
    ins = Instruction.create_mem(getattr(C, f"{mnemonic}_RM{width}"), window())
    compared = 0
    for _ in range(60):
        # a small dividend and a non-zero divisor: the quotient fits, flags are all undefined
        regs = registers(rng, rdx=0, rax=rng.getrandbits(width - 2),
                         rbx=rng.getrandbits(width - 1) | 1)
        compared += oracle.check(encode(ins), regs).kind == "compared"
    assert compared > 40


# -- bit scans, bit counts, bit tests --------------------------------------------------------------

@pytest.mark.parametrize("mnemonic", ["BSF", "BSR", "TZCNT", "LZCNT", "POPCNT"])
@pytest.mark.parametrize("width", [16, 32, 64])
def test_bit_scans_and_counts(mnemonic, width):
    if mnemonic in ("TZCNT", "LZCNT") and "bmi1" not in N.cpu_flags() and "abm" not in N.cpu_flags():
        pytest.skip("no tzcnt/lzcnt here")
    rng = random.Random(f"{mnemonic}{width}")
    ins = Instruction.create_reg_mem(getattr(C, f"{mnemonic}_R{width}_RM{width}"), SOURCE[width], window())
    for i in range(30):
        # a zero source (bsf/bsr's destination is undefined then) one time in three
        agree(encode(ins), registers(rng, rbx=0 if i % 3 == 0 else 1 << rng.randrange(width)))


@pytest.mark.parametrize("mnemonic", ["BT", "BTS", "BTR", "BTC"])
@pytest.mark.parametrize("width", [16, 32, 64])
def test_bit_tests(mnemonic, width):
    rng = random.Random(f"{mnemonic}{width}")
    by_imm = Instruction.create_mem_i32(getattr(C, f"{mnemonic}_RM{width}_IMM8"), window(), rng.randrange(width))
    by_reg = Instruction.create_mem_reg(getattr(C, f"{mnemonic}_RM{width}_R{width}"), window(), SOURCE[width])
    for _ in range(20):
        agree(encode(by_imm), registers(rng))
        agree(encode(by_reg), registers(rng, rdx=rng.randrange(width)))


# -- AF of the logic instructions ------------------------------------------------------------------

@pytest.mark.parametrize("mnemonic", ["AND", "OR", "XOR", "TEST"])
@pytest.mark.parametrize("width", [8, 16, 32, 64])
def test_logic_af(mnemonic, width):
    rng = random.Random(f"{mnemonic}{width}")
    name = f"{mnemonic}_RM{width}_R{width}"
    ins = Instruction.create_mem_reg(getattr(C, name), window(), {8: R.DL, **SOURCE}[width])
    for _ in range(20):
        agree(encode(ins), registers(rng, rflags=0x10))


# -- BMI: AF and PF (and SF of bextr) undefined ----------------------------------------------------

BMI = {"ANDN": ("bmi1", lambda w: Instruction.create_reg_reg_mem(getattr(C, f"VEX_ANDN_R{w}_R{w}_RM{w}"),
                                                                 SOURCE[w], _other(w), window())),
       "BLSI": ("bmi1", lambda w: Instruction.create_reg_mem(getattr(C, f"VEX_BLSI_R{w}_RM{w}"), SOURCE[w], window())),
       "BLSR": ("bmi1", lambda w: Instruction.create_reg_mem(getattr(C, f"VEX_BLSR_R{w}_RM{w}"), SOURCE[w], window())),
       "BLSMSK": ("bmi1", lambda w: Instruction.create_reg_mem(getattr(C, f"VEX_BLSMSK_R{w}_RM{w}"), SOURCE[w], window())),
       "BEXTR": ("bmi1", lambda w: Instruction.create_reg_mem_reg(getattr(C, f"VEX_BEXTR_R{w}_RM{w}_R{w}"),
                                                                  SOURCE[w], window(), _other(w))),
       "BZHI": ("bmi2", lambda w: Instruction.create_reg_mem_reg(getattr(C, f"VEX_BZHI_R{w}_RM{w}_R{w}"),
                                                                 SOURCE[w], window(), _other(w)))}


def _other(width: int):
    return {32: R.ESI, 64: R.RSI}[width]


@pytest.mark.parametrize("mnemonic", BMI)
@pytest.mark.parametrize("width", [32, 64])
def test_bmi_undefined_flags(mnemonic, width):
    feature, make = BMI[mnemonic]
    if feature not in N.cpu_flags():
        pytest.skip(f"no {feature} here")
    rng = random.Random(f"{mnemonic}{width}")
    for _ in range(20):
        agree(encode(make(width)), registers(rng, rsi=rng.getrandbits(16)))
