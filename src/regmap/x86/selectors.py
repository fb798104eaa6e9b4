"""Loading a segment register at CPL 3 in 64-bit mode: which selectors the CPU takes.

`mov ss, [0x88]` or `mov ds, [8]` through the window must refuse what the CPU
refuses with #GP, so a selector is checked as the CPU checks it (SDM, MOV and
"Segment descriptor types"):

- a null selector (index 0 in the GDT, any RPL) loads into ds, es, fs and gs,
  never into ss;
- otherwise the descriptor must exist: inside the GDT's limit (or the LDT's),
  a code or data segment, not a system one;
- ds, es, fs, gs take a data segment or a readable code segment with
  DPL >= max(CPL, RPL), i.e. DPL 3;
- ss takes only a writable data segment with DPL 3, through a selector whose
  RPL is 3.

The descriptors are those every Linux x86-64 process sees (the kernel's
GDT: arch/x86/include/asm/segment.h); a process has no LDT and no TLS
descriptors unless it asks for them (modify_ldt, set_thread_area), which regmap
does not follow: such selectors are refused.  The host-CPU test
(tests/test_segment_loads.py) checks this table against the running kernel.
"""
from __future__ import annotations

from typing import NamedTuple

from regmap.errors import GeneralProtection

CPL = 3


class Descriptor(NamedTuple):
    readable: bool
    writable: bool   # only data segments are writable
    dpl: int


_CODE = Descriptor(readable=True, writable=False, dpl=0)
_DATA = Descriptor(readable=True, writable=True, dpl=0)

# GDT index -> descriptor (absent: an empty slot, which the CPU sees as a system descriptor).
LINUX_GDT = {
    1: _CODE,                        # KERNEL32_CS
    2: _CODE,                        # KERNEL_CS
    3: _DATA,                        # KERNEL_DS
    4: _CODE._replace(dpl=3),        # USER32_CS  0x23
    5: _DATA._replace(dpl=3),        # USER_DS    0x2b
    6: _CODE._replace(dpl=3),        # USER_CS    0x33
    # 8-11: the TSS and LDT descriptors (system); 12-14: TLS slots, empty until set_thread_area
    15: Descriptor(readable=True, writable=False, dpl=3),   # CPUNODE 0x7b: read-only data
}
GDT_ENTRIES = 16


def check_load(register: str, selector: int) -> None:
    """Raise `GeneralProtection` unless the CPU loads `selector` into segment register
    `register` (ds, es, fs, gs, ss) at CPL 3."""
    why = refusal(register, selector)
    if why:
        raise GeneralProtection(f"mov {register}, {selector:#x}: {why} (#GP)")


def refusal(register: str, selector: int) -> str:
    """Why the CPU refuses the load, or '' if it takes it."""
    index, in_ldt, rpl = selector >> 3, selector >> 2 & 1, selector & 3
    if index == 0 and not in_ldt:
        return "a null selector cannot be loaded into ss" if register == "ss" else ""
    descriptor = None if in_ldt or index >= GDT_ENTRIES else LINUX_GDT.get(index)
    if descriptor is None:
        return "no code or data segment descriptor" + (" (this process has no LDT)" if in_ldt else "")
    if register == "ss":
        if rpl != CPL or descriptor.dpl != CPL:
            return "ss needs RPL and DPL equal to CPL 3"
        return "" if descriptor.writable else "ss needs a writable data segment"
    if not descriptor.readable:
        return "not a readable segment"
    return "" if descriptor.dpl >= max(CPL, rpl) else "DPL below CPL 3"
