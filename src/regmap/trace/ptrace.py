"""ctypes bindings for the parts of ptrace(2), waitpid(2) and process_vm_readv(2) the tracer uses.

Linux x86-64 only.  Every call raises ``OSError`` (with ``errno``) on failure,
except the hot-path helpers documented otherwise.  Numbers come from
<sys/ptrace.h>, <linux/ptrace.h>, <linux/elf.h> and <sys/user.h>.
"""
from __future__ import annotations

import ctypes
import os

# requests
PTRACE_TRACEME = 0
PTRACE_CONT = 7
PTRACE_KILL = 8
PTRACE_SINGLESTEP = 9
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETSIGINFO = 0x4202
PTRACE_SETSIGINFO = 0x4203
PTRACE_GETREGSET = 0x4204
PTRACE_SETREGSET = 0x4205
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208

# options
PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACEFORK = 0x2
PTRACE_O_TRACEVFORK = 0x4
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_TRACEEXIT = 0x40
PTRACE_O_EXITKILL = 0x100000

# events (status >> 16 of a ptrace-stop)
PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_EXIT = 6
PTRACE_EVENT_STOP = 128

# regsets
NT_PRSTATUS = 1
NT_PRFPREG = 2
NT_X86_XSTATE = 0x202

# wait flag: wait for clone children (threads) too
WALL = 0x40000000

# si_code values
SI_USER = 0
SI_KERNEL = 0x80
FPE_INTDIV = 1

# the 64-bit user-mode code segment selector (a 32-bit compat task runs with 0x23)
USER_CS_64 = 0x33

# The C library the interpreter itself is linked with (find_library would run ldconfig: ms)
_libc = ctypes.CDLL(None, use_errno=True)

_ptrace = _libc.ptrace
_ptrace.restype = ctypes.c_long
_ptrace.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)

_process_vm_readv = _libc.process_vm_readv
_process_vm_readv.restype = ctypes.c_ssize_t
_process_vm_readv.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong,
                              ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong)
_process_vm_writev = _libc.process_vm_writev
_process_vm_writev.restype = ctypes.c_ssize_t
_process_vm_writev.argtypes = _process_vm_readv.argtypes

get_errno = ctypes.get_errno


class UserRegs(ctypes.Structure):
    """``struct user_regs_struct`` of <sys/user.h> (x86-64), what PTRACE_GETREGS fills."""
    _fields_ = [(name, ctypes.c_ulonglong) for name in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8",
        "rax", "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss",
        "fs_base", "gs_base", "ds", "es", "fs", "gs")]


# byte offset of each field, for reading a register straight out of the buffer
USER_REGS_OFFSETS = {name: getattr(UserRegs, name).offset for name, _ in UserRegs._fields_}


class SigInfo(ctypes.Structure):
    """The head of ``siginfo_t`` (128 bytes): signo, errno, code, then the union.

    For a fault the union starts with ``si_addr``; for a signal sent by a
    process with ``si_pid`` and ``si_uid``.
    """
    _fields_ = [("si_signo", ctypes.c_int), ("si_errno", ctypes.c_int), ("si_code", ctypes.c_int),
                ("_pad", ctypes.c_int), ("si_addr", ctypes.c_ulonglong),
                ("_rest", ctypes.c_ubyte * (128 - 24))]

    @property
    def si_pid(self) -> int:
        return self.si_addr & 0xFFFFFFFF


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


# the bare ctypes function, for the per-fault path: returns -1 on failure (see ``check``)
raw_ptrace = _ptrace

# Ready-made argument tuples for the calls of every fault (by request, thread, addr, data):
# ctypes converting four Python ints costs about 0.7 us a call on this project's machine, as
# much as the rest of a call's Python.  Bounded: thread ids come and go.
_PREPARED: dict[tuple[int, int, int, int], tuple] = {}


