"""A Python thread state for each thread Python never saw, made at its first fault, kept until it exits.

The handler is a ctypes callback.  On a thread the interpreter does not know
(one a native library created with ``pthread_create``) ctypes makes a thread
state for every call and destroys it after (``PyGILState_Ensure`` creates it,
the matching ``PyGILState_Release`` brings its counter back to 0 and deletes
it): a ``malloc``, an ``mmap`` of its frame stack chunk, a ``gettid`` and a
``munmap`` on every fault.

So the handler's entry is a short prologue, machine code generated here, in
front of the callback.  If ``PyGILState_GetThisThreadState()`` (one
``pthread_getspecific``) says the thread has no thread state, it takes one the
GIL-state API keeps: ``PyGILState_Ensure()`` creates and binds it with a
counter of 1, ``PyEval_SaveThread()`` lets the GIL go and keeps the state, and
that 1 is never released: ctypes's own Ensure/Release pair then moves the
counter 1 -> 2 -> 1 and never deletes it.  Threads Python knows (the main
thread, ``threading`` threads) are not touched: their thread states are
their own.

At thread exit a pthread key destructor (machine code too) releases it.  It
cannot go through the GIL-state API: glibc clears every key's value before
calling destructors, CPython's own key included, so ``PyGILState_Ensure``
there would make yet another thread state.  The key's value is the thread
state itself, and the destructor does what CPython does for an exiting
``threading`` thread: ``PyEval_RestoreThread`` (take the GIL with it),
``PyThreadState_Clear``, ``PyThreadState_DeleteCurrent`` (which frees it and
lets the GIL go).  Once the interpreter is finishing (`atexit`) it does
nothing: taking the GIL then may end the thread inside its own exit, and the
process is about to end anyway.

The prologue also keeps threads from fighting over the GIL.  Every fault takes
the GIL; with many threads faulting at once, each one waits for it in the
interpreter's condition variable and hands it on with a futex wake, which
costs more than the fault (8 C threads did less than half the work of one).
So a thread that does not hold the GIL passes a gate first: a word taken with
``lock cmpxchg`` (``sched_yield`` while another thread has it), holding the
thread state of the thread inside, given back when the callback returns.  One
thread at a time then asks for the GIL.  A thread that holds the GIL (a fault
from code called with it held) goes straight in, as does a fault inside the
gate's own holder (native code a trace callback runs); either waiting would
never end.  A forked child starts with the gate open (`os.register_at_fork`).
"""
from __future__ import annotations

import atexit
import ctypes
import os
import threading

from iced_x86 import Code, Instruction, MemoryOperand, Register

from regmap.runtime import _sys
from regmap.x86.machine_code import Labels, assemble, code_page, locked

CODE_SIZE = 0x100
ALIVE = ctypes.c_int(1)      # 0 once the interpreter is finishing: the destructor then does nothing
GATE = ctypes.c_void_p(0)   # the thread state of the thread in the callback that took the gate
KEY = ctypes.c_uint(0)       # the pthread key whose value is a thread state regmap made
_PAGES: dict[int, int] = {}  # callback address -> its entry (never unmapped: a thread may be in it)
_DESTRUCTOR = 0
_LOCK = threading.Lock()


def _function(name: str, library=ctypes.pythonapi) -> int:
    return ctypes.cast(getattr(library, name), ctypes.c_void_p).value or 0


def _call(name: str, library=ctypes.pythonapi) -> list[Instruction]:
    return [Instruction.create_reg_u64(Code.MOV_R64_IMM64, Register.RAX, _function(name, library)),
            Instruction.create_reg(Code.CALL_RM64, Register.RAX)]


def _mov(target: Register, source: Register) -> Instruction:
    return Instruction.create_reg_reg(Code.MOV_R64_RM64, target, source)


def _destructor_code(base: int) -> bytes:
    """destructor(tstate), called by glibc at thread exit with the key's value."""
    labels = Labels()
    done = labels.new()
    ins = [Instruction.create_reg(Code.PUSH_R64, Register.RBX),     # rsp 16-aligned for the calls
           _mov(Register.RBX, Register.RDI),
           Instruction.create_reg_u64(Code.MOV_R64_IMM64, Register.RAX, ctypes.addressof(ALIVE)),
           Instruction.create_mem_i32(Code.CMP_RM32_IMM8, MemoryOperand(Register.RAX), 0),
           Instruction.create_branch(Code.JE_REL32_64, done),
           _mov(Register.RDI, Register.RBX), *_call("PyEval_RestoreThread"),
           _mov(Register.RDI, Register.RBX), *_call("PyThreadState_Clear"),
           *_call("PyThreadState_DeleteCurrent"),
           labels.at(done),
           Instruction.create_reg(Code.POP_R64, Register.RBX),
           Instruction.create(Code.RETNQ)]
    return assemble(ins, base)


