"""One plan's traffic with the state block: which registers go in, where, and what comes back.

`NativeState` with `write_state` and `read_state` carries the whole machine (the oracle's tests
and `engine.run` use it).  A form run for the emulator needs only the registers iced-x86 says it
uses.  A `Transfer`, made once per plan, names them (basis names in a fixed order: the plan's
general registers, rflags, mxcsr, its vector, opmask and x87 registers) and moves a list of their
values in and out of the block: one `struct` call for the general registers, rflags, mxcsr, the
run's rsp and signal set, one slice per vector register.  Slots the plan does not name are
written as zero (general registers) or keep whatever the block held (vector, opmask and x87
registers): the instruction does not use them, and nothing of them is read back.
"""
from __future__ import annotations

import struct

from regmap.x86.native import host
from regmap.x86.native.host import MXCSR_WRITABLE
from regmap.x86.native.region import B_FX, B_GPR, B_K, B_ZMM, GPRS, LOADED_RFLAGS, RFLAGS_FIXED

# at B_GPR: rax..r15, rflags, mxcsr, (pad), the rsp the instruction runs with, the routed signals
SCALARS = struct.Struct("<16QQI4xQQ")
RFLAGS_SLOT, MXCSR_SLOT, RSP_SLOT, SIGNALS_SLOT = 16, 17, 18, 19
X87_CONTROL = struct.Struct("<HHBxHQQI")      # FXSAVE: fcw fsw ftw fop fip fdp mxcsr
X87_STATUS = struct.Struct("<HHB")
OPMASK = struct.Struct("<Q")
# rflags bits an instruction may change: CF PF AF ZF SF DF OF (AC, ID are not a data instruction's)
RESULT_FLAGS = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800
M80 = (1 << 80) - 1
X87_NAMES = ("fcw", "fsw", "ftw") + tuple(f"st{i}" for i in range(8))


class Transfer:
    """The registers one plan loads and reads back, their places in the block, their rules."""

    __slots__ = ("names", "index", "_gprs", "_vectors", "_opmasks", "_kmask", "_x87", "_template")

    def __init__(self, plan, x87: bool):
        count, width = host.vector_count(), host.vector_width()
        vectors = tuple(i for i in plan.vectors if i < count)      # the host lacks the others
        opmasks = plan.opmasks if width == 512 else ()
        self.names = (plan.gprs + ("rflags", "mxcsr") + tuple(f"zmm{i}" for i in vectors)
                      + tuple(f"k{i}" for i in opmasks) + (X87_NAMES if x87 else ()))
        self.index = {name: i for i, name in enumerate(self.names)}
        self._gprs = tuple((GPRS.index(name), i) for i, name in enumerate(plan.gprs))
        nbytes = width // 8
        beyond = -1 << width        # bits this CPU lacks: kept, unless a VEX or EVEX write zeroes them
        self._vectors = tuple((self.index[f"zmm{i}"], B_ZMM + 64 * i, nbytes, (1 << width) - 1,
                               0 if i in plan.zeroed else beyond) for i in vectors)
        self._opmasks = tuple((self.index[f"k{i}"], B_K + 8 * i) for i in opmasks)
        self._kmask = (1 << 64) - 1 if host.wide_opmasks() else 0xFFFF
        self._x87 = self.index["fcw"] if x87 else None
        self._template = [0] * 20

    def load(self, view, values, rsp: int, signals: int) -> None:
        """Put ``values`` (in `names` order) in the block; the instruction runs with ``rsp`` and
        the fault signals ``signals`` (a bit per signal number) routed to the stub's handler."""
        scalars = self._template.copy()
        for slot, i in self._gprs:
            scalars[slot] = values[i]
        n = len(self._gprs)
        mxcsr = values[n + 1] & MXCSR_WRITABLE
        scalars[RFLAGS_SLOT] = (values[n] & LOADED_RFLAGS) | RFLAGS_FIXED
        scalars[MXCSR_SLOT], scalars[RSP_SLOT], scalars[SIGNALS_SLOT] = mxcsr, rsp, signals
        SCALARS.pack_into(view, B_GPR, *scalars)
        for i, offset, nbytes, mask, _ in self._vectors:
            view[offset:offset + nbytes] = (values[i] & mask).to_bytes(nbytes, "little")
        for i, offset in self._opmasks:
            OPMASK.pack_into(view, offset, values[i] & self._kmask)
        x = self._x87
        if x is not None:
            X87_CONTROL.pack_into(view, B_FX, values[x] & 0xFFFF, values[x + 1] & 0xFFFF, values[x + 2] & 0xFF,
                                  0, 0, 0, mxcsr)
            for i in range(8):
                start = B_FX + 32 + 16 * i
                view[start:start + 10] = (values[x + 3 + i] & M80).to_bytes(10, "little")

    def unload(self, view, before) -> list[int]:
        """The registers after the stub ran (in `names` order), ``before`` being what `load` got:
        rflags changes only in its result flags; a vector keeps the bits this CPU lacks unless the
        instruction zeroes them."""
        after = list(before)
        scalars = SCALARS.unpack_from(view, B_GPR)
        for slot, i in self._gprs:
            after[i] = scalars[slot]
        n = len(self._gprs)
        after[n] = (before[n] & ~RESULT_FLAGS) | (scalars[RFLAGS_SLOT] & RESULT_FLAGS)
        after[n + 1] = scalars[MXCSR_SLOT]
        for i, offset, nbytes, _, keep in self._vectors:
            after[i] = int.from_bytes(view[offset:offset + nbytes], "little") | (before[i] & keep)
        for i, offset in self._opmasks:
            after[i] = OPMASK.unpack_from(view, offset)[0] & self._kmask
        x = self._x87
        if x is not None:
            after[x:x + 3] = X87_STATUS.unpack_from(view, B_FX)
            for i in range(8):
                start = B_FX + 32 + 16 * i
                after[x + 3 + i] = int.from_bytes(view[start:start + 10], "little")
        return after
