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
"""
from __future__ import annotations

import atexit
import ctypes
import threading

from iced_x86 import Code, Instruction, MemoryOperand, Register

from regmap.runtime import _sys
from regmap.x86.machine_code import Labels, assemble, code_page

CODE_SIZE = 0x100
ALIVE = ctypes.c_int(1)      # 0 once the interpreter is finishing: the destructor then does nothing
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
        callback with the same arguments."""
        labels = Labels()
        known = labels.new()
        saved = (Register.RDI, Register.RSI, Register.RDX)   # three pushes: rsp 16-aligned
        ins = [Instruction.create_reg(Code.PUSH_R64, r) for r in saved]
        ins += [*_call("PyGILState_GetThisThreadState"),
                Instruction.create_reg_reg(Code.TEST_RM64_R64, Register.RAX, Register.RAX),
                Instruction.create_branch(Code.JNE_REL32_64, known),
                *_call("PyGILState_Ensure"),
                *_call("PyEval_SaveThread"),
                Instruction.create_reg_u32(Code.MOV_R32_IMM32, Register.EDI, KEY.value),
                _mov(Register.RSI, Register.RAX),
                *_call("pthread_setspecific", _sys.LIBC),
                labels.at(known)]
        ins += [Instruction.create_reg(Code.POP_R64, r) for r in reversed(saved)]
        ins += [Instruction.create_reg_u64(Code.MOV_R64_IMM64, Register.RAX, callback),
                Instruction.create_reg(Code.JMP_RM64, Register.RAX)]
        return assemble(ins, base)
    return generate


def _finishing() -> None:
    ALIVE.value = 0


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
