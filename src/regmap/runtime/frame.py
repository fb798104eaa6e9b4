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

Vector and x87 state live in the XSAVE image the frame points at (standard,
non-compacted format, which the kernel uses for signal frames), each register
where this CPU's CPUID leaf 0xD puts it (`regmap.x86.xsave`; Intel and AMD
differ).  The image's features and size (fpx_sw_bytes) are checked against
that layout before any register is read from it.  A component whose
XSTATE_BV bit is clear is in its initial state and its bytes in the frame are
stale: reads give that state, and a write first sets it and the bit.
"""
from __future__ import annotations

import ctypes
import functools

from regmap import places
from regmap.errors import MemoryFault, RegisterNotWritable, RegmapError
from regmap.runtime import _sys
from regmap.runtime.sites import CODE_SITES, MEMORY, RETIRED_SITES, Site, new_site  # noqa: F401
from regmap.runtime.usercopy import UserCopy
from regmap.x86 import xsave
from regmap.x86.host import AVX, SSE, ZMM_HI256

# word indices into the frame
W_STACK_SP, W_STACK_FLAGS, W_STACK_SIZE = 2, 3, 4
GREGS = 5
GREG_INDEX = {name: GREGS + i for i, name in enumerate(places.GREGS_ORDER)}
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
XSTATE_BV = xsave.XSTATE_BV
LEGACY_XMM = xsave.LEGACY_XMM
X87_CONTROL = xsave.X87_CONTROL
MASK64, MASK128, MASK256 = (1 << 64) - 1, (1 << 128) - 1, (1 << 256) - 1
XstateLayoutError = xsave.XstateLayoutError


def _u64(address: int) -> int:
    return ctypes.c_uint64.from_address(address).value


class Xsave:
    """The FXSAVE/XSAVE image one frame points at, and the layout it is read with."""

    __slots__ = ("base", "xsave", "xfeatures", "size", "words", "view", "layout", "avx_word", "hi256")

    def __init__(self, base: int, layout: xsave.Layout | None = None):
        self.base = base
        self.layout = layout = layout or xsave.layout()
        self.xsave = ctypes.c_uint32.from_address(base + SW_MAGIC1).value == FP_XSTATE_MAGIC1
        if self.xsave:
            self.xfeatures = _u64(base + SW_XFEATURES)
            self.size = ctypes.c_uint32.from_address(base + SW_XSTATE_SIZE).value
            layout.check(self.xfeatures, self.size, "the signal frame's XSAVE image")
        else:           # a kernel that saves with FXSAVE: the legacy area alone
            self.xfeatures, self.size = 0b11, 512
        # The image as 64-bit words (a register read is a few plain field reads) and as bytes.
        self.words = (ctypes.c_uint64 * (max(self.size, 512 + 64 if self.xsave else 512) // 8)
                      ).from_address(base)
        self.view = memoryview(self.words).cast("B")
        components = layout.components
        self.avx_word = components[AVX][0] // 8 if self.xfeatures >> AVX & 1 else None
        self.hi256 = components[ZMM_HI256][0] if self.xfeatures >> ZMM_HI256 & 1 else None

    def same_header(self) -> bool:
        """The image at `base` still has the header this object was made from."""
        words = self.words
        if (words[SW_MAGIC1 // 8] & 0xFFFF_FFFF == FP_XSTATE_MAGIC1) != self.xsave:
            return False
        return not self.xsave or (words[SW_XFEATURES // 8] == self.xfeatures
                                  and words[SW_XSTATE_SIZE // 8] & 0xFFFF_FFFF == self.size)

    def bv(self) -> int:
        return self.words[XSTATE_BV // 8] if self.xsave else 0b11

    def read(self, name: str) -> int:
        return self.layout.read(self.view, name, self.xfeatures, self.bv())

    def write(self, name: str, value: int) -> None:
        self.layout.write(self.view, name, value, self.xfeatures, header=self.xsave)


XSAVES: dict[int, Xsave] = {}     # image address -> its Xsave (see Frame.xsave)
MAX_XSAVES = 256

_GREG_NAMES = places.GREGS_ORDER         # uc_mcontext.gregs, word by word


class Frame(ctypes.Structure):
    """The signal frame as named fields: ``frame.rax``, ``frame.si_code``...

    The general registers are plain fields, so ``getattr(frame, "rax")`` never
    runs Python code; every other basis register is a property below
    (`_install_vector_properties`), reached the same way.
    """
    _fields_ = ([("uc_flags", ctypes.c_uint64), ("uc_link", ctypes.c_uint64),
                 ("ss_sp", ctypes.c_uint64), ("ss_flags", ctypes.c_int32), ("_pad0", ctypes.c_int32),
                 ("ss_size", ctypes.c_uint64)]
                + [(name, ctypes.c_uint64) for name in _GREG_NAMES]
                + [("csgsfs", ctypes.c_uint64), ("err", ctypes.c_uint64), ("trapno", ctypes.c_uint64),
                   ("oldmask", ctypes.c_uint64), ("cr2", ctypes.c_uint64), ("fpregs", ctypes.c_uint64),
                   ("_reserved1", ctypes.c_uint64 * 8), ("sigmask", ctypes.c_uint64),
                   # siginfo, right after the ucontext in the kernel's frame
                   ("si_signo", ctypes.c_int32), ("si_errno", ctypes.c_int32),
                   ("si_code", ctypes.c_int32), ("_pad1", ctypes.c_int32), ("si_addr", ctypes.c_uint64),
                   ("_si_rest", ctypes.c_uint64 * 13)])

    # -- registers outside gregs ------------------------------------------------------------
    def xsave(self) -> "Xsave":
        """The frame's XSAVE image.  Kept on the frame while its address stays the same: a
        thread faulting in a loop reuses one frame, and the kernel puts the image at the same
        place each time, with the same header (the features and size are the kernel's; only
        XSTATE_BV changes, and it is read afresh on every access)."""
        xs = self.__dict__.get("xs")
        if xs is not None and xs.base == self.fpregs:
            return xs
        return self._new_xsave()

    def _new_xsave(self) -> "Xsave":
        base = self.fpregs
        if not base:
            raise RegmapError("the signal frame holds no FPU/SSE state")
        xs = XSAVES.get(base)
        if xs is None or not xs.same_header():
            if len(XSAVES) >= MAX_XSAVES:
                XSAVES.clear()
            xs = XSAVES[base] = Xsave(base)
        self.__dict__["xs"] = xs
        return xs

    def read_xstate(self, name: str) -> int:
        return self.xsave().read(name)

    def write_xstate(self, name: str, value: int) -> None:
        self.xsave().write(name, value)

    def read_selector(self, name: str) -> int:
        if name == "ss" and not self.uc_flags & UC_SIGCONTEXT_SS:
            return 0x2B  # __USER_DS: what ss holds in a 64-bit process
        return self.csgsfs >> SELECTOR_SHIFT[name] & 0xFFFF

    @property
    def fs_base(self) -> int:
        return _sys.arch_prctl_get(_sys.ARCH_GET_FS)

    @fs_base.setter
    def fs_base(self, value: int) -> None:
        _sys.arch_prctl_set(_sys.ARCH_SET_FS, value)

    @property
    def gs_base(self) -> int:
        return _sys.arch_prctl_get(_sys.ARCH_GET_GS)

    @gs_base.setter
    def gs_base(self, value: int) -> None:
        _sys.arch_prctl_set(_sys.ARCH_SET_GS, value)



def _read_only(name: str):
    def refuse(self, value):
        raise RegisterNotWritable(f"the in-process runtime cannot set {name} from a signal handler")
    return refuse


def _low_zmm(n: int) -> property:
    """zmm0-15 as one property each, the legacy part's word index resolved: the fast paths'
    vector access (the other parts' places are the image's layout's)."""
    sse_at, bv_at, sse, avx, hi256 = (LEGACY_XMM + 16 * n) // 8, XSTATE_BV // 8, 1 << SSE, 1 << AVX, 1 << ZMM_HI256
    name = f"zmm{n}"

    def get(frame) -> int:
        xs = frame.__dict__.get("xs")
        if xs is None or xs.base != frame.fpregs:
            xs = frame._new_xsave()
        words = xs.words
        if not xs.xsave:
            return words[sse_at] | words[sse_at + 1] << 64
        bv = words[bv_at] & xs.xfeatures
        value = words[sse_at] | words[sse_at + 1] << 64 if bv & sse else 0
        if bv & avx:
            at = xs.avx_word + 2 * n
            value |= (words[at] | words[at + 1] << 64) << 128
        if bv & hi256:
            at = xs.hi256 + 32 * n
            value |= int.from_bytes(xs.view[at:at + 32], "little") << 256
        return value

    def set(frame, value: int) -> None:
        xs = frame.__dict__.get("xs")
        if xs is None or xs.base != frame.fpregs:
            xs = frame._new_xsave()
        words = xs.words
        low, high, top = value & MASK128, value >> 128 & MASK128, value >> 256
        if not xs.xsave:                          # FXSAVE: the legacy area alone
            words[sse_at], words[sse_at + 1] = low & MASK64, low >> 64
            return
        bv = words[bv_at]
        if ((low and not bv & sse) or (high and not bv & avx)
                or (top and xs.hi256 is not None and not bv & hi256)):
            return xs.write(name, value)          # a component leaves its initial state
        # the common case: plain stores into the live parts (a part in its initial state that
        # stays zero is left alone: the ymm upper halves after vzeroupper, say)
        if bv & sse:
            words[sse_at], words[sse_at + 1] = low & MASK64, low >> 64
        if bv & avx:
            at = xs.avx_word + 2 * n
            words[at], words[at + 1] = high & MASK64, high >> 64
        if xs.hi256 is not None and bv & hi256:
            xs.view[xs.hi256 + 32 * n:xs.hi256 + 32 * n + 32] = (top & MASK256).to_bytes(32, "little")

    return property(get, set)


def _install_properties() -> None:
    def prop(name):
        return property(lambda self: self.read_xstate(name), lambda self, v: self.write_xstate(name, v))
    for n in range(16):
        setattr(Frame, f"zmm{n}", _low_zmm(n))
    for n in range(16, 32):
        setattr(Frame, f"zmm{n}", prop(f"zmm{n}"))
    for name in [f"k{n}" for n in range(8)] + [f"st{n}" for n in range(8)] + list(X87_CONTROL) + ["mxcsr"]:
        setattr(Frame, name, prop(name))
    for name in SELECTOR_SHIFT:
        setattr(Frame, name, property(lambda self, name=name: self.read_selector(name), _read_only(name)))
    # A 64-bit Linux process runs with null ds and es; the frame does not hold them.
    Frame.ds = Frame.es = property(lambda self: 0, _read_only("ds/es"))


_install_properties()
assert Frame.rax.offset == 40 + 13 * 8 and Frame.fpregs.offset == 224
assert Frame.sigmask.offset == 296 and Frame.si_code.offset == SIGINFO_OFFSET + 8


class SplitFrame(Frame):
    """A frame whose siginfo is not right after the ucontext (not seen on Linux so far)."""

    @property
    def si_code(self) -> int:
        return ctypes.c_int32.from_address(self.__dict__["info"] + 8).value


class FrameMachine:
    """The `Machine` of the thread whose signal frame is at `ctx`.

    Created once per frame address and re-used for every fault that lands a
    frame there.  `read_register`/`write_register` are ``getattr``/``setattr``
    on the `Frame` bound with functools.partial: no Python frame is created
    for a general register.
    """

    __slots__ = ("ctx", "info", "frame", "namespace", "read_register", "write_register",
                 "fetch_direct", "window", "site", "copy", "original")

    def __init__(self, ctx: int, info: int, window: int = 4096):
        self.ctx = ctx
        self.info = info
        if info == ctx + SIGINFO_OFFSET:
            self.frame = Frame.from_address(ctx)
        else:
            self.frame = SplitFrame.from_address(ctx)
            self.frame.__dict__["info"] = info
        self.namespace = self.frame  # every basis register is an attribute of the frame
        self.read_register = functools.partial(getattr, self.frame)
        self.write_register = functools.partial(setattr, self.frame)
        self.fetch_direct = False
        self.window = window
        self.site = None
        self.copy = UserCopy()
        # the copy of a patched site's instruction in its stub (`regmap.x86.stub.Copy`), while
        # the copy's fault is emulated at the site, from the site's own bytes; None otherwise
        self.original = None

    @property
    def words(self):
        """The frame as 64-bit words (for tests and diagnostics)."""
        return WORDS.from_address(self.ctx)

    def si_code(self) -> int:
        return self.frame.si_code

    def siginfo(self) -> bytes:
        return ctypes.string_at(self.info, 128)

    # -- memory ---------------------------------------------------------------------------------
    def read_memory(self, address: int, size: int) -> bytes:
        """Loaded by the CPU (`usercopy`); if that faults, through `vm_transfer`, which also
        finds where the readable bytes end; if that fails too, a `MemoryFault` carrying what
        the CPU raised."""
        data = self.copy.read(address, size)
        if data is not None:
            return data
        buffer = ctypes.create_string_buffer(size)
        done = _sys.vm_transfer(address, buffer, size, write=False)
        if done < size:
            raise MemoryFault(address + done, False, self.copy.fault())
        return buffer.raw

    def write_memory(self, address: int, data: bytes) -> None:
        if self.copy.write(address, data):
            return
        size = len(data)
        buffer = ctypes.create_string_buffer(bytes(data), size)
        done = _sys.vm_transfer(address, buffer, size, write=True)
        if done < size:
            raise MemoryFault(address + done, True, self.copy.fault())

    def fetch(self, address: int) -> bytes:
        """Up to 15 bytes at `address`, fewer before an unreadable page; never a fault.

        For the faulting instruction itself (`fetch_direct`, set when the fault
        was a data access, so the CPU has just fetched these bytes), the bytes
        on rip's page are read directly (`Site.direct` of them); only
        an instruction that may run into the next page pays for a syscall.
        """
        if self.fetch_direct and address == self.frame.rip:
            site = CODE_SITES.get(address)
            if site is None:
                site = new_site(address)
            self.site = site
            if self.original is not None:
                return self.original.old
            direct = MEMORY[address:address + site.direct]
            if site.tail:
                return direct + read_partial(address + site.direct, 15 - site.direct)
            return direct
        return read_partial(address, 15)


def read_partial(address: int, size: int) -> bytes:
    """As many of the `size` code bytes at `address` as are mapped (possibly none)."""
    if address < 4096:
        return b""
    return _sys.read_code(address, size)
