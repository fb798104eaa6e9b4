"""`FrameMachine`: the `Machine` of a thread interrupted by a fault, over its signal frame.

The kernel's x86-64 signal frame, as a handler's third argument sees it::

    ctx +   0  uc_flags, uc_link
    ctx +  16  uc_stack (ss_sp, ss_flags, ss_size): the thread's alternate stack
    ctx +  40  gregs: r8..r15 rdi rsi rbp rbx rdx rax rcx rsp rip eflags csgsfs
               err trapno oldmask cr2
    ctx + 224  fpregs: pointer to the FXSAVE/XSAVE image
    ctx + 296  uc_sigmask (8 bytes: the mask restored by sigreturn)
    ctx + 304  siginfo (the kernel places it right after the ucontext)

All of it is one ctypes array of 64-bit words (`WORDS`), created once per frame
address and reused: a thread faulting in a loop lands its frame at the same
address every time, so the hot path allocates no ctypes objects.

Vector state lives in the XSAVE image (standard, non-compacted format, which
the kernel uses for signal frames): xmm0-15 and mxcsr in the legacy FXSAVE
area, the upper halves of ymm0-15 in component 2, opmask k0-7 in component 5,
the upper halves of zmm0-15 in component 6 and zmm16-31 in component 7.  A
component whose XSTATE_BV bit is clear is in its initial state (all zeros)
and its bytes in the frame are stale: reads give zeros, and a write first
zeroes the component and sets its bit.
"""
from __future__ import annotations

import ctypes

from regmap.errors import MemoryFault, RegmapError
from regmap.runtime import _sys

# word indices into the frame
W_STACK_SP, W_STACK_FLAGS, W_STACK_SIZE = 2, 3, 4
GREGS = 5
GREG_INDEX = {name: GREGS + i for i, name in enumerate(
    ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi", "rbp", "rbx", "rdx",
     "rax", "rcx", "rsp", "rip", "rflags"))}
W_RIP, W_RFLAGS = GREG_INDEX["rip"], GREG_INDEX["rflags"]
W_CSGSFS = GREGS + 18
W_ERR, W_TRAPNO, W_CR2 = GREGS + 19, GREGS + 20, GREGS + 22
W_FPREGS = GREGS + 23
W_SIGMASK = 37
SIGINFO_OFFSET = 304           # bytes from the ucontext to the siginfo in the kernel's frame
W_SI_CODE = SIGINFO_OFFSET // 8 + 1
W_SI_ADDR = SIGINFO_OFFSET // 8 + 2
FRAME_WORDS = SIGINFO_OFFSET // 8 + 16
WORDS = ctypes.c_uint64 * FRAME_WORDS

UC_SIGCONTEXT_SS = 0x2
TRAP_PF = 14                   # page fault
PF_INSTR = 0x10                # page-fault error code: the access was an instruction fetch

SELECTOR_SHIFT = {"cs": 0, "gs": 16, "fs": 32, "ss": 48}

# -- the XSAVE image ---------------------------------------------------------------------
FP_XSTATE_MAGIC1 = 0x46505853
SW_MAGIC1, SW_XFEATURES, SW_XSTATE_SIZE = 464, 472, 480
XSTATE_BV = 512
X87, SSE, AVX, OPMASK, ZMM_HI256, HI16_ZMM = 0, 1, 2, 5, 6, 7
# Standard-format offset and size of each component (CPUID.(EAX=0DH,ECX=i)).  These are the
# values every Intel CPU with the component reports; the frame's own total size is checked
# against them before the AVX-512 components are trusted (`Xsave.trusted`).
COMPONENTS = {AVX: (576, 256), 3: (960, 64), 4: (1024, 64), OPMASK: (1088, 64),
              ZMM_HI256: (1152, 512), HI16_ZMM: (1664, 1024), 9: (2688, 8)}
LEGACY_XMM, LEGACY_ST, LEGACY_MXCSR = 160, 32, 24


class XstateLayoutError(RegmapError):
    """The signal frame's XSAVE image is not laid out as regmap expects."""


def _u64(address: int) -> int:
    return ctypes.c_uint64.from_address(address).value


def _set_u64(address: int, value: int) -> None:
    ctypes.c_uint64.from_address(address).value = value


def _read_int(address: int, size: int) -> int:
    return int.from_bytes((ctypes.c_char * size).from_address(address).raw, "little")