def prepared(request: int, tid: int, addr: int = 0, data: int = 0) -> tuple:
    """``raw_ptrace(*prepared(request, tid, addr, data))`` is ``raw_ptrace(request, tid, addr,
    data)`` without converting its arguments on every call."""
    key = (request, tid, addr, data)
    arguments = _PREPARED.get(key)
    if arguments is None:
        if len(_PREPARED) >= 4096:
            _PREPARED.clear()
        arguments = _PREPARED[key] = (ctypes.c_long(request), ctypes.c_int(tid),
                                      ctypes.c_void_p(addr), ctypes.c_void_p(data))
    return arguments


def check(result: int, request: int, pid: int) -> int:
    """``raw_ptrace``'s result, or ``OSError`` if it failed."""
    if result == -1:
        err = get_errno()
        if err:
            raise OSError(err, f"ptrace({request:#x}, {pid}): {os.strerror(err)}")
    return result


def ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
    """The raw call; raises ``OSError`` on failure."""
    result = _ptrace(request, pid, addr, data)
    if result == -1:
        err = get_errno()
        if err:
            raise OSError(err, f"ptrace({request:#x}, {pid}): {os.strerror(err)}")
    return result


def seize(pid: int, options: int) -> None:
    ptrace(PTRACE_SEIZE, pid, 0, options)


def cont(tid: int, sig: int = 0) -> None:
    ptrace(PTRACE_CONT, tid, 0, sig)


def listen(tid: int) -> None:
    ptrace(PTRACE_LISTEN, tid, 0, 0)


def geteventmsg(tid: int) -> int:
    value = ctypes.c_ulong()
    ptrace(PTRACE_GETEVENTMSG, tid, 0, ctypes.addressof(value))
    return value.value


def setsiginfo(tid: int, info: SigInfo) -> None:
    ptrace(PTRACE_SETSIGINFO, tid, 0, ctypes.addressof(info))


def setregs(tid: int, regs: UserRegs) -> None:
    ptrace(PTRACE_SETREGS, tid, 0, ctypes.addressof(regs))


def getregset(tid: int, note: int, buffer) -> int:
    """Fill ``buffer`` (a ctypes array) with regset ``note``; return the size the kernel wrote."""
    iov = IoVec(ctypes.addressof(buffer), ctypes.sizeof(buffer))
    ptrace(PTRACE_GETREGSET, tid, note, ctypes.addressof(iov))
    return iov.iov_len


def setregset(tid: int, note: int, buffer, size: int) -> None:
    iov = IoVec(ctypes.addressof(buffer), size)
    ptrace(PTRACE_SETREGSET, tid, note, ctypes.addressof(iov))


