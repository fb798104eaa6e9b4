"""ID (rflags bit 21) under `regmap exec`: the tracee sets it itself, through IRETQ.

PTRACE_SETREGS keeps the tracee's own ID whatever the tracer writes (the kernel's FLAG_MASK in
arch/x86/kernel/ptrace.c leaves ID out), so a window write of the rflags slot, or a `popfq`
with rsp in the window, that changes ID would be lost.  Only an instruction of the tracee can
change it: regmap maps one page in the process (an `mmap` system call the tracee makes at a
`syscall` instruction of its vDSO, single-stepped) holding `popfq; iretq`, and resumes the
thread there with the stack pointing at an IRETQ image below the red zone: IRETQ sets rip,
rsp and every user flag at once (ID, NT, AC, TF; IF and IOPL stay, CPL 3), as the emulated
instruction left them.  The `popfq` before it clears NT (IRETQ with NT set is #GP in 64-bit
mode) and TF (which would trap on the IRETQ itself); a TF the program set then traps after
the first instruction at the return address, as after the emulated one.  Only instructions
that change ID pay for it: the fault path checks one bit.
"""
from __future__ import annotations

import ctypes
import os
import signal
import struct

from regmap.trace import ptrace
from regmap.places import ID, NT, RF, TF     # not x86.flags: exec starts without the x86 layer

TRAMPOLINE = bytes.fromhex("9d 48 cf")      # popfq; iretq
RED_ZONE = 128
_IMAGE = struct.Struct("<6Q")                # popfq's value, then rip cs rflags rsp ss
_PROT_READ_EXEC, _MAP_PRIVATE_ANONYMOUS, _SYS_MMAP = 5, 0x22, 9
SLOT_BASE = 64                               # the page: the trampoline, then IRETQ images
SLOTS = (4096 - SLOT_BASE) // _IMAGE.size


class IdSetter:
    """One trampoline page per address space (by thread group), mapped at its first use."""

    def __init__(self):
        self.pages: dict[int, int] = {}      # tgid -> the page, 0 if it could not be mapped

    def forget(self, tgid: int) -> None:
        """An exec: the page went with the old address space."""
        self.pages.pop(tgid, None)

    def resume_through(self, tid: int, tgid: int, regs, memory) -> bool:
        """Point the stopped thread `tid`, whose final registers are `regs`, at the trampoline;
        False (nothing changed) if there is no page or its stack cannot take the image."""
        page = self.pages.get(tgid)
        if page is None:
            page = self.pages[tgid] = _map_page(tid, regs, memory)
        if not page:
            return False
        wanted = regs.eflags
        image_at = (regs.rsp - RED_ZONE - _IMAGE.size) & ~0xF
        image = _IMAGE.pack(wanted & ~(NT | TF | RF) | 2, regs.rip, regs.cs, wanted, regs.rsp, regs.ss)
        if not memory.write(tid, image_at, image):
            # no stack below rsp (rsp in the window: `popfq` from page 0): a slot of the page,
            # which IRETQ only reads (two threads of one process whose tids agree modulo
            # SLOTS, both resumed here before either ran two instructions, would share it)
            image_at = page + SLOT_BASE + _IMAGE.size * (tid % SLOTS)
            if not _write_code(tid, image_at, image):
                return False
        regs.rip, regs.rsp = page, image_at
        regs.eflags = wanted & ~TF      # not single-stepping the trampoline: IRETQ loads TF
        return True


def _map_page(tid: int, regs, memory) -> int:
    """Have the tracee map a page and write the trampoline into it; its address, or 0."""
    gadget = _syscall_instruction(tid, memory)
    if gadget is None:
        return 0
    work = ptrace.UserRegs.from_buffer_copy(regs)
    work.rax, work.rdi, work.rsi, work.rdx = _SYS_MMAP, 0, 4096, _PROT_READ_EXEC
    work.r10, work.r8, work.r9, work.rip = _MAP_PRIVATE_ANONYMOUS, (1 << 64) - 1, 0, gadget
    work.eflags &= ~TF
    try:
        ptrace.setregs(tid, work)
        ptrace.ptrace(ptrace.PTRACE_SINGLESTEP, tid)
        _, status = os.waitpid(tid, os.__dict__.get("__WALL", 0x40000000))
        if not os.WIFSTOPPED(status) or os.WSTOPSIG(status) != signal.SIGTRAP:
            return 0
        ptrace.ptrace(ptrace.PTRACE_GETREGS, tid, 0, ctypes.addressof(work))
        page = work.rax
        if page >= (1 << 64) - 4095:
            return 0
        return page if _write_code(tid, page, TRAMPOLINE) else 0
    except OSError:
        return 0
    finally:
        try:
            ptrace.setregs(tid, regs)
        except OSError:
            pass


def _write_code(tid: int, address: int, data: bytes) -> bool:
    """Write into the read + execute page (/proc/PID/mem, as a debugger plants a breakpoint)."""
    try:
        with open(f"/proc/{tid}/mem", "r+b", buffering=0) as mem:
            mem.seek(address)
            return mem.write(data) == len(data)
    except OSError:
        return False


def _syscall_instruction(tid: int, memory) -> int | None:
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