def _write_int(address: int, size: int, value: int) -> None:
    ctypes.memmove(address, value.to_bytes(size, "little"), size)


class Xsave:
    """The FXSAVE/XSAVE image one frame points at."""

    __slots__ = ("base", "xsave", "xfeatures", "size", "trusted")
    _checked: dict[tuple[int, int], bool] = {}

    def __init__(self, base: int):
        self.base = base
        self.xsave = ctypes.c_uint32.from_address(base + SW_MAGIC1).value == FP_XSTATE_MAGIC1
        if self.xsave:
            self.xfeatures = _u64(base + SW_XFEATURES)
            self.size = ctypes.c_uint32.from_address(base + SW_XSTATE_SIZE).value
        else:
            self.xfeatures, self.size = 0b11, 512
        self.trusted = self._layout_matches(self.xfeatures, self.size)

    @classmethod
    def _layout_matches(cls, xfeatures: int, size: int) -> bool:
        """Whether the standard offsets account for the frame's XSAVE size exactly."""
        key = (xfeatures, size)
        known = cls._checked.get(key)
        if known is None:
            end = 512 + 64 if xfeatures & ~0b11 else 512
            for bit, (offset, length) in COMPONENTS.items():
                if xfeatures >> bit & 1:
                    end = max(end, offset + length)
            # Components regmap does not know (AMX, ...) come after the ones it does.
            unknown = xfeatures & ~(0b11 | sum(1 << bit for bit in COMPONENTS))
            known = cls._checked[key] = end == size or (unknown != 0 and end <= size)
        return known

    def has(self, component: int) -> bool:
        return bool(self.xfeatures >> component & 1)

    def _bv(self) -> int:
        return _u64(self.base + XSTATE_BV) if self.xsave else 0b11

    def live(self, component: int) -> bool:
        """The component holds state (its XSTATE_BV bit is set); otherwise it reads as zeros."""
        return bool(self._bv() >> component & 1)

    def offset(self, component: int) -> int:
        if component > AVX and not self.trusted:
            raise XstateLayoutError(
                f"the signal frame's XSAVE image ({self.size} bytes, features {self.xfeatures:#x}) "
                f"is not in the layout regmap knows; component {component} is not accessible")
        return COMPONENTS[component][0]

    def make_live(self, component: int) -> None:
        """Set the component's XSTATE_BV bit, zeroing it first if it was in its initial state."""
        if not self.xsave:
            return
        bv = self._bv()
        if bv >> component & 1:
            return
        if component == SSE:
            ctypes.memset(self.base + LEGACY_XMM, 0, 16 * 16)
        elif component == X87:
            ctypes.memset(self.base, 0, 24)
            ctypes.memset(self.base + LEGACY_ST, 0, 8 * 16)
            ctypes.c_uint16.from_address(self.base).value = 0x037F  # FCW after FNINIT
        else:
            offset, length = COMPONENTS[component]
            ctypes.memset(self.base + self.offset(component), 0, length)
        _set_u64(self.base + XSTATE_BV, bv | 1 << component)


