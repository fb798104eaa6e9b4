"""``TracedMachine``: the ``regmap.x86.Machine`` protocol over one stopped thread of a tracee."""
from __future__ import annotations

import ctypes

from regmap import places
from regmap.errors import MemoryFault
from regmap.trace import ptrace
from regmap.trace.xstate import NAMES as XSTATE_NAMES, XState

# basis register name -> (user_regs_struct field, width mask)
_GP = {name: (field, (1 << 64) - 1) for name, field in places.USER_REGS.items()}
_GP.update({segment: (segment, 0xFFFF) for segment in places.SELECTORS})

REGISTER_NAMES = frozenset(_GP) | XSTATE_NAMES
_raw_ptrace, _prepared = ptrace.raw_ptrace, ptrace.prepared
_GETREGS, _SETREGS = ptrace.PTRACE_GETREGS, ptrace.PTRACE_SETREGS


class TracedRegisters(ptrace.UserRegs):
    """The PTRACE_GETREGS buffer as the machine's register namespace: ``regs.rax`` is a plain
    field, ``regs.rflags`` is eflags, a vector register or mxcsr goes to the thread's XSAVE
    area (`XState`, loaded on first use).  The compiled fast paths run on it directly."""

    # eflags's own field descriptor under a second name: no Python property call per access
    rflags = ptrace.UserRegs.eflags


def _xstate_property(name: str) -> property:
    return property(lambda regs: regs.__dict__["xstate"].read(name),
                    lambda regs, value: regs.__dict__["xstate"].write(name, value))


for _name in XSTATE_NAMES:
    setattr(TracedRegisters, _name, _xstate_property(_name))
del _name


class TracedMachine:
    """Registers of thread ``tid`` (general ones from one PTRACE_GETREGS, vector ones lazily
    from NT_X86_XSTATE) and the memory of its process.

    The tracer reuses one instance for every fault: ``reset`` points it at the
    next stopped thread, whose general registers the caller has just read into
    ``regs``; after a successful step ``store`` writes back what changed.
    """

    __slots__ = ("tid", "regs", "memory", "xstate", "regs_dirty", "regs_address", "namespace",
                 "original")

    def __init__(self, regs: ptrace.UserRegs | None = None, memory: ptrace.RemoteMemory | None = None,
                 xstate: XState | None = None):
        self.tid = 0
        self.regs = regs if regs is not None else TracedRegisters()
        self.memory = memory if memory is not None else ptrace.RemoteMemory()
        self.xstate = xstate if xstate is not None else XState()
        self.regs_dirty = False
        self.regs_address = ctypes.addressof(self.regs)
        # a patched site's bytes, while a fault of its stub's copy (`regmap.x86.stub`) is emulated
        # at the site; None otherwise (the tracer sets it for each fault)
        self.original: bytes | None = None
        # `namespace` only over a TracedRegisters buffer (a fast path writes it directly: rip
        # at least, so `store` after a step always writes the general registers back)
        self.namespace = self.regs if isinstance(self.regs, TracedRegisters) else None
        if self.namespace is not None:
            self.regs.__dict__["xstate"] = self.xstate

    def reset(self, tid: int) -> None:
        self.tid = tid
        self.regs_dirty = False
        xstate = self.xstate
        if xstate.loaded or xstate.tid != tid:    # (not loaded: not dirty either)
            xstate.reset(tid)

    def load(self, tid: int) -> None:
        """``reset`` and read the general registers of ``tid`` (one PTRACE_GETREGS)."""
        self.tid = tid
        self.regs_dirty = False
        xstate = self.xstate
        xstate.tid = tid
        xstate.loaded = xstate.dirty = False
        ptrace.check(_raw_ptrace(*_prepared(_GETREGS, tid, 0, self.regs_address)), _GETREGS, tid)

    def store(self) -> None:
        """Write back the registers that changed (PTRACE_SETREGS, NT_X86_XSTATE).  Called after
        a step, which moves rip at least; a fast path writes the namespace without marking it."""
        if self.regs_dirty or self.namespace is not None:
            ptrace.check(_raw_ptrace(*_prepared(_SETREGS, self.tid, 0, self.regs_address)),
                         _SETREGS, self.tid)
            self.regs_dirty = False
        if self.xstate.dirty:
            self.xstate.store()

    # -- the Machine protocol ------------------------------------------------------------------
    def read_register(self, basis: str) -> int:
        entry = _GP.get(basis)
        if entry is not None:
            return getattr(self.regs, entry[0]) & entry[1]
        try:
            return self.xstate.read(basis)
        except KeyError:
            raise KeyError(f"no register {basis!r} in a traced thread") from None

    def write_register(self, basis: str, value: int) -> None:
        entry = _GP.get(basis)
        if entry is not None:
            setattr(self.regs, entry[0], value & entry[1])
            self.regs_dirty = True
            return
        try:
            self.xstate.write(basis, value)
        except KeyError:
            raise KeyError(f"no register {basis!r} in a traced thread") from None

    def read_memory(self, address: int, size: int) -> bytes:
        data = self.memory.read(self.tid, address, size)
        if data is None:
            raise MemoryFault(address, False)
        return data

    def write_memory(self, address: int, data: bytes) -> None:
        if not self.memory.write(self.tid, address, data):
            raise MemoryFault(address, True)

    def fetch(self, address: int) -> bytes:
        if self.original is not None and address == self.regs.rip:
            return self.original
        return self.memory.fetch(self.tid, address)
