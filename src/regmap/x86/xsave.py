"""Where each register lives in an XSAVE image: one table, laid out from the CPU's own CPUID.

Signal frames and ``NT_X86_XSTATE`` hold the XSAVE *standard* (non-compacted) format:

- the legacy area (512 bytes): FCW 0, FSW 2, abridged FTW 4, MXCSR 24, MXCSR_MASK 28,
  ST(i) at 32 + 16 i, XMM(i) at 160 + 16 i; bytes 464..511 are the kernel's (fpx_sw_bytes in a
  signal frame, XCR0 in a ptrace image);
- the header at 512: XSTATE_BV (bit i set: component i holds state; clear: it is in its
  initial state, its bytes are stale and read as that state);
- each further component at the offset CPUID.(EAX=0DH, ECX=i).EBX gives, which differs between
  vendors (opmask: 1088 on Intel's AVX-512 parts, 832 on AMD's).

A register is a list of pieces, each ``(component, offset, size, shift)``: zmm3 is xmm3 in the
legacy area, bits 255..128 in component 2 and bits 511..256 in component 6.  `Layout` builds
the table from a `Profile` and reads and writes registers in an image given as a writable byte
view; `check` refuses an image whose features or size the layout does not account for, naming
what differs, so no register is ever read from the wrong bytes.
"""
from __future__ import annotations

import functools
import struct

from regmap import places
from regmap.errors import RegmapError
from regmap.x86.host import AVX, COMPONENT_NAMES, SSE, X87, Profile, current

XSTATE_BV = 512                 # the header's first quadword
LEGACY_XMM, LEGACY_ST, LEGACY_MXCSR = places.LEGACY_START[SSE], 32, places.MXCSR_OFFSET
FNINIT_FCW = 0x037F
# what the legacy area's own components hold in their initial state, by register
INITIAL = {"fcw": FNINIT_FCW}
# components kept in the legacy area: their bytes there, zeroed when they leave the initial state
LEGACY_BYTES = {X87: ((0, 24), (LEGACY_ST, 128)), SSE: ((LEGACY_XMM, 256),)}
# (offset, bytes) of the x87 control, status and tag words and the last instruction's pointers
X87_CONTROL = {name: places.XSAVE[name][0][1:3] for name in ("fcw", "fsw", "ftw", "fop", "fip", "fdp")}


class XstateLayoutError(RegmapError):
    """An XSAVE image is not laid out as this CPU's CPUID says."""


class Layout:
    """The XSAVE standard format of one CPU (`Profile`): component offsets, register pieces."""

    def __init__(self, profile: Profile):
        self.profile = profile
        self.components = {X87: (0, 160), SSE: (LEGACY_XMM, 256), **profile.components}
        self.pieces = self._pieces()

    def _pieces(self) -> dict[str, tuple[tuple[int, int, int, int], ...]]:
        """`places.XSAVE` with each component's start added; the pieces of components this CPU
        does not have are left out (their bits read as zero)."""
        start = {**places.LEGACY_START, **{i: offset for i, (offset, _) in self.components.items()}}
        return {name: tuple((component, start[component] + offset, size, shift)
                            for component, offset, size, shift in pieces if component in start)
                for name, pieces in places.XSAVE.items()}

    def offset(self, component: int) -> int:
        return self.components[component][0]

    def size(self, features: int) -> int:
        """Bytes of an image holding ``features`` (x87 and SSE always)."""
        return self.profile.xsave_size(features | 0b11)

    def check(self, features: int, size: int, what: str) -> None:
        """``what`` (an image with components ``features`` in ``size`` bytes) is laid out as this
        CPU says, or XstateLayoutError naming the difference."""
        unknown = features & ~(0b11 | sum(1 << i for i in self.profile.components))
        if unknown:
            names = ", ".join(COMPONENT_NAMES.get(i, f"component {i}") for i in range(64) if unknown >> i & 1)
            raise XstateLayoutError(
                f"{what} holds {names} (features {features:#x}), which {self.profile.describe()} does not "
                f"enable (XCR0 {self.profile.xcr0:#x}); regmap cannot tell where its registers are")
        want = self.size(features)
        if size != want:
            raise XstateLayoutError(
                f"{what} is {size} bytes for features {features:#x}; CPUID leaf 0xD of "
                f"{self.profile.describe()} lays those out in {want} bytes ("
                + ", ".join(f"{COMPONENT_NAMES.get(i, i)} {o}+{s}" for i, (o, s) in sorted(self.components.items())
                            if features >> i & 1) + ")")

    # -- registers in an image ------------------------------------------------------------------
    def read(self, view, name: str, features: int, bv: int) -> int:
        """Register ``name`` in the image ``view`` (bytes) of an image with components
        ``features`` whose XSTATE_BV is ``bv``; a component in its initial state reads as it."""
        if name == "mxcsr":      # in the legacy area whatever XSTATE_BV says (XSAVE writes it
            return struct.unpack_from("<I", view, LEGACY_MXCSR)[0]   # with SSE or AVX)
        value = 0
        for component, offset, size, shift in self.pieces[name]:
            if features >> component & 1 and bv >> component & 1:
                value |= int.from_bytes(view[offset:offset + size], "little") << shift
            elif shift == 0:
                value |= INITIAL.get(name, 0)
        return value

    def write(self, view, name: str, value: int, features: int, header: bool = True) -> bool:
        """Set register ``name``; the bits of components this image lacks are dropped (the CPU
        lacks them).  Returns whether any byte changed.  ``header``: False for a bare FXSAVE
        image (no XSTATE_BV: x87 and SSE always hold state)."""
        bv = struct.unpack_from("<Q", view, XSTATE_BV)[0] if header else 0b11
        if name == "mxcsr":
            # the kernel takes MXCSR from an image only with x87, SSE or AVX live (ptrace)
            if not bv & (1 << X87 | 1 << SSE | 1 << AVX):
                bv = self._make_live(view, SSE, bv)
            struct.pack_into("<I", view, LEGACY_MXCSR, value & 0xFFFFFFFF)
            return True
        changed = False
        for component, offset, size, shift in self.pieces[name]:
            if not features >> component & 1:
                continue
            part = value >> shift & ((1 << 8 * size) - 1)
            live = bv >> component & 1
            if not live and part == (INITIAL.get(name, 0) if shift == 0 else 0):
                continue         # the initial state already reads as this
            data = part.to_bytes(size, "little")
            if live and view[offset:offset + size] == data:
                continue
            if not live:
                bv = self._make_live(view, component, bv)
            view[offset:offset + size] = data
            changed = True
        return changed

    def _make_live(self, view, component: int, bv: int) -> int:
        """Put ``component`` in its initial state in the bytes and set its XSTATE_BV bit."""
        for start, length in LEGACY_BYTES.get(component, ((self.components[component][0],
                                                          self.components[component][1]),)):
            view[start:start + length] = bytes(length)
        if component == X87:
            struct.pack_into("<H", view, 0, FNINIT_FCW)
        bv |= 1 << component
        struct.pack_into("<Q", view, XSTATE_BV, bv)
        return bv


@functools.lru_cache(maxsize=None)
def layout(profile: Profile | None = None) -> Layout:
    """The layout of ``profile``'s images (the running host's by default)."""
    return Layout(profile or current())
