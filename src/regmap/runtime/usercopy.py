"""Copying to and from memory that may not be there, without a system call.

The handler must touch real memory for a few instructions (the stack of
``push [8]``, ``pop [0x10]`` and ``call [8]``; the destination of ``rep movs``
and ``stos`` out of the window) and that memory may be unmapped, read-only or
guarded.  A genuine fault there must reach the program as the CPU would raise
it, never kill the process from inside the handler.

This is the kernel's ``copy_from_user`` with its exception table: a small copy
routine, machine code generated here with iced-x86, does the load or store
itself.  If it faults, the handler runs again, nested (SIGSEGV and SIGBUS are
not blocked while it emulates: ``handler.HANDLER_FLAGS``), sees that the fault
is the routine's (`recover`), records the fault's signal, si_code, si_addr,
trap number and error code in the routine's block, and resumes the routine at
its fixup label, which returns 0.  Nothing is emulated or forwarded for the
nested fault; the caller falls back to ``process_vm_readv``/``writev``
(`_sys.vm_transfer`) and, if that fails too, raises a `MemoryFault` that
carries the CPU's fault (`CpuFault`) for the handler to deliver.

One `UserCopy` per frame machine (that is, per thread and frame address): its
block holds the arguments, the fault record and a 64-byte inline buffer, so
concurrent handlers never share one and a transfer allocates nothing but its
result.  The routine is position-dependent only on its own page, which a
forked child inherits at the same address.
"""
from __future__ import annotations

import ctypes
import threading
from typing import NamedTuple

from iced_x86 import Code, Instruction, MemoryOperand, Register

from regmap.runtime import _sys
from regmap.x86.machine_code import Labels, assemble, code_page

# The block, in 64-bit words: the routine's arguments, then the fault record `recover` writes.
B_ADDRESS, B_SIZE, B_LOCAL = 0, 1, 2     # user memory, byte count, the local side of the copy
B_SIGNAL, B_SI_ADDR, B_TRAPNO, B_ERR = 3, 4, 5, 6     # B_SIGNAL: signo | si_code << 32
B_INLINE = 8                              # the inline buffer (INLINE bytes)
INLINE = 64
BLOCK_WORDS = B_INLINE + INLINE // 8

# The routine's page: the fixup, the two entry points, the copy itself.
FIXUP, READ, WRITE, COPY = 0x00, 0x10, 0x30, 0x50


class CpuFault(NamedTuple):
    """The fault the CPU raised on the routine's access: what it would raise on the program's."""
    signo: int
    si_code: int
    si_addr: int
    trapno: int
    err: int


class _Routine:
    """The generated code: its page and the two entry points as ctypes functions."""

    def __init__(self):
        self.base = code_page(_code, CODE_SIZE)
        self.fixup = self.base + FIXUP
        self.start, self.end = self.base + COPY, self.base + CODE_SIZE
        # No argtypes: the block (a ctypes array) goes as a pointer, for less than converting
        # an int would cost; PYFUNCTYPE keeps the GIL, which a few loads need not give up.
        self.read = ctypes.PYFUNCTYPE(ctypes.c_int)(self.base + READ)
        self.write = ctypes.PYFUNCTYPE(ctypes.c_int)(self.base + WRITE)
        self.read.argtypes = self.write.argtypes = None


CODE_SIZE = 0x100        # mapped as one page
_ROUTINE: _Routine | None = None
_MAKING = threading.Lock()


def routine() -> _Routine:
    """The routine, generated at the first call (map_registers makes it before any fault)."""
    global _ROUTINE
    if _ROUTINE is None:
        with _MAKING:
            if _ROUTINE is None:
                _ROUTINE = _Routine()
    return _ROUTINE


def _block(word: int) -> MemoryOperand:
    return MemoryOperand(Register.RDX, displ=8 * word, displ_size=1)


def _code(base: int) -> bytes:
    """The machine code for a page at `base`: parts at fixed offsets, as the native stub's."""
    mov = Instruction.create_reg_mem
    entries = {
        FIXUP: [Instruction.create_reg_reg(Code.XOR_R32_RM32, Register.EAX, Register.EAX),
                Instruction.create(Code.RETNQ)],
        # rdi = the block; from here on rdx holds it (`recover` finds the record through it)
        READ: [Instruction.create_reg_reg(Code.MOV_R64_RM64, Register.RDX, Register.RDI),
               mov(Code.MOV_R64_RM64, Register.RSI, _block(B_ADDRESS)),
               mov(Code.MOV_R64_RM64, Register.RDI, _block(B_LOCAL)),
               Instruction.create_branch(Code.JMP_REL32_64, base + COPY)],
        WRITE: [Instruction.create_reg_reg(Code.MOV_R64_RM64, Register.RDX, Register.RDI),
                mov(Code.MOV_R64_RM64, Register.RSI, _block(B_LOCAL)),
                mov(Code.MOV_R64_RM64, Register.RDI, _block(B_ADDRESS)),
                Instruction.create_branch(Code.JMP_REL32_64, base + COPY)],
        COPY: _copy(),
    }
    page = bytearray(b"\xcc" * CODE_SIZE)
    for offset, instructions in entries.items():
        blob = assemble(instructions, base + offset)
        limit = min([o for o in entries if o > offset] + [CODE_SIZE])
        assert offset + len(blob) <= limit, (offset, len(blob))
        page[offset:offset + len(blob)] = blob
    return bytes(page)


