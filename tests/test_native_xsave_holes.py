"""FXSAVE/FXRSTOR and the XSAVE family on a window with holes: they fault exactly where the CPU
accesses its area (`regmap.x86.native.footprint`).

The footprint is checked against the CPU itself: the area is placed across one of the shadow
page's guard pages, at every alignment the instruction allows, so that only the area's bytes
``j .. j + 4095`` are mapped (j negative: its first ``4096 + j``); the CPU page-faults exactly
when the footprint leaves them.  That pins where the footprint starts and where it ends (to the
alignment), for every RFBM; a gap inside it cannot be seen this way.
Then the emulator, on the default layout (a hole at 0x94-0xff and from 0x300), must fault
exactly when the footprint meets a hole.
"""
from __future__ import annotations

import struct

import pytest
from iced_x86 import Code, Encoder, Instruction, MemoryOperand, OpCodeInfo, Register

import native_cpu as N
from regmap.errors import LayoutError, UnsupportedInstruction, WindowHole
from regmap.layout import load_layout
from regmap.pure import PureMachine, emulator_for
from regmap.x86 import host
from regmap.x86.native import engine, footprint
from regmap.x86.native.state import NativeState

pytestmark = pytest.mark.skipif(N.host.platform_problem() is not None or "xsave" not in N.cpu_flags(),
                                reason="needs the native engine and XSAVE")
SI_KERNEL = 0x80
PAGE = 4096
SAVES = {"fxsave": Code.FXSAVE64_M512BYTE, "fxrstor": Code.FXRSTOR64_M512BYTE, "xsave": Code.XSAVE64_MEM,
         "xsaveopt": Code.XSAVEOPT64_MEM, "xsavec": Code.XSAVEC64_MEM, "xrstor": Code.XRSTOR64_MEM}
NEEDS = {"xsaveopt": "xsaveopt", "xsavec": "xsavec"}


def requested() -> list[int]:
    """RFBMs to try: single components and mixtures, of those the host has (no PKRU or AMX,
    which the engine refuses)."""
    xcr0 = host.current().xcr0 & ~((1 << 9) | (1 << 17) | (1 << 18))
    out = {0, xcr0}
    out.update(1 << i for i in range(64) if xcr0 >> i & 1)
    out.update({xcr0 & 0b110, xcr0 & 0b101, xcr0 & 0xE0, xcr0 & 0xE4})
    return sorted(out)


def cases():
    for name, code in SAVES.items():
        if name in NEEDS and NEEDS[name] not in N.cpu_flags():
            continue
        for rfbm in ([3] if name.startswith("fx") else requested()):
            if name == "xrstor":
                for compacted in ((False, True) if "xsavec" in N.cpu_flags() else (False,)):
                    yield name, code, rfbm, compacted
            else:
                yield name, code, rfbm, False


def encode(code: int, at: int, base=Register.RBX, displ: int = 0) -> bytes:
    encoder = Encoder(64)
    operand = MemoryOperand(base) if base != Register.NONE else \
        MemoryOperand(displ=displ, displ_size=4)
    encoder.encode(Instruction.create_mem(code, operand), at)
    return encoder.take_buffer()


def header(rfbm: int, compacted: bool) -> bytes:
    xcomp = (1 << 63 | rfbm) if compacted else 0
    return struct.pack("<QQ", rfbm, xcomp) + bytes(48)


@pytest.mark.parametrize("name, code, rfbm, compacted", list(cases()))
def test_the_footprint_is_where_the_cpu_faults(name, code, rfbm, compacted):
    r = N.region()
    native = encode(code, r.insn)
    mnemonic = OpCodeInfo(code).mnemonic
    step = 16 if name.startswith("fx") else 64
    accessed = footprint.accessed(mnemonic, rfbm, struct.unpack_from("<Q", header(rfbm, compacted), 8)[0])
    for j in range(step - PAGE, PAGE + 1, step):
        # the area starts j bytes below the shadow page (above it if j < 0): only its bytes
        # j .. j + 4095 are mapped, the guard pages on either side are not
        shadow = bytearray(PAGE)
        if j <= footprint.HEADER <= j + PAGE - 64:
            shadow[footprint.HEADER - j:footprint.HEADER - j + 64] = header(rfbm, compacted)
        state = NativeState()
        state.gpr.update(rbx=r.shadow - j, rax=rfbm & 0xFFFFFFFF, rdx=rfbm >> 32)
        state.shadow = bytes(shadow)
        try:
            engine.execute(native, state, watchdog=N.WATCHDOG_SECONDS)
            faulted = False
        except engine.NativeFault as fault:
            assert fault.si_code != SI_KERNEL, f"{name} rfbm {rfbm:#x} at -{j:#x}: {fault} (not a page fault)"
            faulted = True
        expected = any(offset < j or offset + size > j + PAGE for offset, size in accessed)
        assert faulted == expected, f"{name} rfbm {rfbm:#x} compacted={compacted}, bytes {j:#x}.. mapped"


LAYOUT = load_layout()


def holes(start: int, ranges) -> bool:
    try:
        for offset, size in ranges:
            LAYOUT.resolve(start + offset, size)
    except LayoutError:
        return True
    return False


@pytest.mark.parametrize("name, code, rfbm, compacted", [c for c in cases() if not c[3]])
@pytest.mark.parametrize("start", [0x0, 0x100, 0x200])
def test_the_emulator_faults_where_the_footprint_meets_a_hole(name, code, rfbm, compacted, start):
    instruction = encode(code, 0x400000, Register.NONE, start)
    values = {"rip": 0x400000, "rflags": 2, "mxcsr": 0x1F80, "fcw": 0x37F, "rax": rfbm & 0xFFFFFFFF,
              "rdx": rfbm >> 32}
    machine = PureMachine(values, {0x400000: instruction})
    accessed = footprint.accessed(OpCodeInfo(code).mnemonic, rfbm, 0)
    try:
        emulator_for(LAYOUT).step(machine)
        outcome = "ran"
    except WindowHole:
        outcome = "hole"
    except UnsupportedInstruction as refused:
        assert "outside" in refused.reason
        outcome = "outside"
    except Exception as error:       # the CPU refused the state (an XRSTOR of register bytes)
        outcome = type(error).__name__
    if any(start + offset + size > LAYOUT.size for offset, size in accessed):
        assert outcome == "outside"
    elif holes(start, accessed):
        assert outcome == "hole"
    else:
        assert outcome != "hole"


def test_xsave_of_nothing_still_touches_its_header():
    # xsave [0x100] with edx:eax = 0: XSAVE reads XSTATE_BV (0x300, a hole) and writes it back
    # unchanged; a store of the same bytes is still a store: it faults
    machine = PureMachine({"rip": 0x400000, "rflags": 2, "mxcsr": 0x1F80},
                          {0x400000: encode(Code.XSAVE64_MEM, 0x400000, Register.NONE, 0x100)})
    with pytest.raises(WindowHole):
        emulator_for(LAYOUT).step(machine)
