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

import struct

from regmap.trace.inject import map_code, write_code
from regmap.places import ID, NT, RF, TF     # not x86.flags: exec starts without the x86 layer

TRAMPOLINE = bytes.fromhex("9d 48 cf")      # popfq; iretq
RED_ZONE = 128
_IMAGE = struct.Struct("<6Q")                # popfq's value, then rip cs rflags rsp ss
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
            if not write_code(tid, image_at, image):
                return False
        regs.rip, regs.rsp = page, image_at
        regs.eflags = wanted & ~TF      # not single-stepping the trampoline: IRETQ loads TF
        return True


def _map_page(tid: int, regs, memory) -> int:
    """Have the tracee map a page and write the trampoline into it; its address, or 0."""
    page = map_code(tid, regs, memory, 0, 4096, fixed=False)
    return page if page is not None and write_code(tid, page, TRAMPOLINE) else 0