def _entry_code(callback: int):
    def generate(base: int) -> bytes:
        """handler(signo, info, ctx): give the thread a thread state if it has none, then the
        callback with the same arguments; a thread not holding the GIL passes the gate first."""
        labels = Labels()
        known, spin, bypass, enter, out = (labels.new() for _ in range(5))
        saved = (Register.RDI, Register.RSI, Register.RDX)
        ins = [Instruction.create_reg(Code.PUSH_R64, Register.RBX)]
        ins += [Instruction.create_reg(Code.PUSH_R64, r) for r in saved]
        ins += [Instruction.create_reg_i32(Code.SUB_RM64_IMM8, Register.RSP, 8),   # 16-aligned
                *_call("PyGILState_GetThisThreadState"),
                Instruction.create_reg_reg(Code.TEST_RM64_R64, Register.RAX, Register.RAX),
                Instruction.create_branch(Code.JNE_REL32_64, known),
                *_call("PyGILState_Ensure"),
                *_call("PyEval_SaveThread"),
                Instruction.create_reg_u32(Code.MOV_R32_IMM32, Register.EDI, KEY.value),
                _mov(Register.RSI, Register.RAX),
                *_call("pthread_setspecific", _sys.LIBC),
                labels.at(known),
                *_call("PyGILState_Check"),       # a thread holding the GIL goes straight in
                Instruction.create_reg_reg(Code.TEST_RM32_R32, Register.EAX, Register.EAX),
                Instruction.create_branch(Code.JNE_REL32_64, bypass),
                *_call("PyGILState_GetThisThreadState"),
                _mov(Register.RBX, Register.RAX),           # the gate's value: its holder's state
                Instruction.create_reg_u64(Code.MOV_R64_IMM64, Register.RCX, ctypes.addressof(GATE)),
                Instruction.create_mem_reg(Code.CMP_RM64_R64, MemoryOperand(Register.RCX), Register.RBX),
                Instruction.create_branch(Code.JE_REL32_64, bypass),    # a fault inside its own
                labels.at(spin),
                Instruction.create_reg_reg(Code.XOR_R32_RM32, Register.EAX, Register.EAX),
                locked(Instruction.create_mem_reg(Code.CMPXCHG_RM64_R64, MemoryOperand(Register.RCX),
                                                   Register.RBX)),
                Instruction.create_branch(Code.JE_REL32_64, enter),
                *_call("sched_yield", _sys.LIBC),
                Instruction.create_reg_u64(Code.MOV_R64_IMM64, Register.RCX, ctypes.addressof(GATE)),
                Instruction.create_branch(Code.JMP_REL32_64, spin),
                labels.at(bypass),
                Instruction.create_reg_reg(Code.XOR_R32_RM32, Register.EBX, Register.EBX),
                labels.at(enter),
                Instruction.create_reg_i32(Code.ADD_RM64_IMM8, Register.RSP, 8)]
        ins += [Instruction.create_reg(Code.POP_R64, r) for r in reversed(saved)]
        ins += [Instruction.create_reg_u64(Code.MOV_R64_IMM64, Register.RAX, callback),
                Instruction.create_reg(Code.CALL_RM64, Register.RAX),
                Instruction.create_reg_reg(Code.TEST_RM64_R64, Register.RBX, Register.RBX),
                Instruction.create_branch(Code.JE_REL32_64, out),
                Instruction.create_reg_u64(Code.MOV_R64_IMM64, Register.RCX, ctypes.addressof(GATE)),
                Instruction.create_mem_i32(Code.MOV_RM64_IMM32, MemoryOperand(Register.RCX), 0),
                labels.at(out),
                Instruction.create_reg(Code.POP_R64, Register.RBX),
                Instruction.create(Code.RETNQ)]
        return assemble(ins, base)
    return generate


def _finishing() -> None:
    ALIVE.value = 0


def _open_gate() -> None:
    GATE.value = 0   # its holder, if any, was another thread: not in this child


def entry(callback: int) -> int:
    """The address to install as the signal handler in front of the ctypes callback at
    `callback` (one entry per callback, made once)."""
    global _DESTRUCTOR
    with _LOCK:
        if not _DESTRUCTOR:
            destructor = code_page(_destructor_code, CODE_SIZE)
            create = _sys.LIBC.pthread_key_create
            create.argtypes, create.restype = [ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p], ctypes.c_int
            error = create(ctypes.byref(KEY), destructor)
            if error:
                raise OSError(error, "pthread_key_create for regmap's thread states")
            atexit.register(_finishing)
            os.register_at_fork(after_in_child=_open_gate)
            _DESTRUCTOR = destructor
        address = _PAGES.get(callback)
        if address is None:
            address = _PAGES[callback] = code_page(_entry_code(callback), CODE_SIZE)
        return address


def count() -> int:
    """How many thread states the interpreter has (with the GIL held; for tests, when no thread
    is being created: the list is walked without the interpreter's own lock)."""
    def api(name, *args):
        return ctypes.PYFUNCTYPE(ctypes.c_void_p, *args)((name, ctypes.pythonapi))
    current = api("PyThreadState_Get")()
    interpreter = api("PyThreadState_GetInterpreter", ctypes.c_void_p)(current)
    following = api("PyThreadState_Next", ctypes.c_void_p)
    state, total = api("PyInterpreterState_ThreadHead", ctypes.c_void_p)(interpreter), 0
    while state:
        total += 1
        state = following(state)
    return total
