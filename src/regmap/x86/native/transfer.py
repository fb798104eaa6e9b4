"""One plan's traffic with the state block: which registers go in, where, and what comes back.

`NativeState` with `write_state` and `read_state` carries the whole machine (the oracle's tests
and `engine.run` use it).  A form run for the emulator needs only the registers iced-x86 says it
uses.  A `Transfer`, made once per plan, names them (basis names in a fixed order: the plan's
general registers, rflags, mxcsr, its vector, opmask and x87 registers) and moves a list of their
values in and out of the block.  The block keeps what a run loads contiguous (general registers,
rflags, mxcsr, the run's rsp and signal set, vector and opmask registers), so one `struct`
format per plan covers all of it, the slots it does not use as pad bytes: `load` is one
``pack_into``, `unload` one ``unpack_from`` (the x87 registers, rarer, have their own).  The
general and vector slots a plan does not name are written as zero; nothing of them is read
back.  The two functions are generated once per plan from that format, as straight-line code.
"""
from __future__ import annotations

import struct

from regmap.x86.native import host
from regmap.x86.native.host import MXCSR_WRITABLE
from regmap.x86.native.region import (B_FX, B_GPR, B_K, B_MXCSR, B_RFLAGS, B_RSP, B_SIGNALS, B_ZMM, GPRS,
                                      LOADED_RFLAGS, RFLAGS_FIXED)

X87_CONTROL = struct.Struct("<HHBxHQQI")      # FXSAVE: fcw fsw ftw fop fip fdp mxcsr
X87_STATUS = struct.Struct("<HHB")
# rflags bits an instruction may change: CF PF AF ZF SF DF OF (AC, ID are not a data instruction's)
RESULT_FLAGS = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800
M80 = (1 << 80) - 1
X87_NAMES = ("fcw", "fsw", "ftw") + tuple(f"st{i}" for i in range(8))
_CONSTANTS = {"LOADED_RFLAGS": LOADED_RFLAGS, "RFLAGS_FIXED": RFLAGS_FIXED, "MXCSR_WRITABLE": MXCSR_WRITABLE,
              "RESULT_FLAGS": RESULT_FLAGS, "from_bytes": int.from_bytes}


class Transfer:
    """The registers one plan loads and reads back, their places in the block, their rules."""

    __slots__ = ("names", "index", "_x87", "_pack", "_unpack")

    def __init__(self, plan, x87: bool):
        count, width = host.vector_count(), host.vector_width()
        vectors = tuple(i for i in plan.vectors if i < count)      # the host lacks the others
        opmasks = plan.opmasks if width == 512 else ()
        self.names = (plan.gprs + ("rflags", "mxcsr") + tuple(f"zmm{i}" for i in vectors)
                      + tuple(f"k{i}" for i in opmasks) + (X87_NAMES if x87 else ()))
        self.index = {name: i for i, name in enumerate(self.names)}
        self._x87 = self.index["fcw"] if x87 else None
        # (offset, struct code, index in names or None, its value loaded (an expression over the
        # list v), its value after (over the unpacked field {t}; None: not read back))
        n, nbytes = len(plan.gprs), width // 8
        kmask = (1 << 64) - 1 if host.wide_opmasks() else 0xFFFF
        fields = [(B_GPR + 8 * GPRS.index(name), "Q", i, f"v[{i}]", "{t}") for i, name in enumerate(plan.gprs)]
        fields += [(B_RFLAGS, "Q", n, f"(v[{n}] & LOADED_RFLAGS) | RFLAGS_FIXED",
                    f"(v[{n}] & ~RESULT_FLAGS) | ({{t}} & RESULT_FLAGS)"),
                   (B_MXCSR, "I", n + 1, f"v[{n + 1}] & MXCSR_WRITABLE", "{t}"),
                   (B_RSP, "Q", None, "rsp", None), (B_SIGNALS, "Q", None, "signals", None)]
        for i in vectors:        # the bits this CPU lacks are kept, unless a VEX or EVEX write zeroes them
            at = self.index[f"zmm{i}"]
            kept = "" if i in plan.zeroed else f" | (v[{at}] & {-1 << width:#x})"
            fields.append((B_ZMM + 64 * i, f"{nbytes}s", at,
                           f"(v[{at}] & {(1 << width) - 1:#x}).to_bytes({nbytes}, 'little')",
                           f"from_bytes({{t}}, 'little'){kept}"))
        for i in opmasks:
            at = self.index[f"k{i}"]
            fields.append((B_K + 8 * i, "Q", at, f"v[{at}] & {kmask:#x}", f"{{t}} & {kmask:#x}"))
        self._pack, self._unpack = _generate(fields, len(self.names))

    def load(self, view, values, rsp: int, signals: int) -> None:
        """Put ``values`` (in `names` order) in the block; the instruction runs with ``rsp`` and
        the fault signals ``signals`` (a bit per signal number) routed to the stub's handler."""
        self._pack(view, values, rsp, signals)
        x = self._x87
        if x is not None:
            X87_CONTROL.pack_into(view, B_FX, values[x] & 0xFFFF, values[x + 1] & 0xFFFF, values[x + 2] & 0xFF,
                                  0, 0, 0, values[self.index["mxcsr"]] & MXCSR_WRITABLE)
            for i in range(8):
                start = B_FX + 32 + 16 * i
                view[start:start + 10] = (values[x + 3 + i] & M80).to_bytes(10, "little")

    def unload(self, view, before) -> list[int]:
        """The registers after the stub ran (in `names` order), ``before`` being what `load` got:
        rflags changes only in its result flags; a vector keeps the bits this CPU lacks unless the
        instruction zeroes them."""
        after = self._unpack(view, before)
        x = self._x87
        if x is not None:
            after[x:x + 3] = X87_STATUS.unpack_from(view, B_FX)
            for i in range(8):
                start = B_FX + 32 + 16 * i
                after[x + 3 + i] = int.from_bytes(view[start:start + 10], "little")
        return after


def _generate(fields, count: int):
    """``pack(view, v, rsp, signals)`` and ``unpack(view, v) -> list``: one struct call each over
    ``fields`` (sorted by offset, the gaps as pad bytes); the values not in ``fields`` (x87) pass
    through ``unpack`` unchanged."""
    fields = sorted(fields)
    layout, at = "<", fields[0][0]
    for offset, code, *_ in fields:
        layout += f"{offset - at}x{code}" if offset > at else code
        at = offset + struct.calcsize("<" + code)
    record = struct.Struct(layout)
    loads = ", ".join(load for _, _, _, load, _ in fields)
    after = [f"v[{i}]" for i in range(count)]
    for k, (_, _, i, _, unload) in enumerate(fields):
        if unload is not None:
            after[i] = unload.format(t=f"t[{k}]")
    source = (f"def pack(view, v, rsp, signals):\n    pack_into(view, {fields[0][0]}, {loads})\n"
              f"def unpack(view, v):\n    t = unpack_from(view, {fields[0][0]})\n"
              f"    return [{', '.join(after)}]\n")
    namespace = dict(_CONSTANTS, pack_into=record.pack_into, unpack_from=record.unpack_from)
    exec(compile(source, "<regmap native transfer>", "exec"), namespace)     # noqa: S102 - our own text
    return namespace["pack"], namespace["unpack"]
