"""The engine's low region: a shadow page, a state block, a scratch stack and generated code.

One private mapping, placed low so every save and restore in the stub can
use ``[disp32]`` absolute addressing with no register, and so a window operand
moves onto the shadow page by a 32-bit displacement:

==============  =========================================================
offset          contents
==============  =========================================================
0x00000-0x00fff guard page (no access)
0x01000-0x01fff shadow page: the 4096-byte window image
0x02000-0x02fff guard page
0x03000-0x03fff state block: GPRs, rflags, mxcsr, rsp and signals of the
                run, zmm0-zmm31, k0-k7, host slots, fault record, signal
                plumbing, FXSAVE area
0x04000-0x04fff guard page
0x05000-0x08fff scratch stack (``stack_top`` leaves room for a signal frame)
0x09000-0x09fff guard page
0x0a000-0x0bfff code: prologue, epilogue, fault handler, restore, the
                instruction slot (`stub` lays them out from their lengths)
0x0c000-0x13fff alternate signal stack for the fault handler
==============  =========================================================

The guard pages turn an access that strays from the shadow page or the stack
into a fault instead of a corrupted state block.  The code is never writable
and executable at once (W^X): the code pages are made read + write for the
moment the instruction slot changes, which a loop at one site never does.  (A
memfd mapped twice, one view writable, would save the two mprotect calls, but
a process that forks, from C as well, would share the writable view with its
child, and each would rewrite the other's instruction slot.)  Nothing is mapped until
the engine is first used (`ensure`); a start that fails unmaps everything and
the error is kept, so every later use reports it at once.  The code is in
`stub`; one call of it blocks the asynchronous signals, routes the
synchronous faults to its handler, runs the instruction and puts everything
back, all in machine code.
"""
from __future__ import annotations

import ctypes
import os
import signal
import struct
import threading

from regmap import places
from regmap.x86 import host

GPRS = places.ENGINE_ORDER          # the state block's general registers, slot by slot

REGION_SIZE = 0x14000
_CANDIDATE_BASES = tuple(range(0x10000, 0x100000, 0x20000))
GUARD_OFFS = (0x0000, 0x2000, 0x4000, 0x9000)
SHADOW_OFF = SHADOW_SIZE = 0x1000
BLOCK_OFF = 0x3000
STACK_OFF, STACK_SIZE = 0x5000, 0x4000
STACK_TOP_OFF = 0x3000           # in the stack: 12 KiB below for pushes and signal frames, 4 KiB above
CODE_OFF, CODE_SIZE = 0xA000, 0x2000
ALTSTACK_OFF, ALTSTACK_SIZE = 0xC000, 0x8000
PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4

# state block fields (offsets inside the block): what a run loads and saves first, contiguous (a
# plan's `Transfer` moves its part with one struct call), then the stub's own slots
B_GPR = 0x000          # 16 x 8
B_RFLAGS = 0x080
B_MXCSR = 0x088        # 4 bytes
B_RSP = 0x090          # the rsp the instruction runs with (the GPR slot receives rsp after it)
B_SIGNALS = 0x098      # bit n set: the stub routes fault signal n to its handler for this run;
                       # bit 0 (HOST_STACK): the instruction runs on the host's stack, not at B_RSP
B_ZMM = 0x0A0          # 32 x 64
B_K = 0x8A0            # 8 x 8
B_HOST = 0x900         # rbx rbp r12 r13 r14 r15 rsp
B_HOST_MXCSR = 0x938
B_HOST_FCW = 0x940
B_OWNER = 0x948        # fs:[0] of the thread running the stub
B_ALTSET = 0x950       # 0 when the stub installed its alternate stack (to put the old one back)
B_HOST_RFLAGS = 0x958  # the caller's rflags, less DF and AC: what `restore` puts back
B_FAULT = 0x980        # flag, signo, si_code, si_addr, rip
B_OLDACT = 0xA00       # 12 x 32: the kernel sigaction each fault signal had, by signal number
B_ACTION = 0xB80       # the stub's kernel sigaction: handler, flags, restorer, mask
B_MASK = 0xBA0         # the signal mask while the stub runs
B_OLDMASK = 0xBA8
B_ALTSTACK = 0xBB0     # stack_t of the stub's alternate stack
B_OLDALT = 0xBC8
B_FX = 0xC00           # 512-byte FXSAVE area (16-byte aligned)

