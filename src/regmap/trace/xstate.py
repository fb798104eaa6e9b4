"""The vector and x87 state of a stopped thread, through PTRACE_GETREGSET/SETREGSET NT_X86_XSTATE.

The regset is the XSAVE *standard* (non-compacted) format whatever the kernel
uses internally; where each register lies in it is this CPU's own layout
(`regmap.x86.xsave`, from CPUID leaf 0xD: Intel and AMD differ).  At byte 464
ptrace puts XCR0, the components the process has (``struct user_xstateregs``
in the kernel's asm/user.h), and the regset's length is that layout's size for
XCR0: both are checked, so a register is never read from the wrong bytes.  A
component the CPU lacks reads as zero and ignores writes (a zmm register on an
AVX2-only machine is its ymm value zero-extended); one whose XSTATE_BV bit is
clear is in its initial state whatever the buffer holds, and writing it sets
the bit.

The layout is made at the first load, not at import: `regmap exec` starts
without the x86 layer.
"""
from __future__ import annotations

import ctypes
import struct

from regmap import places
from regmap.trace import ptrace

XCR0_OFFSET = 464
HEADER_OFFSET = 512
# the largest image: every user component of any CPU so far, AMX tile data (8 KiB) included
BUFFER_SIZE = 16384

# the registers this regset holds (the same on every CPU; which bytes hold them is the layout's)
NAMES = frozenset(places.XSAVE) | {"mxcsr"}


def _layout():
    from regmap.x86 import xsave
    return xsave.layout()


class XState:
    """One thread's XSAVE area, loaded on first use and written back only if changed."""

    def __init__(self):
        self._buffer = (ctypes.c_ubyte * BUFFER_SIZE)()
        self._view = memoryview(self._buffer).cast("B")
        self.tid = 0
        self.loaded = False
        self.dirty = False
        self.size = 0
        self.features = 0     # XCR0: the components this CPU and kernel have
        self.layout = None

    def reset(self, tid: int) -> None:
        self.tid = tid
        self.loaded = False
        self.dirty = False

    def load(self) -> None:
        self.size = ptrace.getregset(self.tid, ptrace.NT_X86_XSTATE, self._buffer)
        self.parse(self.size)
        self.loaded = True
        self.dirty = False

    def parse(self, size: int, layout=None) -> None:
        """Take the ``size`` bytes in the buffer as an image of ``layout``'s CPU (this one's by
        default); XstateLayoutError if the layout does not account for them."""
        self.layout = layout or self.layout or _layout()
        self.size = size
        features = struct.unpack_from("<Q", self._view, XCR0_OFFSET)[0]
        if not features & 0b11:        # not filled in (an old kernel): what XSTATE_BV shows
            features = self._bv() | 0b11
        self.layout.check(features, size, f"the NT_X86_XSTATE regset of thread {self.tid}")
        self.features = features

    def _bv(self) -> int:
        return struct.unpack_from("<Q", self._view, HEADER_OFFSET)[0]

    def read(self, name: str) -> int:
        if not self.loaded:
            self.load()
        return self.layout.read(self._view, name, self.features, self._bv())

    def write(self, name: str, value: int) -> None:
        if not self.loaded:
            self.load()
        if name == "mxcsr":
            from regmap.x86.host import MXCSR_WRITABLE     # the kernel refuses reserved bits
            value &= MXCSR_WRITABLE
        if self.layout.write(self._view, name, value, self.features):
            self.dirty = True

    def store(self) -> None:
        """Write the area back if a register in it changed."""
        if self.dirty:
            ptrace.setregset(self.tid, ptrace.NT_X86_XSTATE, self._buffer, self.size)
            self.dirty = False
