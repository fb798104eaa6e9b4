"""Forms that store through an address held in a register operand are not run natively.

``movdir64b rax, [8]`` reads 64 bytes at [8] (the window) and writes them at es:[rax], an address
of the *program's* memory; ``enqcmd`` likewise.  The engine moves only the explicit operand onto
its shadow page: run on the host CPU, the store would land at the program's address in the
memory of the thread running regmap (the tracer, the caller of regmap.emulate).  This host may
lack MOVDIR64B/ENQCMD (they raise #UD here), so the proof is what the engine *would* do on a CPU
that has them: `coverage` for that CPU, and the plan of each decoded form.
"""
from __future__ import annotations

import pytest
from iced_x86 import Decoder

from regmap.x86.native import cpu_flags
from regmap.x86.native.plan import plan_for
from regmap.x86.support import coverage

FORMS = ["66 0f 38 f8 04 25 08 00 00 00",       # movdir64b rax, [8]
         "67 66 0f 38 f8 03",                   # movdir64b eax, [ebx]
         "f2 0f 38 f8 04 25 08 00 00 00",       # enqcmd rax, [8]
         "f3 0f 38 f8 04 25 08 00 00 00"]       # enqcmds rax, [8] (CPL 0 only, still refused)


@pytest.mark.parametrize("code", FORMS)
def test_the_plan_refuses_a_store_through_a_register_operand(code):
    code = bytes.fromhex(code)
    plan = plan_for(Decoder(64, code, ip=0x400000).decode(), code)
    assert plan.refusal is not None and "register operand" in plan.refusal


def test_coverage_on_a_cpu_with_them_lists_them_unsupported():
    entries = {e.name: e for e in coverage(cpu_flags() | {"movdir64b", "enqcmd"}).entries}
    for name in ("MOVDIR64B_R64_M512", "MOVDIR64B_R32_M512", "ENQCMD_R64_M512", "ENQCMD_R32_M512"):
        assert entries[name].status == "unsupported", entries[name]


def test_an_explicit_operand_addressed_by_the_same_register_is_still_native():
    code = bytes.fromhex("48 0f c7 08")                    # cmpxchg16b [rax]
    plan = plan_for(Decoder(64, code, ip=0x400000).decode(), code)
    assert plan.refusal is None
