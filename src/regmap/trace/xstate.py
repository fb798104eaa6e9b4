"""The vector state of a stopped thread, through PTRACE_GETREGSET/SETREGSET NT_X86_XSTATE.

The regset is the XSAVE *standard* (non-compacted) format whatever the kernel
uses internally:

- legacy area (512 bytes): MXCSR at 24, XMM0..15 at 160 + 16*i;
- software bytes at 464: for ptrace (``struct user_xstateregs`` in the kernel's
  asm/user.h) the first quadword is XCR0, the components the process has;
- header at 512: XSTATE_BV (bit i set = component i is not in its init state);
- component 2 (upper 128 bits of ymm0..15) at 576, 16 bytes each;
- component 5 (opmask k0..7) at 1088, 8 bytes each;
- component 6 (upper 256 bits of zmm0..15) at 1152, 32 bytes each;
- component 7 (zmm16..31) at 1664, 64 bytes each.

The standard-format offsets are enumerated by CPUID leaf 0xD; for these
components they have been the same on every Intel and AMD processor that has
them, and the regset's size (checked here) bounds them.  A component the CPU
lacks (its bit clear in XCR0) reads as zero and ignores writes, so a zmm
register on an AVX2-only machine is its ymm value zero-extended.  A component
whose XSTATE_BV bit is clear is in its init state (zero) whatever the buffer
holds; writing it sets the bit.
"""
from __future__ import annotations

import ctypes
import struct

from regmap.trace import ptrace

MXCSR_OFFSET = 24
XMM_OFFSET = 160
XCR0_OFFSET = 464
HEADER_OFFSET = 512

SSE, YMM, OPMASK, ZMM_HI256, HI16_ZMM = 1, 2, 5, 6, 7
COMPONENT_OFFSET = {YMM: 576, OPMASK: 1088, ZMM_HI256: 1152, HI16_ZMM: 1664}
COMPONENT_SIZE = {SSE: 256, YMM: 256, OPMASK: 64, ZMM_HI256: 512, HI16_ZMM: 1024}


def mxcsr_mask() -> int:
    """The MXCSR bits this CPU defines (checked by the kernel too).  Imported when first
    needed: `regmap exec` starts without the x86 layer (the emulator comes at the first fault)."""
    from regmap.x86.cpu import MXCSR_WRITABLE
    return MXCSR_WRITABLE


BUFFER_SIZE = 16384          # larger than any user xstate the kernel exposes without AMX tiles


def _vector_names():
    names = {}
    for i in range(32):
        names[f"zmm{i}"] = i
    return names


VECTOR_INDEX = _vector_names()
OPMASK_INDEX = {f"k{i}": i for i in range(8)}
# the legacy x87 area: name -> (offset, size); ST(i) in stack order, ftw the abridged tag byte
X87_FIELDS = {"fcw": (0, 2), "fsw": (2, 2), "ftw": (4, 1),
              **{f"st{i}": (32 + 16 * i, 10) for i in range(8)}}