FAULT_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP)
ALL_FAULT_SIGNALS = sum(1 << sig for sig in FAULT_SIGNALS)      # a B_SIGNALS value
HOST_STACK = 1                                                  # B_SIGNALS bit 0 (no signal 0)
SA_SIGINFO, SA_ONSTACK, SA_RESTORER, SA_NODEFER = 0x4, 0x08000000, 0x04000000, 0x40000000

# rflags bits the stub loads: CF PF AF ZF SF DF OF and AC (an unaligned access then raises #AC);
# TF would single-step the stub
LOADED_RFLAGS = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800 | 0x40000
RFLAGS_FIXED = 0x2
# What `restore` clears of the caller's rflags: the ABI's DF and AC.  The rest (ID and NT above
# all) goes back as it was: in a signal handler, sigreturn takes ID and NT from the live rflags,
# not from the frame (the kernel's FIX_EFLAGS), so a stub leaving 0x2 cleared the thread's ID.
HOST_RFLAGS_CLEARED = 0x400 | 0x40000


class _TimeVal(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("usec", ctypes.c_long)]


class _ITimerVal(ctypes.Structure):
    _fields_ = [("interval", _TimeVal), ("value", _TimeVal)]


class SigAction(ctypes.Structure):        # glibc's struct sigaction
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16), ("flags", ctypes.c_int),
                ("restorer", ctypes.c_void_p)]


_libc = None


def _load_libc():
    """The C library, its prototypes set (Linux only: the region is never made elsewhere)."""
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long)
        libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        libc.setitimer.argtypes = (ctypes.c_int, ctypes.POINTER(_ITimerVal), ctypes.POINTER(_ITimerVal))
        libc.sigaction.argtypes = (ctypes.c_int, ctypes.POINTER(SigAction), ctypes.POINTER(SigAction))
        _libc = libc
    return _libc


def arm_watchdog(seconds: float) -> None:
    """Arm (or, with 0, disarm) the virtual-time timer that sends SIGVTALRM."""
    timer = _ITimerVal(_TimeVal(0, 0), _TimeVal(int(seconds), int(seconds % 1 * 1e6)))
    _load_libc().setitimer(1, ctypes.byref(timer), None)      # ITIMER_VIRTUAL