def _copy() -> list[Instruction]:
    """rsi -> rdi, rcx = size bytes: 8, 4 and 2 bytes as one access each, so a fault (a push
    whose 8 bytes straddle into a guard page) leaves nothing half written; any other size with
    rep movsb (bulk transfers, redone exactly by the slow path if they fault part way)."""
    labels = Labels()
    done = labels.new()
    ins = [Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RCX, _block(B_SIZE))]
    moves = ((8, Code.MOV_R64_RM64, Code.MOV_RM64_R64, Register.RAX),
             (4, Code.MOV_R32_RM32, Code.MOV_RM32_R32, Register.EAX),
             (2, Code.MOV_R16_RM16, Code.MOV_RM16_R16, Register.AX))
    for size, load, store, register in moves:
        other = labels.new()
        ins += [Instruction.create_reg_i32(Code.CMP_RM64_IMM8, Register.RCX, size),
                Instruction.create_branch(Code.JNE_REL32_64, other),
                Instruction.create_reg_mem(load, register, MemoryOperand(Register.RSI)),
                Instruction.create_mem_reg(store, MemoryOperand(Register.RDI), register),
                Instruction.create_branch(Code.JMP_REL32_64, done),
                labels.at(other)]
    ins += [Instruction.create_rep_movsb(64),
            labels.at(done),
            Instruction.create_reg_i32(Code.MOV_R32_IMM32, Register.EAX, 1),
            Instruction.create(Code.RETNQ)]
    return ins


class UserCopy:
    """One thread's copies between Python and memory that may fault (see the module doc)."""

    __slots__ = ("block", "view", "inline", "load", "store")

    def __init__(self):
        code = routine()
        self.load, self.store = code.read, code.write
        self.block = (ctypes.c_uint64 * BLOCK_WORDS)()
        self.inline = ctypes.addressof(self.block) + 8 * B_INLINE
        self.block[B_LOCAL] = self.inline
        self.view = memoryview(self.block).cast("B")[8 * B_INLINE:]

    def read(self, address: int, size: int) -> bytes | None:
        """The `size` bytes at `address`, or None if the CPU faulted reading them (`fault`)."""
        words = self.block
        words[B_ADDRESS], words[B_SIZE] = address, size
        if size <= INLINE:
            if self.load(words):
                return self.view[:size].tobytes()
            return None
        buffer = ctypes.create_string_buffer(size)
        words[B_LOCAL] = ctypes.addressof(buffer)
        try:
            return buffer.raw if self.load(words) else None
        finally:
            words[B_LOCAL] = self.inline

    def write(self, address: int, data: bytes) -> bool:
        """Whether `data` is now at `address` (False: the CPU faulted writing it, `fault`)."""
        size = len(data)
        words = self.block
        words[B_ADDRESS], words[B_SIZE] = address, size
        if size <= INLINE:
            self.view[:size] = data
            return bool(self.store(words))
        buffer = ctypes.create_string_buffer(bytes(data), size)
        words[B_LOCAL] = ctypes.addressof(buffer)
        try:
            return bool(self.store(words))
        finally:
            words[B_LOCAL] = self.inline

    def fault(self) -> CpuFault:
        """The fault of the last transfer that failed."""
        words = self.block
        signal = words[B_SIGNAL]
        return CpuFault(signal & 0xFFFFFFFF, signal >> 32, words[B_SI_ADDR], words[B_TRAPNO],
                        words[B_ERR])


def recover(frame) -> bool:
    """In the handler: if this fault is the copy routine's, record it and resume at the fixup.

    Only a fault the CPU raised (si_code 1..SI_KERNEL) at an instruction of
    the routine counts; a signal another process sent while the routine ran is
    not the routine's, and goes where it would have gone.
    """
    copy = _ROUTINE
    if copy is None or not copy.start <= frame.rip < copy.end or not 0 < frame.si_code <= _sys.SI_KERNEL:
        return False
    record = (ctypes.c_uint64 * 4).from_address(frame.rdx + 8 * B_SIGNAL)
    record[0] = frame.si_signo | frame.si_code << 32
    record[1], record[2], record[3] = frame.si_addr, frame.trapno, frame.err
    frame.rip = copy.fixup
    return True