X87_INIT = {"fcw": 0x037F}        # FNINIT's values for a component in its initial state
X87 = 0
NAMES = frozenset(VECTOR_INDEX) | frozenset(OPMASK_INDEX) | {"mxcsr"} | frozenset(X87_FIELDS)


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

    def reset(self, tid: int) -> None:
        self.tid = tid
        self.loaded = False
        self.dirty = False

    def load(self) -> None:
        self.size = ptrace.getregset(self.tid, ptrace.NT_X86_XSTATE, self._buffer)
        view = self._view
        features = struct.unpack_from("<Q", view, XCR0_OFFSET)[0]
        if not features & 0b11:          # not filled in: what XSTATE_BV shows, x87 and SSE
            features = self._bv() | 0b11
        self.features = features
        for component, offset in COMPONENT_OFFSET.items():
            if offset + COMPONENT_SIZE[component] > self.size:
                self.features &= ~(1 << component)
        self.loaded = True
        self.dirty = False

    # -- helpers ---------------------------------------------------------------------------
    def _bv(self) -> int:
        return struct.unpack_from("<Q", self._view, HEADER_OFFSET)[0]

    def _present(self, component: int) -> bool:
        return bool(self._bv() >> component & 1)

    def _get(self, component: int, offset: int, size: int) -> int:
        if not (self.features >> component & 1) or not self._present(component):
            return 0
        return int.from_bytes(self._view[offset:offset + size], "little")

    def _put(self, component: int, offset: int, size: int, value: int) -> None:
        if not (self.features >> component & 1):
            return
        bv = self._bv()
        if not bv >> component & 1:
            # leaving the init state: the component's bytes must start as zero
            if component == SSE:
                self._view[XMM_OFFSET:XMM_OFFSET + COMPONENT_SIZE[SSE]] = bytes(COMPONENT_SIZE[SSE])
            else:
                start = COMPONENT_OFFSET[component]
                self._view[start:start + COMPONENT_SIZE[component]] = bytes(COMPONENT_SIZE[component])
            struct.pack_into("<Q", self._view, HEADER_OFFSET, bv | 1 << component)
        self._view[offset:offset + size] = value.to_bytes(size, "little")
        self.dirty = True

    # -- registers ---------------------------------------------------------------------------
    def read(self, name: str) -> int:
        if not self.loaded:
            self.load()
        index = VECTOR_INDEX.get(name)
        if index is not None:
            if index < 16:
                value = self._get(SSE, XMM_OFFSET + 16 * index, 16)
                value |= self._get(YMM, COMPONENT_OFFSET[YMM] + 16 * index, 16) << 128
                value |= self._get(ZMM_HI256, COMPONENT_OFFSET[ZMM_HI256] + 32 * index, 32) << 256
                return value
            return self._get(HI16_ZMM, COMPONENT_OFFSET[HI16_ZMM] + 64 * (index - 16), 64)
        index = OPMASK_INDEX.get(name)
        if index is not None:
            return self._get(OPMASK, COMPONENT_OFFSET[OPMASK] + 8 * index, 8)
        if name == "mxcsr":
            return struct.unpack_from("<I", self._view, MXCSR_OFFSET)[0]
        offset, size = X87_FIELDS[name]
        if not self._present(X87):
            return X87_INIT.get(name, 0)
        return int.from_bytes(self._view[offset:offset + size], "little")

    def write(self, name: str, value: int) -> None:
        if not self.loaded:
            self.load()
        index = VECTOR_INDEX.get(name)
        if index is not None:
            if index < 16:
                mask128 = (1 << 128) - 1
                old = self.read(name)
                if (old ^ value) & mask128:
                    self._put(SSE, XMM_OFFSET + 16 * index, 16, value & mask128)
                if (old ^ value) >> 128 & mask128:
                    self._put(YMM, COMPONENT_OFFSET[YMM] + 16 * index, 16, value >> 128 & mask128)
                if (old ^ value) >> 256:
                    self._put(ZMM_HI256, COMPONENT_OFFSET[ZMM_HI256] + 32 * index, 32,
                              value >> 256 & ((1 << 256) - 1))
            else:
                self._put(HI16_ZMM, COMPONENT_OFFSET[HI16_ZMM] + 64 * (index - 16), 64,
                          value & ((1 << 512) - 1))
            return
        index = OPMASK_INDEX.get(name)
        if index is not None:
            self._put(OPMASK, COMPONENT_OFFSET[OPMASK] + 8 * index, 8, value & ((1 << 64) - 1))
            return
        if name == "mxcsr":
            # MXCSR travels with the SSE component; the kernel refuses reserved bits
            if not self._present(SSE) and self.features >> SSE & 1:
                self._put(SSE, XMM_OFFSET, 16, 0)
            struct.pack_into("<I", self._view, MXCSR_OFFSET, value & mxcsr_mask())
            self.dirty = True
            return
        offset, size = X87_FIELDS[name]
        bv = self._bv()
        if not bv >> X87 & 1:     # leaving the initial state: FNINIT's values first
            self._view[0:24] = bytes(24)
            self._view[32:160] = bytes(128)
            struct.pack_into("<H", self._view, 0, X87_INIT["fcw"])
            struct.pack_into("<Q", self._view, HEADER_OFFSET, bv | 1 << X87)
        self._view[offset:offset + size] = (value & ((1 << 8 * size) - 1)).to_bytes(size, "little")
        self.dirty = True

    def store(self) -> None:
        """Write the area back if a register in it changed."""
        if self.dirty:
            ptrace.setregset(self.tid, ptrace.NT_X86_XSTATE, self._buffer, self.size)
            self.dirty = False
