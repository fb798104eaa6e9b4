"""Trampolines generated for every CPU profile, on any host.

A trampoline copies the registers behind its operand to the stack and back with instructions
chosen by the host's vector width (SSE ``movdqu``, VEX ``vmovdqu``, EVEX inserts that keep the
upper lanes).  Code written here for a host without AVX-512, or with it, must be right there too:
for each profile, every register slot of a layout with general, xmm, ymm and zmm registers (0 to
31) is read and written through a trampoline built for that profile, without running it.  A
register the profile lacks is declined; what is built needs only the profile's features beside
the x86-64 baseline.
"""
from __future__ import annotations

import pytest
from iced_x86 import Code, Decoder, Instruction, MemoryOperand, Register

from test_generated_code import BASELINE, PROFILES  # noqa: I001 - a sibling test module
from regmap.layout import load_layout
from regmap.x86 import host, trampoline
from regmap.x86.machine_code import assemble

SITE, PLACED = 0x401000, 0x402000
LAYOUT = """include amd64;
layout wide : 4096 {
  0x000: rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r{8..15};
  0x080: rip;
  0x088: rflags;
  0x100: xmm{16..31};
  0x200: ymm{16..31};
  0x400: zmm{0..15};
}
"""


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    wide = tmp_path_factory.mktemp("layouts") / "wide.regs"
    wide.write_text(LAYOUT)
    return {"default": load_layout(), "wide": load_layout(str(wide))}


def has(profile: host.Profile, name: str) -> bool:
    """Whether a CPU of `profile` has register `name` (of the layouts above)."""
    number = int("".join(c for c in name if c.isdigit()) or 0)
    if name.startswith("zmm"):
        return profile.vector_width >= 512
    if name.startswith(("xmm", "ymm")):
        wide = 256 if name.startswith("ymm") else 128
        return profile.vector_width >= wide and number < profile.vector_count
    return True


def accesses(address: int) -> list[tuple[str, bytes]]:
    """A read and a write of the 8 bytes at window `address` ([disp32] in the SIB form)."""
    memory = MemoryOperand(displ=address, displ_size=4)
    made = [Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RAX, memory),
            Instruction.create_mem_reg(Code.MOV_RM64_R64, memory, Register.RAX)]
    return [("read", assemble(made[:1], SITE)), ("write", assemble(made[1:], SITE))]


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_slot_gets_the_profiles_trampoline_or_is_declined(name, layouts):
    profile = PROFILES[name]
    width, flags = profile.vector_width, profile.flags | BASELINE
    built = declined = 0
    for layout in layouts.values():
        for placed in layout.placements():
            if placed.name == "mxcsr":
                continue
            for kind, code in accesses(placed.address):
                try:
                    p = trampoline.plan(SITE, code, layout, width)
                    t = trampoline.build(p, PLACED, width)
                except trampoline.Declined as why:
                    assert not has(profile, placed.name), (placed.name, kind, str(why))
                    assert "not on this host" in str(why)
                    declined += 1
                    continue
                assert has(profile, placed.name), (placed.name, kind, "built where it has none")
                decoded = list(Decoder(64, t.code, ip=PLACED))
                assert sum(i.len for i in decoded) == len(t.code)
                assert t.instruction in {i.ip for i in decoded}
                for i in decoded:
                    if i.ip != t.instruction:       # the moved instruction is the program's own
                        missing = host.missing_features(i.code, flags)
                        assert not missing, (name, placed.name, kind, str(i), missing)
                built += 1
    assert built and (declined > 0) == (profile.vector_width < 512)
