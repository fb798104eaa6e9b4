"""The Linux x86-64 system interface the in-process runtime needs, over ctypes.

Two views of libc: ``LIBC`` (ordinary ctypes calls, which release the GIL) for
setting things up, and ``LIBC_HELD`` (calls that keep the GIL) for use inside
the signal handler, where letting another thread run in the middle of a
syscall buys nothing and costs a GIL round trip.

Structures follow the x86-64 kernel and glibc ABIs:

- ``struct sigaction`` (glibc, 152 bytes) for ``sigaction(3)``; glibc fills in
  its own ``sa_restorer``, so a disposition read back and set again through
  glibc is not byte-identical when someone installed it with another
  restorer.  The kernel's ``struct sigaction`` (``KernelSigaction``, 32 bytes)
  is used with the raw ``rt_sigaction`` syscall wherever a disposition must be
  put back exactly.
- ``stack_t`` for ``sigaltstack(2)``, ``struct iovec`` for
  ``process_vm_readv(2)``.
"""
from __future__ import annotations

import ctypes
import os

c_long, c_ulong, c_int, c_void_p, c_size_t = (ctypes.c_long, ctypes.c_ulong, ctypes.c_int,
                                              ctypes.c_void_p, ctypes.c_size_t)

SIGTRAP, SIGBUS, SIGFPE, SIGSEGV = 5, 7, 8, 11
SIG_DFL, SIG_IGN = 0, 1
SA_SIGINFO = 0x00000004
SA_RESTORER = 0x04000000
SA_ONSTACK = 0x08000000
SA_RESTART = 0x10000000
SA_NODEFER = 0x40000000
SA_RESETHAND = 0x80000000
SS_ONSTACK, SS_DISABLE = 1, 2
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
FPE_INTDIV = 1
SI_KERNEL = 0x80

PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
MAP_PRIVATE, MAP_ANONYMOUS, MAP_NORESERVE, MAP_STACK = 0x02, 0x20, 0x4000, 0x20000
MAP_FAILED = ctypes.c_void_p(-1).value

ARCH_SET_GS, ARCH_SET_FS, ARCH_GET_FS, ARCH_GET_GS = 0x1001, 0x1002, 0x1003, 0x1004

SYS_mprotect = 10
SYS_rt_sigaction = 13
SYS_rt_sigprocmask = 14
SYS_sigaltstack = 131
SYS_arch_prctl = 158
SYS_gettid = 186
SYS_rt_tgsigqueueinfo = 297
SYS_process_vm_readv = 310
SYS_process_vm_writev = 311
SYS_membarrier = 324

# membarrier(2) commands (Linux >= 4.16)
MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE = 1 << 5
MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE = 1 << 6

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Sigaction(ctypes.Structure):
    """glibc's ``struct sigaction`` on x86-64."""
    _fields_ = [("handler", c_void_p), ("mask", ctypes.c_uint64 * 16), ("flags", c_int),
                ("restorer", c_void_p)]


class KernelSigaction(ctypes.Structure):
    """The kernel's ``struct sigaction`` for ``rt_sigaction`` on x86-64 (sigset is 8 bytes)."""
    _fields_ = [("handler", c_ulong), ("flags", c_ulong), ("restorer", c_ulong),
                ("mask", ctypes.c_uint64)]

    def key(self) -> tuple[int, int, int, int]:
        return (self.handler or 0, self.flags, self.restorer or 0, self.mask)


class StackT(ctypes.Structure):
    _fields_ = [("sp", c_void_p), ("flags", c_int), ("size", c_size_t)]


class IOVec(ctypes.Structure):
    _fields_ = [("base", c_void_p), ("len", c_size_t)]


LIBC = ctypes.CDLL(None, use_errno=True)
LIBC_HELD = ctypes.PyDLL(None, use_errno=True)

for _lib in (LIBC, LIBC_HELD):
    _lib.syscall.restype = c_long
    _lib.sigaction.argtypes = [c_int, ctypes.POINTER(Sigaction), ctypes.POINTER(Sigaction)]
    _lib.sigaction.restype = c_int
    _lib.sigaltstack.argtypes = [ctypes.POINTER(StackT), ctypes.POINTER(StackT)]
    _lib.sigaltstack.restype = c_int
    _lib.mmap.argtypes = [c_void_p, c_size_t, c_int, c_int, c_int, c_long]
    _lib.mmap.restype = c_void_p
    _lib.munmap.argtypes = [c_void_p, c_size_t]
    _lib.munmap.restype = c_int

