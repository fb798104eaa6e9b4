"""AMX and the native engine: tile state is not in the engine's state, so the forms that load or
store it through the window, and XSAVE-family RFBMs naming it, are refused by name; and the stub
keeps SIGVTALRM blocked but for a watchdog's run."""
from __future__ import annotations

import signal
import struct

import pytest
from iced_x86 import Code, Encoder, Instruction, MemoryOperand, Register

import native_cpu as N
from regmap.errors import UnsupportedInstruction
from regmap.layout import load_layout
from regmap.pure import PureMachine, emulator_for
from regmap.x86 import host
from regmap.x86.native.region import B_MASK

pytestmark = pytest.mark.skipif(N.host.platform_problem() is not None, reason="needs the native engine")
AMX = (1 << 17) | (1 << 18)


def run(instruction: Instruction, **regs) -> None:
    encoder = Encoder(64)
    encoder.encode(instruction, 0x400000)
    machine = PureMachine({"rip": 0x400000, "rflags": 2, "mxcsr": 0x1F80, **regs},
                          {0x400000: encoder.take_buffer()})
    emulator_for(load_layout()).step(machine)


@pytest.mark.parametrize("code", [Code.VEX_LDTILECFG_M512, Code.VEX_STTILECFG_M512])
def test_tile_configuration_forms_are_refused(code):
    with pytest.raises(UnsupportedInstruction, match="AMX tile state"):
        run(Instruction.create_mem(code, MemoryOperand(displ=0x100, displ_size=4)))


@pytest.mark.parametrize("code", [Code.VEX_TILELOADD_TMM_SIBMEM, Code.VEX_TILELOADDT1_TMM_SIBMEM])
def test_tile_loads_are_refused(code):
    operand = MemoryOperand(Register.RAX, Register.RCX, 1)
    with pytest.raises(UnsupportedInstruction, match="AMX tile state"):
        run(Instruction.create_reg_mem(code, Register.TMM0, operand), rax=0x100, rcx=64)


def test_tile_stores_are_refused():
    operand = MemoryOperand(Register.RAX, Register.RCX, 1)
    with pytest.raises(UnsupportedInstruction, match="AMX tile state"):
        run(Instruction.create_mem_reg(Code.VEX_TILESTORED_SIBMEM_TMM, operand, Register.TMM0), rax=0x100, rcx=64)


@pytest.mark.skipif(not host.current().xcr0 & AMX, reason="XCR0 has no AMX state on this host")
@pytest.mark.parametrize("code", [Code.XSAVE64_MEM, Code.XRSTOR64_MEM])
def test_xsave_family_asking_for_tiles_is_refused(code):
    with pytest.raises(UnsupportedInstruction, match="AMX components"):
        run(Instruction.create_mem(code, MemoryOperand(displ=0x0, displ_size=4)), rax=AMX & 0xFFFFFFFF)


def test_the_stub_blocks_sigvtalrm_but_for_a_watchdog():
    r = N.region()
    blocked = struct.unpack_from("<Q", r.view, B_MASK)[0]
    vtalrm = 1 << (signal.SIGVTALRM - 1)
    assert blocked & vtalrm
    r.unblock_watchdog(True)
    try:
        assert not struct.unpack_from("<Q", r.view, B_MASK)[0] & vtalrm
    finally:
        r.unblock_watchdog(False)
    assert struct.unpack_from("<Q", r.view, B_MASK)[0] == blocked
