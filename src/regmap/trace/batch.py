"""Several system calls for the price of one ctypes call: the traced fault path's calls.

A ctypes call costs far more than the system call it wraps here: converting
the arguments, libffi's call interface, the result (about 4 500 instructions a
call on this project's machine, against about 1 000 for an ``os`` builtin).  A
fault needs GETSIGINFO, GETREGS and the read of the code at rip, then SETREGS
and CONT; `Batch` runs each group in one call, through a few instructions of
machine code generated here with iced-x86.

A batch is an array of entries: the system call's number, its six arguments,
a mask of the arguments that are addresses to load the value from at run time
(the code read's offset is the rip GETREGS has just written), and the result.
The calls run in order and stop at the first that fails (a result in
[-4095, -1], i.e. -errno); ``run`` returns how many succeeded.
"""
from __future__ import annotations

import ctypes
import os

from regmap.trace import ptrace

SYS_PREAD64, SYS_PTRACE = 17, 101


class Entry(ctypes.Structure):
    _fields_ = [("number", ctypes.c_long), ("args", ctypes.c_long * 6),
                ("indirect", ctypes.c_ulong), ("result", ctypes.c_long)]


_ENTRY_SIZE = ctypes.sizeof(Entry)
_ARGS = Entry.args.offset
_INDIRECT = Entry.indirect.offset
_RESULT = Entry.result.offset


def _code() -> list:
    """``int run(Entry *entries, long count)``, System V ABI; rbx, r12 and r13 saved."""
    from iced_x86 import Code, Instruction, MemoryOperand, Register as R

    from regmap.x86.machine_code import Labels

    def at(base, offset: int) -> MemoryOperand:
        return MemoryOperand(base, displ=offset, displ_size=1 if -128 <= offset < 128 else 4)

    labels = Labels()
    LOOP, DONE = labels.new(), labels.new()
    saved = (R.RBX, R.R12, R.R13)
    ins = [Instruction.create_reg(Code.PUSH_R64, reg) for reg in saved]
    ins += [Instruction.create_reg_reg(Code.MOV_R64_RM64, R.RBX, R.RDI),     # rbx: the entry
            Instruction.create_reg_reg(Code.MOV_R64_RM64, R.R12, R.RSI),     # r12: the count
            Instruction.create_reg_reg(Code.XOR_R32_RM32, R.R13D, R.R13D),   # r13: calls done
            labels.at(LOOP),
            Instruction.create_reg_reg(Code.CMP_R64_RM64, R.R13, R.R12),
            Instruction.create_branch(Code.JGE_REL32_64, DONE)]
    for index, reg in enumerate((R.RDI, R.RSI, R.RDX, R.R10, R.R8, R.R9)):
        direct = labels.new()
        ins += [Instruction.create_reg_mem(Code.MOV_R64_RM64, reg, at(R.RBX, _ARGS + 8 * index)),
                Instruction.create_mem_u32(Code.TEST_RM8_IMM8, at(R.RBX, _INDIRECT), 1 << index),
                Instruction.create_branch(Code.JE_REL32_64, direct),
                Instruction.create_reg_mem(Code.MOV_R64_RM64, reg, at(reg, 0)),
                labels.at(direct)]
    ins += [Instruction.create_reg_mem(Code.MOV_R64_RM64, R.RAX, at(R.RBX, 0)),
            Instruction.create(Code.SYSCALL),
            Instruction.create_mem_reg(Code.MOV_RM64_R64, at(R.RBX, _RESULT), R.RAX),
            Instruction.create_reg_i32(Code.CMP_RM64_IMM32, R.RAX, -4095),
            Instruction.create_branch(Code.JAE_REL32_64, DONE),           # -4095..-1: failed
            Instruction.create_reg_i32(Code.ADD_RM64_IMM32, R.RBX, _ENTRY_SIZE),
            Instruction.create_reg(Code.INC_RM64, R.R13),
            Instruction.create_branch(Code.JMP_REL32_64, LOOP),
            labels.at(DONE),
            Instruction.create_reg_reg(Code.MOV_R64_RM64, R.RAX, R.R13)]
    ins += [Instruction.create_reg(Code.POP_R64, reg) for reg in reversed(saved)]
    ins.append(Instruction.create(Code.RETNQ))
    return ins


_run = None


def runner():
    """The batch runner: the generated function, made on first use, or, where a page cannot
    be made executable (a hardened kernel or policy), `run_in_python` with the same contract."""
    global _run
    if _run is None:
        try:
            _run = _generated()
        except OSError:
            _run = run_in_python
    return _run


