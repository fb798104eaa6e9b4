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

An x87 form also carries the thread's last-instruction pointers FOP, FIP and FDP.  The CPU
decides when it updates them (FIP after every non-control instruction; FOP and FDP, on a CPU
with FDP_EXCPTN_ONLY, only when an unmasked exception is detected): the engine watches what it
did and `Transfer.pointers` translates it back, the instruction slot's address to the
instruction's own, a shadow page address to its window address, the re-encoded instruction's
opcode to the original's.  FOP is loaded as `NO_FOP` (never a memory form's opcode: mod 11)
so that an update shows, except where the instruction stores or loads the environment.
"""
from __future__ import annotations

import struct

from iced_x86 import Mnemonic

from regmap.x86 import host
from regmap.x86.host import MXCSR_WRITABLE
from regmap.x86.native.region import (B_FX, B_GPR, B_K, B_MXCSR, B_RFLAGS, B_RSP, B_SIGNALS, B_ZMM, GPRS,
                                      LOADED_RFLAGS, RFLAGS_FIXED, SHADOW_SIZE)

# rflags bits an instruction may change: CF PF AF ZF SF DF OF (AC, ID are not a data instruction's)
RESULT_FLAGS = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800
M80 = (1 << 80) - 1
X87_NAMES = ("fcw", "fsw", "ftw") + tuple(f"st{i}" for i in range(8)) + ("fop", "fip", "fdp")
NO_FOP = 0x7FF          # ModR/M mod 11: no memory form's FOP, so an FOP the CPU stored differs
SLOT_SIZE = 16          # an instruction is at most 15 bytes: FIP in the slot is the instruction's
# the forms that store or load FOP, FIP and FDP as data (the x87 environment): the thread's
# values go in, and what comes out is the CPU's (a save keeps them, FNSAVE clears them)
ENVIRONMENT = frozenset((Mnemonic.FNSTENV, Mnemonic.FSTENV, Mnemonic.FLDENV, Mnemonic.FNSAVE, Mnemonic.FSAVE,
                         Mnemonic.FRSTOR, Mnemonic.FXSAVE, Mnemonic.FXSAVE64, Mnemonic.FXRSTOR,
                         Mnemonic.FXRSTOR64, Mnemonic.XSAVE, Mnemonic.XSAVE64, Mnemonic.XSAVEOPT,
                         Mnemonic.XSAVEOPT64, Mnemonic.XSAVEC, Mnemonic.XSAVEC64, Mnemonic.XSAVES,
                         Mnemonic.XSAVES64, Mnemonic.XRSTOR, Mnemonic.XRSTOR64, Mnemonic.XRSTORS,
                         Mnemonic.XRSTORS64))
# legacy prefixes, FWAIT (fstenv, fsave: the FOP is the escape's) and REX
_PREFIXES = frozenset((0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x9B, *range(0x40, 0x50)))
_CONSTANTS = {"LOADED_RFLAGS": LOADED_RFLAGS, "RFLAGS_FIXED": RFLAGS_FIXED, "MXCSR_WRITABLE": MXCSR_WRITABLE,
              "RESULT_FLAGS": RESULT_FLAGS, "from_bytes": int.from_bytes}


class Transfer:
    """The registers one plan loads and reads back, their places in the block, their rules."""

    __slots__ = ("names", "index", "load", "unload", "fop_at", "fop")

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
        self.fop_at, self.fop = None, None
        if x87:        # the FXSAVE area: fcw fsw ftw, fop fip fdp, mxcsr, then ST(i) every 16 bytes
            x = index["fcw"]
            p = self.fop_at = index["fop"]
            environment = plan.instruction.mnemonic in ENVIRONMENT
            self.fop = None if environment else original_fop(plan.code)
            groups.append([(B_FX, "H", x, f"v[{x}] & 0xFFFF", "{t}"),
                           (B_FX + 2, "H", x + 1, f"v[{x + 1}] & 0xFFFF", "{t}"),
                           (B_FX + 4, "B", x + 2, f"v[{x + 2}] & 0xFF", "{t}"),
                           (B_FX + 6, "H", p, f"v[{p}] & 0x7FF" if environment else str(NO_FOP), "{t}"),
                           (B_FX + 8, "Q", p + 1, f"v[{p + 1}] & {(1 << 64) - 1:#x}", "{t}"),
                           (B_FX + 16, "Q", p + 2, f"v[{p + 2}] & {(1 << 64) - 1:#x}", "{t}"),
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

    def pointers(self, after: list[int], before: list[int], address: int, r) -> None:
        """Translate the FOP, FIP and FDP the CPU left in region ``r`` (in ``after``, in place)
        into what it would have left had the instruction run at ``address`` with its window
        operand: FIP in the slot is ``address``, FDP on the shadow page its window address, an FOP
        stored the original instruction's; one the CPU did not touch is the thread's (``before``)."""
        p = self.fop_at
        if self.fop is not None:
            fop = after[p]
            after[p] = before[p] if fop == NO_FOP else self.fop if self.fop >= 0 else fop
        if r.insn <= after[p + 1] < r.insn + SLOT_SIZE:
            after[p + 1] = address
        if r.shadow <= after[p + 2] < r.shadow + SHADOW_SIZE:
            after[p + 2] -= r.shadow


def original_fop(code: bytes) -> int:
    """The FOP the CPU records for x87 instruction ``code``: the low 3 bits of its escape byte
    (D8..DF) and its ModR/M byte (-1 for a form without an escape byte: MMX)."""
    i = 0
    while i < len(code) and code[i] in _PREFIXES:
        i += 1
    if i + 1 >= len(code) or not 0xD8 <= code[i] <= 0xDF:
        return -1
    return (code[i] & 7) << 8 | code[i + 1]


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
