"""NT and ID of the interrupted thread, which the signal frame cannot carry.

`rt_sigreturn` takes from the frame only the flags in the kernel's FIX_EFLAGS (CF PF AF ZF SF
TF DF OF AC, and RF): NT (bit 14) and ID (bit 21) come from the rflags live at the
`rt_sigreturn` system call, i.e. the handler's own.  A handler inherits them from the thread it
interrupted (signal delivery clears only DF, RF and TF) and nothing in it changes them (the
native engine's stub puts the caller's back), so they come back unchanged; an emulated write
of the rflags slot, or a `popfq` with rsp in the window, that changes them has the handler set
its own live NT and ID (a POPFQ of four instructions, `set_live`) as its last act: `rt_sigreturn`
then carries them to the thread.  Only those instructions pay for it (the general path); the
fast paths never change NT or ID.
"""
from __future__ import annotations

import ctypes
import threading

from iced_x86 import Code, Instruction, MemoryOperand, Register

from regmap.x86.flags import ID, NT
from regmap.x86.machine_code import assemble, code_page

CARRIED = NT | ID               # what the frame's rflags cannot give the thread
_SETTER = None
_MAKING = threading.Lock()


def _code(base: int) -> bytes:
    """``void set_live(uint64_t bits)``: rflags' NT and ID become those of `bits`."""
    top = MemoryOperand(Register.RSP)
    return assemble([Instruction.create(Code.PUSHFQ),
                     Instruction.create_mem_i32(Code.AND_RM64_IMM32, top, ~CARRIED),
                     Instruction.create_mem_reg(Code.OR_RM64_R64, top, Register.RDI),
                     Instruction.create(Code.POPFQ),
                     Instruction.create(Code.RETNQ)], base)


def set_live(rflags: int) -> None:
    """Make the calling thread's live NT and ID those of `rflags` (generated at the first call,
    which only a program that changes them makes)."""
    global _SETTER
    if _SETTER is None:
        with _MAKING:
            if _SETTER is None:
                setter = ctypes.PYFUNCTYPE(None, ctypes.c_uint64)(code_page(_code, 0x1000))
                _SETTER = setter
    _SETTER(rflags & CARRIED)