def _generated():
    from regmap.x86.machine_code import assemble, code_page
    page = code_page(lambda base: assemble(_code(), base))
    # PYFUNCTYPE: the calls are short and never block, the GIL need not be dropped; no
    # argtypes and an int result: each costs ctypes a lookup per call, and `Batch` passes
    # ready-made ctypes arguments
    run = ctypes.PYFUNCTYPE(ctypes.c_int)(page)
    run.argtypes = None
    return run


_syscall = None


def run_in_python(entries: ctypes.c_void_p, count: ctypes.c_long) -> int:
    """What the generated function does, one ctypes call per system call."""
    global _syscall
    if _syscall is None:
        _syscall = ctypes.CDLL(None, use_errno=True).syscall
        _syscall.restype = ctypes.c_long
        _syscall.argtypes = (ctypes.c_long,) * 7
    for done, entry in enumerate((Entry * count.value).from_address(entries.value)):
        args = [ctypes.c_long.from_address(arg).value if entry.indirect >> index & 1 else arg
                for index, arg in enumerate(entry.args)]
        result = _syscall(entry.number, *args)
        entry.result = -ctypes.get_errno() if result == -1 else result
        if result == -1:
            return done
    return count.value


class Batch:
    """System calls to run together, each a (number, arguments, indirect mask) tuple:
    ``run(*batch.arguments)`` returns how many succeeded; ``result(i)`` is call i's result
    and ``error(i, what)`` the OSError of a call that failed."""

    def __init__(self, *calls: tuple):
        self.entries = (Entry * len(calls))()
        for entry, (number, args, indirect) in zip(self.entries, calls):
            entry.number = number
            entry.args[:len(args)] = args
            entry.indirect = indirect
        self.count = len(calls)
        # ready-made arguments: no conversion per call
        self.arguments = (ctypes.c_void_p(ctypes.addressof(self.entries)), ctypes.c_long(self.count))
        self.results = memoryview(self.entries).cast("B").cast("q")   # see `result_index`

    def result(self, index: int) -> int:
        return self.results[result_index(index)]

    def error(self, index: int, what: str) -> OSError:
        err = -self.result(index)
        return OSError(err, f"{what}: {os.strerror(err)}")


def result_index(index: int) -> int:
    """Where call ``index``'s result is in ``Batch.results``."""
    return index * (_ENTRY_SIZE // 8) + _RESULT // 8


def ptrace_call(request: int, tid: int, addr: int = 0, data: int = 0) -> tuple:
    """A batch entry for ptrace(request, tid, addr, data) (a raw system call: no PEEK requests)."""
    return SYS_PTRACE, (request, tid, addr, data), 0


def pread_call(fd: int, buffer: int, size: int, offset_at: int) -> tuple:
    """A batch entry for pread(fd, buffer, size, *offset_at): the offset read when it runs."""
    return SYS_PREAD64, (fd, buffer, size, offset_at), 1 << 3


FETCH_SIZE = 15         # the longest x86 instruction
FETCHED = result_index(2)   # in ``FaultCalls.enter.results``: how many bytes of code were read


class FaultCalls:
    """One thread's calls on the fault path, prepared once.

    ``enter``: PTRACE_GETSIGINFO into ``siginfo``, PTRACE_GETREGS into ``regs``, then
    FETCH_SIZE bytes at the rip just read (``regs`` + its offset) from ``mem_fd``, the
    thread's /proc/TID/mem, into ``code`` (left out when ``mem_fd`` < 0).  ``leave``:
    PTRACE_SETREGS, PTRACE_CONT with no signal.  ``setregs``: PTRACE_SETREGS alone.
    """

    __slots__ = ("enter", "leave", "setregs")

    def __init__(self, tid: int, siginfo: int, regs: int, mem_fd: int, code: int):
        rip_at = regs + ptrace.USER_REGS_OFFSETS["rip"]
        fetch = (pread_call(mem_fd, code, FETCH_SIZE, rip_at),) if mem_fd >= 0 else ()
        self.enter = Batch(ptrace_call(ptrace.PTRACE_GETSIGINFO, tid, 0, siginfo),
                           ptrace_call(ptrace.PTRACE_GETREGS, tid, 0, regs), *fetch)
        self.leave = Batch(ptrace_call(ptrace.PTRACE_SETREGS, tid, 0, regs),
                           ptrace_call(ptrace.PTRACE_CONT, tid))
        self.setregs = Batch(ptrace_call(ptrace.PTRACE_SETREGS, tid, 0, regs))
