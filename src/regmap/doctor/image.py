"""The self-test's memory: one block at a fixed address below 2 GiB, the same in every backend.

A *state* is a dict of basis-register values: the 16 general registers, ``rflags``, ``mxcsr``,
``fcw``, ``fsw``, ``ftw`` (FXSAVE's abridged tag byte), ``st0``..``st7``, the vector registers
the host has (``zmm0``.. cut to its vector width) and, with AVX-512, ``k0``..``k7``; plus
``stack``, the bytes of the case's scratch stack as one little-endian int.

The block holds, for each case, a *slot*: the state going in (general registers in the order
``popfq``/``pop`` load them, an XSAVE standard-format image) and coming out (the order
``pushfq``/``push`` store them, another image) and the case's scratch stack.  In front of the
slots, what only the doctor's own process uses: where its code keeps the caller's ``rsp`` and
extended state, and the oracle's *window buffer*, the layout's 4096-byte image that the CPU's
own run of an instruction reads and writes instead of page 0.  The traced program's data
segment is the same bytes at the same address, so a state's ``rsp`` is the same everywhere.
"""
from __future__ import annotations

import ctypes
import os

from regmap.x86 import host

GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
# the 15 general registers a slot's "in" area loads with pop, in order (rsp comes last, apart)
POP_ORDER = ("r15", "r14", "r13", "r12", "r11", "r10", "r9", "r8",
             "rdi", "rsi", "rbp", "rbx", "rdx", "rcx", "rax")
USER_FLAGS = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800   # CF PF AF ZF SF DF OF
XSAVE_COMPONENTS = 0b1110_0111          # x87, SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
LEGACY_ST, LEGACY_XMM, LEGACY_MXCSR, XSTATE_BV = 32, 160, 24, 512
STACK_SIZE = 256

# a slot: offsets from its start
IN_GPR = 0            # rflags, POP_ORDER, rsp: 17 qwords
OUT_GPR = 192         # POP_ORDER then rflags: 16 qwords, as pushfq and 15 pushes leave them
OUT_RSP = OUT_GPR + 128
STACK = 384
IN_XSAVE = STACK + STACK_SIZE

# the block's head
HOST_RSP, HOST_XSAVE = 0, 64
WINDOW_SIZE = 4096