class RemoteMemory:
    """Reads and writes another process's memory with process_vm_readv/writev.

    The kernel checks the tracee's own page permissions: a write to a
    read-only page fails here exactly as the program's store would fault.
    One instance keeps its iovecs and a fetch buffer, so the per-fault path
    allocates nothing.
    """

    PAGE = 4096

    def __init__(self):
        self._local = IoVec()
        self._remote = (IoVec * 2)()
        self._fetch_buffer = ctypes.create_string_buffer(16)
        self._fetch_local = IoVec(ctypes.addressof(self._fetch_buffer), 15)
        self._local_p = ctypes.addressof(self._local)
        self._remote_p = ctypes.addressof(self._remote)
        self._fetch_local_p = ctypes.addressof(self._fetch_local)
        self._mem_fds: dict[int, int] = {}

    def fetch(self, pid: int, address: int, size: int = 15) -> bytes:
        """Up to ``size`` (<= 15) bytes at ``address``; fewer when the next page is unreadable.

        The bytes on ``address``'s own page come through ``/proc/PID/mem`` (one pread, cheaper
        than process_vm_readv here).  That file reads any mapped page, even one the process
        may not read, which is right for the page of a faulting rip: the CPU was executing
        it.  Bytes on the next page come through process_vm_readv, so they stop where the
        process's read permission does.  The descriptor is kept per thread until ``forget``.
        """
        if address < 0 or address >= 1 << 64:
            return b""
        # the page rip is on is being executed, so /proc/PID/mem (which reads even pages the
        # process cannot) may read it; bytes on the next page only if the process can read them
        first = min(size, self.PAGE - (address & (self.PAGE - 1)))
        fd = self._mem_fds.get(pid)
        if fd is None:
            fd = self.descriptor(pid)
            if fd < 0:
                return self._fetch_vm(pid, address, size)
        try:
            head = os.pread(fd, first, address)
        except (OSError, OverflowError):
            return self._fetch_vm(pid, address, size)
        if first == size or len(head) < first:
            return head
        return head + self._fetch_vm(pid, address + first, size - first)

    def descriptor(self, pid: int) -> int:
        """Thread ``pid``'s open ``/proc/PID/mem`` (kept until ``forget``), or -1 if it cannot
        be opened.  For reading the code at a faulting rip only (see ``fetch``)."""
        fd = self._mem_fds.get(pid)
        if fd is None:
            try:
                fd = self._mem_fds[pid] = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return -1
        return fd

    def _fetch_vm(self, pid: int, address: int, size: int) -> bytes:
        remote = self._remote
        first = min(size, self.PAGE - (address & (self.PAGE - 1)))
        remote[0].iov_base = address
        remote[0].iov_len = first
        count = 1
        if first < size:
            remote[1].iov_base = address + first
            remote[1].iov_len = size - first
            count = 2
        self._fetch_local.iov_len = size
        got = _process_vm_readv(pid, self._fetch_local_p, 1, self._remote_p, count, 0)
        if got <= 0:
            return b""
        return self._fetch_buffer.raw[:got]

    def forget(self, pid: int) -> None:
        """Drop what is kept for thread ``pid`` (it exited, or its process exec'd)."""
        fd = self._mem_fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for pid in list(self._mem_fds):
            self.forget(pid)

    def read(self, pid: int, address: int, size: int) -> bytes | None:
        """``size`` bytes at ``address``, or ``None`` if any of them is unreadable."""
        if size == 0:
            return b""
        if address < 0 or address + size > 1 << 64:
            return None
        buffer = ctypes.create_string_buffer(size)
        self._local.iov_base = ctypes.addressof(buffer)
        self._local.iov_len = size
        self._remote[0].iov_base = address
        self._remote[0].iov_len = size
        got = _process_vm_readv(pid, self._local_p, 1, self._remote_p, 1, 0)
        if got != size:
            return None
        return buffer.raw

    def _write_once(self, pid: int, address: int, data: bytes) -> bool:
        size = len(data)
        buffer = ctypes.create_string_buffer(bytes(data), size)
        self._local.iov_base = ctypes.addressof(buffer)
        self._local.iov_len = size
        self._remote[0].iov_base = address
        self._remote[0].iov_len = size
        return _process_vm_writev(pid, self._local_p, 1, self._remote_p, 1, 0) == size

    def write(self, pid: int, address: int, data: bytes) -> bool:
        """Store ``data`` at ``address``; ``False`` (and nothing stored) if any byte is unwritable.

        A store that crosses a page boundary is done page by page, last page
        first; if an earlier page then refuses the store, the later pages get
        their old bytes back, so a failed store leaves memory as it was (as a
        faulting store does on the CPU), except against a concurrent writer.
        """
        size = len(data)
        if size == 0:
            return True
        if address < 0 or address + size > 1 << 64:
            return False
        data = bytes(data)
        boundary = (address | (self.PAGE - 1)) + 1
        if address + size <= boundary:
            return self._write_once(pid, address, data)
        pieces = []
        start = address
        while start < address + size:
            end = min((start | (self.PAGE - 1)) + 1, address + size)
            pieces.append((start, end))
            start = end
        old = []
        for start, end in pieces:
            saved = self.read(pid, start, end - start)
            if saved is None:
                return False
            old.append(saved)
        done = []
        for (start, end), saved in zip(reversed(pieces), reversed(old)):
            if not self._write_once(pid, start, data[start - address:end - address]):
                for undo_start, undo_saved in done:
                    self._write_once(pid, undo_start, undo_saved)
                return False
            done.append((start, saved))
        return True