class FrameMachine:
    """The `Machine` of the thread whose signal frame is at `ctx`.

    Created once per frame address and re-used for every fault that lands a
    frame there (`begin` re-arms it for one fault).
    """

    __slots__ = ("ctx", "info", "words", "fetch_direct", "window", "site")

    def __init__(self, ctx: int, info: int, window: int = 4096):
        self.ctx = ctx
        self.info = info
        self.words = WORDS.from_address(ctx)
        self.fetch_direct = False
        self.window = window
        self.site = None

    # -- what the kernel says about this signal ---------------------------------------------
    def si_code(self) -> int:
        if self.info == self.ctx + SIGINFO_OFFSET:
            code = self.words[W_SI_CODE] & 0xFFFFFFFF
        else:
            code = ctypes.c_uint32.from_address(self.info + 8).value
        return code - (1 << 32) if code >> 31 else code

    def siginfo(self) -> bytes:
        return ctypes.string_at(self.info, 128)

    # -- registers ----------------------------------------------------------------------------
    def read_register(self, basis: str) -> int:
        index = GREG_INDEX.get(basis)
        if index is not None:
            return self.words[index]
        return self._read_other(basis)

    def write_register(self, basis: str, value: int) -> None:
        index = GREG_INDEX.get(basis)
        if index is not None:
            self.words[index] = value
        else:
            self._write_other(basis, value)

    def _xsave(self) -> Xsave:
        base = self.words[W_FPREGS]
        if not base:
            raise RegmapError("the signal frame holds no FPU/SSE state")
        return Xsave(base)

    def _read_other(self, basis: str) -> int:
        if basis.startswith("zmm"):
            return self._read_zmm(int(basis[3:]))
        if basis.startswith("k") and basis[1:].isdigit():
            xs = self._xsave()
            if not (xs.has(OPMASK) and xs.live(OPMASK)):
                return 0
            return _u64(xs.base + xs.offset(OPMASK) + 8 * int(basis[1:]))
        if basis == "mxcsr":
            return ctypes.c_uint32.from_address(self._xsave().base + LEGACY_MXCSR).value
        if basis in SELECTOR_SHIFT:
            if basis == "ss" and not self.words[0] & UC_SIGCONTEXT_SS:
                return 0x2B  # __USER_DS, what ss holds in a 64-bit process
            return self.words[W_CSGSFS] >> SELECTOR_SHIFT[basis] & 0xFFFF
        if basis in ("ds", "es"):
            return 0  # a 64-bit Linux process runs with null ds and es
        if basis == "fs_base":
            return _sys.arch_prctl_get(_sys.ARCH_GET_FS)
        if basis == "gs_base":
            return _sys.arch_prctl_get(_sys.ARCH_GET_GS)
        if basis.startswith(("st", "mm")):
            return self._read_x87(basis)
        raise RegmapError(f"the in-process runtime has no register {basis!r}")

    def _write_other(self, basis: str, value: int) -> None:
        if basis.startswith("zmm"):
            self._write_zmm(int(basis[3:]), value)
        elif basis.startswith("k") and basis[1:].isdigit():
            xs = self._xsave()
            if not xs.has(OPMASK):
                return  # no AVX-512: the bits the CPU lacks stay zero
            if value or xs.live(OPMASK):
                xs.make_live(OPMASK)
                _set_u64(xs.base + xs.offset(OPMASK) + 8 * int(basis[1:]), value)
        elif basis == "mxcsr":
            ctypes.c_uint32.from_address(self._xsave().base + LEGACY_MXCSR).value = value
        elif basis == "fs_base":
            _sys.arch_prctl_set(_sys.ARCH_SET_FS, value)
        elif basis == "gs_base":
            _sys.arch_prctl_set(_sys.ARCH_SET_GS, value)
        elif basis.startswith(("st", "mm")):
            self._write_x87(basis, value)
        else:
            raise RegmapError(f"the in-process runtime cannot set {basis!r} from a signal handler")

    def _read_zmm(self, n: int) -> int:
        xs = self._xsave()
        base = xs.base
        if n >= 16:
            if not (xs.has(HI16_ZMM) and xs.live(HI16_ZMM)):
                return 0
            return _read_int(base + xs.offset(HI16_ZMM) + 64 * (n - 16), 64)
        value = _read_int(base + LEGACY_XMM + 16 * n, 16) if xs.live(SSE) else 0
        if xs.has(AVX) and xs.live(AVX):
            value |= _read_int(base + COMPONENTS[AVX][0] + 16 * n, 16) << 128
        if xs.has(ZMM_HI256) and xs.live(ZMM_HI256):
            value |= _read_int(base + xs.offset(ZMM_HI256) + 32 * n, 32) << 256
        return value

    def _write_zmm(self, n: int, value: int) -> None:
        xs = self._xsave()
        base = xs.base
        if n >= 16:
            if xs.has(HI16_ZMM) and (value or xs.live(HI16_ZMM)):
                xs.make_live(HI16_ZMM)
                _write_int(base + xs.offset(HI16_ZMM) + 64 * (n - 16), 64, value)
            return
        low, ymm_high, zmm_high = value & (1 << 128) - 1, value >> 128 & (1 << 128) - 1, value >> 256
        if low or xs.live(SSE):
            xs.make_live(SSE)
            _write_int(base + LEGACY_XMM + 16 * n, 16, low)
        if xs.has(AVX) and (ymm_high or xs.live(AVX)):
            xs.make_live(AVX)
            _write_int(base + COMPONENTS[AVX][0] + 16 * n, 16, ymm_high)
        if xs.has(ZMM_HI256) and (zmm_high or xs.live(ZMM_HI256)):
            xs.make_live(ZMM_HI256)
            _write_int(base + xs.offset(ZMM_HI256) + 32 * n, 32, zmm_high)

    @staticmethod
    def _x87_slot(basis: str) -> tuple[int, int]:
        """(byte offset within the 16-byte ST slot, register index) of an x87 basis register."""
        if basis.startswith("st") and basis.endswith("_se"):
            return 8, int(basis[2:-3])
        if basis.startswith("mm") and "_w" in basis:
            index, word = basis[2:].split("_w")
            return 2 * int(word), int(index)
        raise RegmapError(f"the in-process runtime has no register {basis!r}")

    def _read_x87(self, basis: str) -> int:
        offset, index = self._x87_slot(basis)
        xs = self._xsave()
        if not xs.live(X87):
            return 0
        return ctypes.c_uint16.from_address(xs.base + LEGACY_ST + 16 * index + offset).value

    def _write_x87(self, basis: str, value: int) -> None:
        offset, index = self._x87_slot(basis)
        xs = self._xsave()
        xs.make_live(X87)
        ctypes.c_uint16.from_address(xs.base + LEGACY_ST + 16 * index + offset).value = value

    # -- memory ---------------------------------------------------------------------------------
    def read_memory(self, address: int, size: int) -> bytes:
        buffer = ctypes.create_string_buffer(size)
        done = _sys.vm_transfer(address, buffer, size, write=False)
        if done < size:
            raise MemoryFault(address + done, False)
        return buffer.raw

    def write_memory(self, address: int, data: bytes) -> None:
        size = len(data)
        buffer = ctypes.create_string_buffer(bytes(data), size)
        done = _sys.vm_transfer(address, buffer, size, write=True)
        if done < size:
            raise MemoryFault(address + done, True)

    def fetch(self, address: int) -> bytes:
        """Up to 15 bytes at `address`, fewer before an unreadable page; never a fault.

        For the faulting instruction itself (`fetch_direct`, set when the fault
        was a data access, so the CPU has just fetched these bytes), the bytes
        on rip's page are read directly through a per-site cached view; only
        an instruction that may run into the next page pays for a syscall.
        """
        if self.fetch_direct and address == self.words[W_RIP]:
            site = CODE_SITES.get(address)
            if site is None:
                site = new_site(address)
            self.site = site
            if site.tail:
                return site.view.raw + read_partial(address + site.direct, 15 - site.direct)
            return site.view.raw
        return read_partial(address, 15)