def _round(value: int, to: int) -> int:
    return -(-value // to) * to


class Block:
    """Where everything is, for ``count`` cases on the host ``profile`` (at ``base`` once mapped)."""

    def __init__(self, count: int, profile: host.Profile | None = None, base: int = 0):
        self.profile = profile or host.current()
        self.mask = self.profile.xcr0 & XSAVE_COMPONENTS
        self.xsave_size = _round(self.profile.xsave_size(self.mask), 64)
        self.window = _round(HOST_XSAVE + self.xsave_size, 4096)
        self.slots = self.window + WINDOW_SIZE
        self.slot_size = _round(IN_XSAVE + 2 * self.xsave_size, 64)
        self.count = count
        self.size = _round(self.slots + count * self.slot_size, 4096)
        self.base = base

    def slot(self, index: int) -> int:
        return self.base + self.slots + index * self.slot_size

    def in_xsave(self, index: int) -> int:
        return self.slot(index) + IN_XSAVE

    def out_xsave(self, index: int) -> int:
        return self.slot(index) + IN_XSAVE + self.xsave_size

    def stack(self, index: int) -> int:
        return self.slot(index) + STACK

    def stack_top(self, index: int) -> int:
        """The ``rsp`` a case starts with: the middle of its scratch stack (push and pop both fit)."""
        return self.stack(index) + STACK_SIZE // 2

    # -- a slot's bytes -------------------------------------------------------------------------
    def slot_bytes(self, index: int, state: dict[str, int]) -> bytes:
        """Slot ``index`` as it must be before the case runs (its "out" areas zero)."""
        data = bytearray(self.slot_size)
        words = [state["rflags"], *(state[name] for name in POP_ORDER), state["rsp"]]
        for i, word in enumerate(words):
            data[IN_GPR + 8 * i:IN_GPR + 8 * i + 8] = (word & (2**64 - 1)).to_bytes(8, "little")
        data[STACK:STACK + STACK_SIZE] = state["stack"].to_bytes(STACK_SIZE, "little")
        data[IN_XSAVE:IN_XSAVE + self.xsave_size] = self.xsave_image(state)
        return bytes(data)

    def result(self, slot: bytes) -> dict[str, int]:
        """The state a case's slot (its bytes after the run) holds in its "out" areas."""
        state = {}
        for i, name in enumerate(POP_ORDER):
            state[name] = int.from_bytes(slot[OUT_GPR + 8 * i:OUT_GPR + 8 * i + 8], "little")
        state["rflags"] = int.from_bytes(slot[OUT_GPR + 120:OUT_GPR + 128], "little")
        state["rsp"] = int.from_bytes(slot[OUT_RSP:OUT_RSP + 8], "little")
        state["stack"] = int.from_bytes(slot[STACK:STACK + STACK_SIZE], "little")
        out = IN_XSAVE + self.xsave_size
        state.update(self.read_xsave(slot[out:out + self.xsave_size]))
        return state

    # -- XSAVE standard format (offsets from CPUID leaf 0xD, by way of regmap.x86.host) ----------
    def vector_names(self) -> list[str]:
        return [f"zmm{i}" for i in range(self.profile.vector_count)]

    def opmask_names(self) -> list[str]:
        return [f"k{i}" for i in range(8)] if self.mask >> host.OPMASK & 1 else []

    def xsave_image(self, state: dict[str, int]) -> bytes:
        image = bytearray(self.xsave_size)

        def put(offset: int, size: int, value: int) -> None:
            image[offset:offset + size] = (value & ((1 << 8 * size) - 1)).to_bytes(size, "little")

        put(0, 2, state["fcw"])
        put(2, 2, state["fsw"])
        put(4, 1, state["ftw"])
        put(LEGACY_MXCSR, 4, state["mxcsr"])
        for i in range(8):
            put(LEGACY_ST + 16 * i, 10, state[f"st{i}"])
        components = self.profile.components
        for i, name in enumerate(self.vector_names()):
            value = state[name]
            if i < 16:
                put(LEGACY_XMM + 16 * i, 16, value)
                if host.AVX in components:
                    put(components[host.AVX][0] + 16 * i, 16, value >> 128)
                if host.ZMM_HI256 in components:
                    put(components[host.ZMM_HI256][0] + 32 * i, 32, value >> 256)
            else:
                put(components[host.HI16_ZMM][0] + 64 * (i - 16), 64, value)
        for i, name in enumerate(self.opmask_names()):
            put(components[host.OPMASK][0] + 8 * i, 8, state[name])
        put(XSTATE_BV, 8, self.mask)
        return bytes(image)

    def read_xsave(self, image: bytes) -> dict[str, int]:
        """The registers in an image XSAVE wrote (a component in its init state reads as zero)."""
        def get(offset: int, size: int) -> int:
            return int.from_bytes(image[offset:offset + size], "little")

        present = get(XSTATE_BV, 8)
        components = self.profile.components

        def component(number: int, offset: int, size: int) -> int:
            if not present >> number & 1 or number not in components:
                return 0
            return get(components[number][0] + offset, size)

        state = {"fcw": get(0, 2), "fsw": get(2, 2), "ftw": get(4, 1), "mxcsr": get(LEGACY_MXCSR, 4)}
        x87 = present & 1
        if not x87:           # the x87 init state: FCW 0x37F, the rest zero
            state.update(fcw=0x37F, fsw=0, ftw=0)
        for i in range(8):
            state[f"st{i}"] = get(LEGACY_ST + 16 * i, 10) if x87 else 0
        for i, name in enumerate(self.vector_names()):
            if i < 16:
                value = get(LEGACY_XMM + 16 * i, 16) if present >> host.SSE & 1 else 0
                value |= component(host.AVX, 16 * i, 16) << 128
                value |= component(host.ZMM_HI256, 32 * i, 32) << 256
            else:
                value = component(host.HI16_ZMM, 64 * (i - 16), 64)
            state[name] = value
        for i, name in enumerate(self.opmask_names()):
            state[name] = component(host.OPMASK, 8 * i, 8)
        return state


# -- the block in this process --------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_PROT_RW, _MAP_PRIVATE_ANONYMOUS, _MAP_32BIT = 3, 0x22, 0x40


def map_block(block: Block) -> None:
    """Map ``block`` below 2 GiB (MAP_32BIT: absolute 32-bit addresses reach it); sets its base."""
    base = _libc.mmap(None, block.size, _PROT_RW, _MAP_PRIVATE_ANONYMOUS | _MAP_32BIT, -1, 0)
    if base in (None, ctypes.c_void_p(-1).value):
        error = ctypes.get_errno()
        raise OSError(error, f"mmap of the self-test's block below 2 GiB: {os.strerror(error)}")
    if base + block.size > 0x8000_0000:
        _libc.munmap(base, block.size)
        raise OSError(f"the self-test's block landed at {base:#x}, not below 2 GiB")
    block.base = base


def unmap_block(block: Block) -> None:
    if block.base:
        _libc.munmap(block.base, block.size)
        block.base = 0