class Region:
    """The mapped region, its addresses and its stub."""

    def __init__(self, profile: host.Profile | None = None):
        from regmap.x86.native import stub
        _load_libc()
        self.profile = profile or host.current()
        self.base = _map()
        try:
            for guard in GUARD_OFFS:
                _protect(self.base + guard, 0x1000, PROT_NONE, "its guard pages")
            self.shadow = self.base + SHADOW_OFF
            self.block = self.base + BLOCK_OFF
            self.stack = self.base + STACK_OFF
            self.stack_top = self.stack + STACK_TOP_OFF
            self.code = self.base + CODE_OFF
            self.altstack = self.base + ALTSTACK_OFF
            entries = stub.install(self, self.profile)
        except BaseException:
            _libc.munmap(self.base, REGION_SIZE)
            raise
        self.insn = entries["insn"]
        self.epilogue = entries["epilogue"]
        self.handler = entries["handler"]
        # the block as bytes, for struct.pack_into / unpack_from in place
        self.view = memoryview((ctypes.c_char * 0x1000).from_address(self.block)).cast("B")
        self.shadow_view = memoryview((ctypes.c_char * SHADOW_SIZE).from_address(self.shadow)).cast("B")
        self._body = b""                    # what the instruction slot holds (`call` writes it)
        self.stub = ctypes.PYFUNCTYPE(None)(entries["prologue"])
        self._prepare_plumbing(entries)

    def write_code(self, offset: int, data: bytes) -> None:
        """Put ``data`` at ``offset`` in the code, never making it writable and executable at once."""
        _protect(self.code, CODE_SIZE, PROT_READ | PROT_WRITE, "its code")
        ctypes.memmove(self.code + offset, data, len(data))
        _protect(self.code, CODE_SIZE, PROT_READ | PROT_EXEC, "its code")

    def _prepare_plumbing(self, entries: dict[str, int]) -> None:
        v = self.view
        struct.pack_into("<QQQQ", v, B_ACTION, entries["handler"], SA_SIGINFO | SA_NODEFER | SA_RESTORER,
                         entries["restorer"], 0)
        # every asynchronous signal is blocked while the stub runs, SIGVTALRM too (a program's
        # ITIMER_VIRTUAL profiler would otherwise run its handler inside the stub); only a run
        # with a watchdog (tests) lets SIGVTALRM through, for that run (`unblock_watchdog`)
        mask = 0
        for sig in range(1, 65):
            if sig not in FAULT_SIGNALS + (signal.SIGKILL, signal.SIGSTOP):
                mask |= 1 << (sig - 1)
        self._mask = mask
        struct.pack_into("<Q", v, B_MASK, mask)
        struct.pack_into("<QiiQ", v, B_ALTSTACK, self.altstack, 0, 0, ALTSTACK_SIZE)

    def unblock_watchdog(self, unblocked: bool) -> None:
        """Let SIGVTALRM (the watchdog's) through the stub's signal mask, or block it again."""
        vtalrm = 1 << (signal.SIGVTALRM - 1)
        struct.pack_into("<Q", self.view, B_MASK, self._mask & ~vtalrm if unblocked else self._mask)

    def call(self, body: bytes, watchdog: float = 0.0) -> tuple[int, int, int, int] | None:
        """Run the stub with ``body`` (the instruction and its jump to the epilogue) in place.

        Returns None, or ``(signo, si_code, si_addr, rip)`` of the fault that stopped it.
        ``watchdog`` (seconds of CPU time, for a branch that may go astray, in tests) stops the
        stub with SIGVTALRM.
        """
        if body != self._body:              # a loop at one site runs the same body every time
            self.write_code(self.insn - self.code, body)
            self._body = body
        if watchdog:
            old = SigAction()
            action = SigAction(self.handler, (ctypes.c_ulong * 16)(), SA_SIGINFO | SA_NODEFER | SA_ONSTACK,
                               None)
            _libc.sigaction(signal.SIGVTALRM, ctypes.byref(action), ctypes.byref(old))
            self.unblock_watchdog(True)
            arm_watchdog(watchdog)
            try:
                self.stub()
            finally:
                arm_watchdog(0.0)
                self.unblock_watchdog(False)
                _libc.sigaction(signal.SIGVTALRM, ctypes.byref(old), None)
        else:
            self.stub()
        if not self.view[B_FAULT]:          # the handler sets it to 1
            return None
        _, signo, si_code, si_addr, rip = struct.unpack_from("<QQQQQ", self.view, B_FAULT)
        return signo & 0xFFFFFFFF, ctypes.c_int32(si_code & 0xFFFFFFFF).value, si_addr, rip

    def jump_to_epilogue(self, at: int) -> bytes:
        return b"\xe9" + struct.pack("<i", self.epilogue - (at + 5))


def _protect(address: int, size: int, prot: int, what: str) -> None:
    if _libc.mprotect(address, size, prot) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"cannot protect the native engine's {what}: {os.strerror(error)}")


def _map() -> int:
    prot = PROT_READ | PROT_WRITE                          # the code pages become read + execute
    flags = 0x02 | 0x20 | 0x100000                         # MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
    for base in _CANDIDATE_BASES:
        got = _libc.mmap(base, REGION_SIZE, prot, flags, -1, 0)
        if got == base:
            return base
        if got not in (None, ctypes.c_void_p(-1).value):   # an old kernel took it as a hint
            _libc.munmap(got, REGION_SIZE)
    raise OSError(ctypes.get_errno(), "cannot map the native engine's low region")


_REGION: Region | None = None
_FAILED: OSError | None = None          # why the region could not be made (reported once, kept)
_MAKING = threading.Lock()


def ensure() -> Region:
    """The region, mapped and its code generated on first use (once: threads that fault at the
    same moment must not make two).  OSError if it cannot be made here, the same one each time."""
    global _REGION, _FAILED
    region = _REGION
    if region is None:
        with _MAKING:
            if _REGION is None:
                if _FAILED is not None:
                    raise _FAILED
                problem = host.platform_problem()
                try:
                    if problem:
                        raise OSError(problem)
                    _REGION = Region()
                except OSError as error:
                    _FAILED = error
                    raise
            region = _REGION
    return region