_syscall = LIBC.syscall
_held_syscall = LIBC_HELD.syscall


def errno_error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def gettid() -> int:
    return _held_syscall(c_long(SYS_gettid))


# -- dispositions --------------------------------------------------------------------------

def get_action(signo: int) -> KernelSigaction:
    """The signal's current disposition, exactly as the kernel holds it."""
    old = KernelSigaction()
    if _held_syscall(c_long(SYS_rt_sigaction), c_long(signo), None, ctypes.byref(old), c_long(8)):
        raise errno_error(f"rt_sigaction({signo})")
    return old


def set_action(signo: int, action: KernelSigaction) -> None:
    """Install `action` byte for byte (handler, flags, restorer, mask)."""
    if _held_syscall(c_long(SYS_rt_sigaction), c_long(signo), ctypes.byref(action), None, c_long(8)):
        raise errno_error(f"rt_sigaction({signo})")


def install_handler(signo: int, handler: int, flags: int, mask_signals) -> KernelSigaction:
    """Install `handler` through glibc (which supplies the restorer); return the previous
    disposition in kernel form, read atomically by the same call."""
    new, old = Sigaction(), Sigaction()
    new.handler = handler
    new.flags = flags
    for s in mask_signals:
        new.mask[0] |= 1 << (s - 1)
    if LIBC.sigaction(signo, ctypes.byref(new), ctypes.byref(old)):
        raise errno_error(f"sigaction({signo})")
    previous = KernelSigaction()
    previous.handler = old.handler or 0
    previous.flags = old.flags & 0xFFFFFFFF
    previous.restorer = old.restorer or 0
    previous.mask = old.mask[0]
    return previous


def set_thread_mask(mask: int) -> int:
    """Set this thread's signal mask (the low 64 signals); return the old one."""
    new, old = ctypes.c_uint64(mask), ctypes.c_uint64()
    if _held_syscall(c_long(SYS_rt_sigprocmask), c_long(SIG_SETMASK), ctypes.byref(new),
                     ctypes.byref(old), c_long(8)):
        raise errno_error("rt_sigprocmask")
    return old.value


def block_signals(signals) -> None:
    """Add `signals` to this thread's signal mask (sigreturn puts the interrupted mask back)."""
    mask = ctypes.c_uint64(sum(1 << (s - 1) for s in signals))
    if _held_syscall(c_long(SYS_rt_sigprocmask), c_long(SIG_BLOCK), ctypes.byref(mask), None,
                     c_long(8)):
        raise errno_error("rt_sigprocmask")


def queue_to_self(signo: int, siginfo: bytes) -> None:
    """Queue `signo` with exactly `siginfo` (128 bytes) to the calling thread.

    The kernel lets a thread send itself any siginfo, even one that claims to
    come from the kernel (si_code > 0).
    """
    info = ctypes.create_string_buffer(bytes(siginfo), 128)
    if _held_syscall(c_long(SYS_rt_tgsigqueueinfo), c_long(os.getpid()), c_long(gettid()),
                     c_long(signo), info):
        raise errno_error("rt_tgsigqueueinfo")


# -- alternate signal stacks ---------------------------------------------------------------

def get_altstack() -> StackT:
    current = StackT()
    if LIBC_HELD.sigaltstack(None, ctypes.byref(current)):
        raise errno_error("sigaltstack")
    return current


def set_altstack(sp: int | None, size: int, flags: int = 0) -> StackT:
    new, old = StackT(sp, flags, size), StackT()
    if LIBC_HELD.sigaltstack(ctypes.byref(new), ctypes.byref(old)):
        raise errno_error("sigaltstack")
    return old


def map_stack(size: int, guard: int) -> int:
    """Reserve `guard` + `size` bytes of stack memory, the lowest `guard` bytes inaccessible."""
    base = LIBC_HELD.mmap(None, size + guard, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0)
    if base is None or base == MAP_FAILED:
        raise errno_error("mmap")
    if guard and _held_syscall(c_long(SYS_mprotect), c_void_p(base), c_size_t(guard), c_long(PROT_NONE)):
        raise errno_error("mprotect")
    return base


def unmap(base: int, size: int) -> None:
    LIBC_HELD.munmap(base, size)


# -- thread state the signal frame does not hold -------------------------------------------

def arch_prctl_get(code: int) -> int:
    out = ctypes.c_uint64()
    if _held_syscall(c_long(SYS_arch_prctl), c_long(code), ctypes.byref(out)):
        raise errno_error("arch_prctl")
    return out.value


