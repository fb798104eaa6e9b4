"""Trampolines for window slots of xmm16-31, ymm16-31 and zmm registers, run on the CPU.

The default layout places ymm0-15 only, so the forms tests never copy an upper vector register
to a trampoline's mirror and back (EVEX extracts and inserts, which keep the other lanes).  Here
a layout with such slots (test_trampoline_profiles' one) is mapped, and reads, writes and
straddling accesses of them run through their trampolines from random states, against the same
runs emulated.  test_trampoline_profiles checks the code generated for hosts without AVX-512.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from iced_x86 import Code, Instruction, MemoryOperand, Register

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_trampoline_forms import (REASON, STATES, WIDE, build_trials, catching,  # noqa: E402
                                   drawn_states, run)
from test_trampoline_profiles import LAYOUT  # noqa: E402

import regmap  # noqa: E402
from regmap.layout import load_layout  # noqa: E402
from regmap.x86.machine_code import assemble  # noqa: E402

pytestmark = pytest.mark.skipif(REASON is not None or not WIDE,
                                reason=REASON or "upper vector registers need AVX-512")


class Form(NamedTuple):
    instruction: str
    bytes: bytes
    rflags_fixed: tuple = (0, 0)


def slot(layout, name: str) -> int:
    return next(p.address for p in layout.placements() if p.name == name)


def made(layout) -> list[Form]:
    """Reads and writes of each kind of upper slot, some across two registers."""
    def m(address: int) -> MemoryOperand:
        return MemoryOperand(displ=address, displ_size=4)
    x16, x17, y17, z5 = (slot(layout, n) for n in ("xmm16", "xmm17", "ymm17", "zmm5"))
    made = [
        Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RAX, m(x16 + 8)),
        Instruction.create_mem_reg(Code.MOV_RM64_R64, m(x16 + 4), Register.RDX),
        Instruction.create_mem_reg(Code.MOV_RM64_R64, m(x17 - 4), Register.RBX),   # xmm16 | xmm17
        Instruction.create_mem_reg(Code.MOVDQU_XMMM128_XMM, m(x16), Register.XMM3),
        Instruction.create_reg_mem(Code.MOVDQU_XMM_XMMM128, Register.XMM4, m(x17 - 8)),
        Instruction.create_mem_reg(Code.VEX_VMOVDQU_YMMM256_YMM, m(y17), Register.YMM2),
        Instruction.create_mem_reg(Code.VEX_VMOVDQU_YMMM256_YMM, m(y17 - 16), Register.YMM5),
        Instruction.create_reg_reg_mem(Code.EVEX_VPADDD_ZMM_K1Z_ZMM_ZMMM512B32, Register.ZMM1,
                                       Register.ZMM2, m(z5)),
        Instruction.create_mem_reg(Code.EVEX_VMOVDQU64_ZMMM512_K1Z_ZMM, m(z5 + 32), Register.ZMM6),
        Instruction.create_mem_reg(Code.MOV_RM32_R32, m(z5 + 62), Register.ECX),  # zmm5 | zmm6
    ]
    return [Form(str(i), assemble([i], 0x401000)) for i in made]


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    directory = tmp_path_factory.mktemp("high-vectors")
    (directory / "wide.regs").write_text(LAYOUT)
    layout = load_layout(str(directory / "wide.regs"))
    chosen = made(layout)
    return build_trials(directory, chosen), chosen, layout


@pytest.fixture
def caught(wide):
    yield from catching(wide[0])


def test_upper_vector_slots_run_through_trampolines_as_emulated(wide, caught):
    lib, chosen, layout = wide
    states = drawn_states(31, chosen, STATES)
    with regmap.mapped(layout, translate=0, fast_faults=False):
        emulated = [[run(lib, i, s) for s in row] for i, row in enumerate(states)]
    with regmap.mapped(layout, translate=2, fast_faults=False):
        for i, row in enumerate(states):        # hot
            for s in row:
                run(lib, i, s)
        through = [[run(lib, i, s) for s in row] for i, row in enumerate(states)]
        kinds = [t.kind for t in regmap.stats().translated]
    assert kinds.count("trampoline") == len(chosen), kinds
    assert all(outcome[0] == "ran" for row in emulated for outcome in row)
    wrong = [(chosen[i].instruction, j) for i in range(len(chosen)) for j in range(STATES)
             if through[i][j] != emulated[i][j]]
    assert not wrong, wrong