def read_partial(address: int, size: int) -> bytes:
    """As many of `size` bytes at `address` as are readable (possibly none)."""
    if address < 4096:
        return b""
    buffer = ctypes.create_string_buffer(size)
    done = _sys.vm_transfer(address, buffer, size, write=False)
    return buffer.raw[:done]


class Site:
    """One instruction address that faulted into the window: its code view and its counters.

    `view` covers the bytes from the instruction to the end of its page (at
    most 15).  `tail` is true while an instruction there may be longer than
    the view; once the emulator has decoded it (`length`), the view is enough.
    """

    __slots__ = ("address", "view", "direct", "tail", "count", "mnemonic", "length")

    def __init__(self, address: int):
        self.address = address
        self.direct = min(15, _sys.PAGE_SIZE - (address & (_sys.PAGE_SIZE - 1)))
        self.view = (ctypes.c_char * self.direct).from_address(address)
        self.tail = self.direct < 15
        self.count = 0
        self.mnemonic = None
        self.length = 0

    def decoded(self, length: int, mnemonic: str) -> None:
        self.length = length
        self.mnemonic = mnemonic
        if length <= self.direct:
            self.tail = False


CODE_SITES: dict[int, Site] = {}
MAX_SITES = 1 << 16


def new_site(address: int) -> Site:
    if len(CODE_SITES) >= MAX_SITES:
        retire_sites()
    site = CODE_SITES[address] = Site(address)
    return site


RETIRED: dict[str, int] = {}
RETIRED_SITES: dict[int, tuple[int, str | None]] = {}


def retire_sites() -> None:
    """Forget the code views (keeping the counts) when too many sites were seen."""
    for address, site in list(CODE_SITES.items()):
        count, mnemonic = RETIRED_SITES.get(address, (0, None))
        RETIRED_SITES[address] = (count + site.count, site.mnemonic or mnemonic)
    CODE_SITES.clear()
