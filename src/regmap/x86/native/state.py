"""What the native engine loads into the CPU and saves back: `NativeState` and its state block."""
from __future__ import annotations

import ctypes
import dataclasses
import struct

from regmap.x86 import host
from regmap.x86.host import MXCSR_WRITABLE
from regmap.x86.native.region import (ALL_FAULT_SIGNALS, B_FX, B_GPR, B_K, B_RFLAGS, B_ZMM, GPRS,
                                      LOADED_RFLAGS, RFLAGS_FIXED, SHADOW_SIZE, STACK_SIZE, Region)

M64 = (1 << 64) - 1
FNINIT_FCW = 0x037F
DEFAULT_MXCSR = 0x1F80
# FXSAVE area: FCW 0, FSW 2, abridged FTW 4, FOP 6, FIP 8, FDP 16, MXCSR 24, ST(i) at 32 + 16 i
FX_FCW, FX_FSW, FX_FTW, FX_FOP, FX_FIP, FX_FDP, FX_MXCSR, FX_ST = 0, 2, 4, 6, 8, 16, 24, 32


@dataclasses.dataclass(slots=True)
class NativeState:
    """Everything an instruction run natively may read or change.

    ``st`` is in stack order (``st[i]`` is ST(i), as FXSAVE stores it); ``ftw``
    is the abridged tag byte (bit i set: physical register i holds a value);
    TOP is ``fsw`` bits 13:11.  ``stack`` (the scratch stack's bytes) is only
    loaded and saved when not None.
    """

    gpr: dict[str, int] = dataclasses.field(default_factory=lambda: {r: 0 for r in GPRS})
    rflags: int = RFLAGS_FIXED
    zmm: list[int] = dataclasses.field(default_factory=lambda: [0] * 32)
    k: list[int] = dataclasses.field(default_factory=lambda: [0] * 8)
    mxcsr: int = DEFAULT_MXCSR
    shadow: bytes = bytes(SHADOW_SIZE)
    stack: bytes | None = dataclasses.field(default_factory=lambda: bytes(STACK_SIZE))
    st: list[int] = dataclasses.field(default_factory=lambda: [0] * 8)
    fcw: int = FNINIT_FCW
    fsw: int = 0
    ftw: int = 0
    fop: int = 0
    fip: int = 0
    fdp: int = 0

    def copy(self) -> "NativeState":
        return NativeState(dict(self.gpr), self.rflags, list(self.zmm), list(self.k), self.mxcsr, self.shadow,
                           self.stack, list(self.st), self.fcw, self.fsw, self.ftw, self.fop, self.fip, self.fdp)


def write_state(region: Region, state: NativeState, vectors=None, x87: bool = True) -> None:
    """Put ``state`` in the block and the shadow page (in place: the block's other fields are the
    stub's).  ``vectors``: the numbers of the vector and opmask registers to load (None: all);
    ``x87``: whether to load the x87 state.  What is not loaded keeps whatever the block held.
    Every fault signal is routed to the stub's handler (an arbitrary instruction may raise any)."""
    v = region.view
    struct.pack_into("<16Q", v, B_GPR, *(state.gpr.get(name, 0) & M64 for name in GPRS))
    mxcsr = state.mxcsr & MXCSR_WRITABLE        # MM (AMD's misaligned SSE) included where the CPU has it
    struct.pack_into("<QI4xQQ", v, B_RFLAGS, (state.rflags & LOADED_RFLAGS) | RFLAGS_FIXED, mxcsr,
                     state.gpr.get("rsp", 0) & M64, ALL_FAULT_SIGNALS)
    struct.pack_into("<I", v, B_FX + FX_MXCSR, mxcsr)        # FXRSTOR loads it too
    struct.pack_into("<8Q", v, B_K, *(k & M64 for k in state.k))
    count = host.vector_count()
    for i in (range(count) if vectors is None else vectors):
        if i < count:
            v[B_ZMM + 64 * i:B_ZMM + 64 * i + 64] = (state.zmm[i] & ((1 << 512) - 1)).to_bytes(64, "little")
    if not x87:
        return _write_memory(region, state)
    struct.pack_into("<HHBxHQQI", v, B_FX, state.fcw & 0xFFFF, state.fsw & 0xFFFF, state.ftw & 0xFF,
                     state.fop & 0x7FF, state.fip & M64, state.fdp & M64, mxcsr)
    for i in range(8):
        start = B_FX + FX_ST + 16 * i
        v[start:start + 10] = (state.st[i] & ((1 << 80) - 1)).to_bytes(10, "little")
    _write_memory(region, state)


def _write_memory(region: Region, state: NativeState) -> None:
    assert len(state.shadow) == SHADOW_SIZE
    region.shadow_view[:] = state.shadow
    if state.stack is not None:
        assert len(state.stack) == STACK_SIZE
        ctypes.memmove(region.stack, bytes(state.stack), STACK_SIZE)


def read_state(region: Region, template: NativeState, vectors=None, x87: bool = True) -> NativeState:
    """The state after the stub ran: what `write_state` loaded, from the block."""
    v = region.view
    out = template.copy()
    out.gpr = dict(zip(GPRS, struct.unpack_from("<16Q", v, B_GPR)))
    out.rflags, out.mxcsr = struct.unpack_from("<QI", v, B_RFLAGS)
    width = host.vector_width()
    if width == 512:
        kmask = M64 if host.wide_opmasks() else 0xFFFF
        out.k = [k & kmask for k in struct.unpack_from("<8Q", v, B_K)]
    count = host.vector_count()
    for i in (range(count) if vectors is None else vectors):     # the bits the host lacks read as zero
        if i < count:
            out.zmm[i] = int.from_bytes(v[B_ZMM + 64 * i:B_ZMM + 64 * i + width // 8], "little")
    if not x87:
        out.shadow = bytes(region.shadow_view)
        return out
    out.fcw, out.fsw, out.ftw, out.fop, out.fip, out.fdp = struct.unpack_from("<HHBxHQQ", v, B_FX)
    out.st = [int.from_bytes(v[B_FX + FX_ST + 16 * i:B_FX + FX_ST + 16 * i + 10], "little") for i in range(8)]
    out.shadow = bytes(region.shadow_view)
    if template.stack is not None:
        out.stack = ctypes.string_at(region.stack, STACK_SIZE)
    return out
