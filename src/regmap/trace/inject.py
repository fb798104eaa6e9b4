"""System calls made by a stopped tracee, and code written into it: how regmap maps pages there.

The tracer cannot map memory in another process; the tracee can.  A stopped thread is
pointed at a ``syscall`` instruction of its vDSO with the call's number and arguments in
its registers and single-stepped once; the result is in rax, and the thread's registers are
put back as they were (the kernel's ``syscall`` clobbers rcx and r11, the step nothing else).

Code is written through ``/proc/PID/mem``, as a debugger plants a breakpoint: a read+execute
page stays read+execute, a private file page is copied on write.
"""
from __future__ import annotations

import ctypes
import os
import signal

from regmap.trace import ptrace
from regmap.places import TF     # not x86.flags: exec starts without the x86 layer

SYS_MMAP, SYS_MUNMAP = 9, 11
PROT_READ_EXEC, MAP_PRIVATE_ANONYMOUS = 5, 0x22
MAP_FIXED_NOREPLACE = 0x100000   # Linux >= 4.17: an address already in use fails (EEXIST)
_WALL = os.__dict__.get("__WALL", 0x40000000)


def system_call(tid: int, regs, memory, number: int, *args: int) -> int | None:
    """Have the stopped thread `tid`, whose registers are `regs`, make system call `number`:
    its result (a negative errno on failure), or None if it could not be made."""
    gadget = syscall_instruction(tid, memory)
    if gadget is None:
        return None
    work = ptrace.UserRegs.from_buffer_copy(regs)
    work.rax, work.rip = number, gadget
    for name, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args):
        setattr(work, name, value & (1 << 64) - 1)
    work.eflags &= ~TF
    arrived: list[int] = []           # signals that came for the thread meanwhile
    try:
        ptrace.setregs(tid, work)
        for _ in range(STEP_TRIES):
            ptrace.ptrace(ptrace.PTRACE_SINGLESTEP, tid)
            _, status = os.waitpid(tid, _WALL)
            if not os.WIFSTOPPED(status):
                return None
            if status >> 16 == ptrace.PTRACE_EVENT_STOP:
                continue      # a PTRACE_INTERRUPT's trap (trace/quiesce.py) came first
            if os.WSTOPSIG(status) != signal.SIGTRAP:
                # a signal for the thread, stopped for delivery before the step: it is taken
                # off its queue now, so it is sent again once the thread is itself again
                arrived.append(os.WSTOPSIG(status))
                continue
            break
        if status >> 16 or os.WSTOPSIG(status) != signal.SIGTRAP:     # (the tries ran out)
            return None
        ptrace.ptrace(ptrace.PTRACE_GETREGS, tid, 0, ctypes.addressof(work))
        result = work.rax
        return result - (1 << 64) if result >= (1 << 64) - 4095 else result
    except OSError:
        return None
    finally:
        try:
            ptrace.setregs(tid, regs)
        except OSError:
            pass
        for signo in arrived:
            _resend(tid, signo)


STEP_TRIES = 8


def _resend(tid: int, signo: int) -> None:
    """Queue `signo` for thread `tid` again (its own siginfo cannot be: another process may not
    queue a kernel's si_code); the thread gets it when it runs on, as it would have."""
    from regmap.procmaps import status     # (not at start-up: it imports typing)
    try:
        tgid = int(status(tid).get("Tgid", tid))
        _libc.syscall(_SYS_TGKILL, tgid, tid, signo)
    except (OSError, ValueError):
        pass          # the thread is gone: nobody to deliver it to


_SYS_TGKILL = 234
_libc = ctypes.CDLL(None, use_errno=True)


def map_code(tid: int, regs, memory, address: int, size: int, fixed: bool) -> int | None:
    """An anonymous read+execute mapping of `size` bytes made by the tracee: at `address` exactly
    if `fixed` (never over an existing mapping), else anywhere (`address` 0).  Its address, or
    None."""
    flags = MAP_PRIVATE_ANONYMOUS | (MAP_FIXED_NOREPLACE if fixed else 0)
    got = system_call(tid, regs, memory, SYS_MMAP, address, size, PROT_READ_EXEC, flags, -1, 0)
    if got is None or got < 0:
        return None
    if fixed and got != address:          # a kernel before 4.17 took the address as a hint
        system_call(tid, regs, memory, SYS_MUNMAP, got, size)
        return None
    return got



def write_code(pid: int, address: int, data: bytes) -> bool:
    """Write into a read + execute page of `pid` (/proc/PID/mem)."""
    try:
        with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
            mem.seek(address)
            return mem.write(data) == len(data)
    except OSError:
        return False


def syscall_instruction(tid: int, memory) -> int | None:
    """The address of the bytes 0f 05 (syscall) in the tracee's vDSO, or None."""
    try:
        with open(f"/proc/{tid}/maps") as maps:
            for line in maps:
                if line.rstrip().endswith("[vdso]"):
                    start, end = (int(part, 16) for part in line.split()[0].split("-"))
                    data = memory.read(tid, start, end - start)
                    at = -1 if data is None else data.find(b"\x0f\x05")
                    return start + at if at >= 0 else None
    except OSError:
        pass
    return None