def arch_prctl_set(code: int, value: int) -> None:
    if _held_syscall(c_long(SYS_arch_prctl), c_long(code), c_ulong(value)):
        raise errno_error("arch_prctl")


# -- memory that may not be there ------------------------------------------------------------

_PID = os.getpid()


def _pid() -> int:
    global _PID
    pid = os.getpid()  # after a fork the child reads its own memory
    if pid != _PID:
        _PID = pid
    return pid


def _spans(address: int, size: int):
    """(address, length) pieces of the range, cut at page boundaries."""
    pieces = []
    end = address + size
    while address < end:
        stop = min(end, (address | (PAGE_SIZE - 1)) + 1)
        pieces.append((address, stop - address))
        address = stop
    return pieces


_MEM: list = [None, 0]   # [fd of /proc/self/mem, the pid it belongs to]


def read_code(address: int, size: int) -> bytes:
    """Up to `size` bytes of code at `address`, fewer before an unmapped page; never a fault.

    Through /proc/self/mem, which reads any mapped page, execute-only ones
    included (the CPU runs code there, so regmap must be able to decode it);
    data accesses go through `vm_transfer`, which honours page protections.
    """
    if address < 0 or address + size > 1 << 63:
        return b""
    pid = os.getpid()
    if _MEM[0] is None or _MEM[1] != pid:
        try:
            _MEM[0], _MEM[1] = os.open("/proc/self/mem", os.O_RDONLY | os.O_CLOEXEC), pid
        except OSError:
            return _read_code_fallback(address, size)
    try:
        return os.pread(_MEM[0], size, address)
    except OSError:
        # pread stops at the first unreadable page only when it read something before it
        first = PAGE_SIZE - (address & (PAGE_SIZE - 1))
        if first < size:
            try:
                return os.pread(_MEM[0], first, address)
            except OSError:
                pass
        return b""


def _read_code_fallback(address: int, size: int) -> bytes:
    buffer = ctypes.create_string_buffer(size)
    return buffer.raw[:vm_transfer(address, buffer, size, write=False)]


def vm_transfer(address: int, buffer, size: int, write: bool) -> int:
    """Copy between `buffer` and this process's memory at `address` without faulting.

    ``process_vm_readv``/``process_vm_writev`` on our own pid return EFAULT
    instead of raising SIGSEGV, honour page protections (a read-only page
    cannot be written), and report partial transfers.  The remote range is cut
    at page boundaries so a partial transfer stops exactly at the first
    inaccessible page.  Returns the number of bytes transferred.
    """
    if size <= 0:
        return 0
    if address < 0 or address + size > 1 << 64:
        return 0
    pieces = _spans(address, size)
    remote = (IOVec * len(pieces))(*[IOVec(a, n) for a, n in pieces])
    local = IOVec(ctypes.addressof(buffer), size)
    number = SYS_process_vm_writev if write else SYS_process_vm_readv
    done = _held_syscall(c_long(number), c_long(_pid()), ctypes.byref(local), c_ulong(1),
                         remote, c_ulong(len(pieces)), c_ulong(0))
    return max(done, 0)


# -- rewriting code ----------------------------------------------------------------------------

_MEM_RW: list = [None, 0]   # [fd of /proc/self/mem opened for writing, the pid it belongs to]


def write_code(address: int, data: bytes) -> bool:
    """Store `data` into this process's code at `address`, leaving page protections as they are.

    Through /proc/self/mem, as a debugger plants a breakpoint: the kernel
    writes even a read-only private mapping, copying the page on write, so a
    file's pages are never changed.  Returns False if the kernel refuses.
    """
    pid = os.getpid()
    if _MEM_RW[0] is None or _MEM_RW[1] != pid:
        try:
            _MEM_RW[0], _MEM_RW[1] = os.open("/proc/self/mem", os.O_RDWR | os.O_CLOEXEC), pid
        except OSError:
            return False
    try:
        return os.pwrite(_MEM_RW[0], data, address) == len(data)
    except OSError:
        return False


def mprotect(address: int, size: int, prot: int) -> None:
    if _held_syscall(c_long(SYS_mprotect), c_void_p(address), c_size_t(size), c_long(prot)):
        raise errno_error("mprotect")


def membarrier(command: int) -> bool:
    return _held_syscall(c_long(SYS_membarrier), c_long(command), c_long(0), c_long(0)) == 0
