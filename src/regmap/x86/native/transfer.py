"""One plan's traffic with the state block: which registers go in, where, and what comes back.

`NativeState` with `write_state` and `read_state` carries the whole machine (the oracle's tests
and `engine.run` use it).  A form run for the emulator needs only the registers iced-x86 says it
uses.  A `Transfer`, made once per plan, names them (basis names in a fixed order: the plan's
general registers, rflags, mxcsr, its vector, opmask and x87 registers) and moves a list of their
values in and out of the block.  The block keeps what a run loads contiguous (general registers,
rflags, mxcsr, the run's rsp and signal set, vector and opmask registers), so one `struct`
format per plan covers all of it, the slots it does not use as pad bytes: `load` is one
``pack_into``, `unload` one ``unpack_from`` (and one more each for an x87 form's FXSAVE area).
The general and vector slots a plan does not name are written as zero; nothing of them is read
back.  The two functions are generated once per plan from those formats, as straight-line code.
"""
from __future__ import annotations

import struct

from regmap.x86 import host
from regmap.x86.host import MXCSR_WRITABLE
from regmap.x86.native.region import (B_FX, B_GPR, B_K, B_MXCSR, B_RFLAGS, B_RSP, B_SIGNALS, B_ZMM, GPRS,
                                      LOADED_RFLAGS, RFLAGS_FIXED)

# rflags bits an instruction may change: CF PF AF ZF SF DF OF (AC, ID are not a data instruction's)
RESULT_FLAGS = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800
M80 = (1 << 80) - 1
X87_NAMES = ("fcw", "fsw", "ftw") + tuple(f"st{i}" for i in range(8))
_CONSTANTS = {"LOADED_RFLAGS": LOADED_RFLAGS, "RFLAGS_FIXED": RFLAGS_FIXED, "MXCSR_WRITABLE": MXCSR_WRITABLE,
              "RESULT_FLAGS": RESULT_FLAGS, "from_bytes": int.from_bytes}


class Transfer:
    """The registers one plan loads and reads back, their places in the block, their rules."""

    __slots__ = ("names", "index", "load", "unload")

    def __init__(self, plan, x87: bool):
        count, width = host.vector_count(), host.vector_width()
        vectors = tuple(i for i in plan.vectors if i < count)      # the host lacks the others
        opmasks = plan.opmasks if width == 512 else ()
        self.names = (plan.gprs + ("rflags", "mxcsr") + tuple(f"zmm{i}" for i in vectors)
                      + tuple(f"k{i}" for i in opmasks) + (X87_NAMES if x87 else ()))
        self.index = index = {name: i for i, name in enumerate(self.names)}
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
            at = index[f"zmm{i}"]
            kept = "" if i in plan.zeroed else f" | (v[{at}] & {-1 << width:#x})"
            fields.append((B_ZMM + 64 * i, f"{nbytes}s", at,
                           f"(v[{at}] & {(1 << width) - 1:#x}).to_bytes({nbytes}, 'little')",
                           f"from_bytes({{t}}, 'little'){kept}"))
        for i in opmasks:
            at = index[f"k{i}"]
            fields.append((B_K + 8 * i, "Q", at, f"v[{at}] & {kmask:#x}", f"{{t}} & {kmask:#x}"))
        groups = [fields]
        if x87:        # the FXSAVE area: fcw fsw ftw, fop fip fdp (zero), mxcsr, then ST(i) every 16 bytes
            x = index["fcw"]
            groups.append([(B_FX, "H", x, f"v[{x}] & 0xFFFF", "{t}"),
                           (B_FX + 2, "H", x + 1, f"v[{x + 1}] & 0xFFFF", "{t}"),
                           (B_FX + 4, "B", x + 2, f"v[{x + 2}] & 0xFF", "{t}"), (B_FX + 6, "H", None, "0", None),
                           (B_FX + 8, "Q", None, "0", None), (B_FX + 16, "Q", None, "0", None),
                           (B_FX + 24, "I", None, f"v[{n + 1}] & MXCSR_WRITABLE", None)]
                          + [(B_FX + 32 + 16 * i, "10s", x + 3 + i,
                              f"(v[{x + 3 + i}] & {M80:#x}).to_bytes(10, 'little')", "from_bytes({t}, 'little')")
                             for i in range(8)])
        self.load, self.unload = _generate(groups, len(self.names))
        # load(view, values, rsp, signals): put ``values`` (in `names` order) in the block; the
        # instruction runs with ``rsp`` and the fault signals ``signals`` (a bit per signal
        # number) routed to the stub's handler.  unload(view, before) -> the registers after the
        # stub ran, ``before`` being what `load` got: rflags changes only in its result flags; a
        # vector keeps the bits this CPU lacks unless the instruction zeroes them.


def _generate(groups, count: int):
    """``load(view, v, rsp, signals)`` and ``unload(view, v) -> list``: one struct call per group
    of ``fields`` (each group sorted by offset, its gaps pad bytes)."""
    packs, unpacks, namespace = [], [], dict(_CONSTANTS)
    after = [f"v[{i}]" for i in range(count)]
    for g, fields in enumerate(groups):
        fields = sorted(fields)
        layout, at = "<", fields[0][0]
        for offset, code, *_ in fields:
            layout += f"{offset - at}x{code}" if offset > at else code
            at = offset + struct.calcsize("<" + code)
        record = struct.Struct(layout)
        namespace[f"pack{g}"], namespace[f"unpack{g}"] = record.pack_into, record.unpack_from
        packs.append(f"    pack{g}(view, {fields[0][0]}, {', '.join(load for _, _, _, load, _ in fields)})\n")
        unpacks.append(f"    t{g} = unpack{g}(view, {fields[0][0]})\n")
        for k, (_, _, i, _, unload) in enumerate(fields):
            if unload is not None:
                after[i] = unload.format(t=f"t{g}[{k}]")
    source = ("def load(view, v, rsp, signals):\n" + "".join(packs)
              + "def unload(view, v):\n" + "".join(unpacks) + f"    return [{', '.join(after)}]\n")
    exec(compile(source, "<regmap native transfer>", "exec"), namespace)     # noqa: S102 - our own text
    return namespace["load"], namespace["unload"]
