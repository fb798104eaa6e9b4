"""The bytes of its area an FXSAVE/FXRSTOR or XSAVE-family instruction accesses.

In the window a byte with no register is a hole, which faults as unmapped memory would.  A
state save or restore runs natively over a whole window image, so which of its bytes it
touches has to be known beforehand: the SDM (Vol. 1, 13.13) says an execution "may access any
byte of any state component on which that execution operates", and which those are follows from
RFBM (edx:eax & XCR0), the instruction, and for XRSTOR the header's XSTATE_BV/XCOMP_BV
(13.7-13.10, 13.8.1-2):

- FXSAVE/FXRSTOR: the 512-byte operand (the CPU checks all of it, reserved bytes included);
- component 0 (x87): bytes 0-23 and 32-159; component 1 (SSE): 160-415; MXCSR and MXCSR_MASK
  (24-31) with component 1, and for XSAVE, XSAVEOPT and the standard XRSTOR also with
  component 2 (AVX) -- XSAVEC and the compacted XRSTOR consider only RFBM[1];
- the header: XSAVE and XSAVEOPT read XSTATE_BV and write it back (512-519); XSAVEC writes
  XSTATE_BV and XCOMP_BV (512-527); XRSTOR reads XSTATE_BV and XCOMP_BV and checks the reserved
  bytes (standard form 512-535, compacted 512-575), then the components;
- component i >= 2 in RFBM: its standard offset and size (CPUID leaf 0xD sub-leaf i, from
  `host.current()`), or for XSAVEC and the compacted XRSTOR its compacted offset: from 576,
  in order, over the components of RFBM (XCOMP_BV for XRSTOR), each rounded up to 64 where
  CPUID.(0xD, i):ECX[1] says so.

The init and modified optimizations (XSAVEOPT, XSAVEC) let the CPU skip writing a component; it
still operates on it and may access it, so a hole there faults (what the CPU may do).  The
standard XRSTOR operates on every component of RFBM, loading those XSTATE_BV has and
initialising the others: all are accessed (measured: with XSTATE_BV 0 it still faults on them).
"""
from __future__ import annotations


from iced_x86 import Mnemonic

from regmap.x86 import host

FX = {Mnemonic.FXSAVE, Mnemonic.FXSAVE64, Mnemonic.FXRSTOR, Mnemonic.FXRSTOR64}
_SAVE = {Mnemonic.XSAVE, Mnemonic.XSAVE64, Mnemonic.XSAVEOPT, Mnemonic.XSAVEOPT64}
_COMPACT_SAVE = {Mnemonic.XSAVEC, Mnemonic.XSAVEC64}
_RESTORE = {Mnemonic.XRSTOR, Mnemonic.XRSTOR64}
FORMS = FX | _SAVE | _COMPACT_SAVE | _RESTORE
HEADER = 512
EXTENDED = 576
COMPACTED = 1 << 63
_X87 = ((0, 24), (32, 128))
_SSE = ((160, 256),)
_MXCSR = (24, 8)


def accessed(mnemonic: int, rfbm: int, xcomp_bv: int = 0) -> list[tuple[int, int]]:
    """``(offset, size)`` from the area's start of every byte the instruction accesses, in
    order.  ``rfbm``: edx:eax & XCR0; ``xcomp_bv``: for XRSTOR, the header's XCOMP_BV (its
    bytes are `header_bytes`, which the caller has checked)."""
    if mnemonic in FX:
        return [(0, 512)]
    out: list[tuple[int, int]] = []
    compacted = mnemonic in _COMPACT_SAVE or (mnemonic in _RESTORE and bool(xcomp_bv & COMPACTED))
    if mnemonic in _RESTORE:
        out.append((HEADER, 64 if compacted else 24))
        placed = xcomp_bv if compacted else rfbm       # where the compacted components lie
    else:
        out.append((HEADER, 16 if compacted else 8))
        placed = rfbm                                  # XSAVEC's XCOMP_BV is RFBM
    if rfbm & 1:
        out.extend(_X87)
    if rfbm & 2:
        out.extend(_SSE)
    if rfbm & 2 or (not compacted and rfbm & 4):
        out.append(_MXCSR)
    out.extend(_extended(placed, rfbm & placed, compacted))
    return sorted(out)


def header_bytes(mnemonic: int) -> tuple[int, int] | None:
    """The header bytes XRSTOR reads to find its form, before anything else (None for others)."""
    return (HEADER, 16) if mnemonic in _RESTORE else None


def _extended(placed: int, wanted: int, compacted: bool) -> list[tuple[int, int]]:
    """The extended components of ``wanted``: standard offsets, or compacted over ``placed``."""
    profile = host.current()
    out, at = [], EXTENDED
    for i in sorted(profile.components):
        offset, size = profile.components[i]
        if compacted and placed >> i & 1:
            if i in profile.aligned:
                at = (at + 63) & ~63
            offset, at = at, at + size
        if wanted >> i & 1:
            out.append((offset, size))
    return out
