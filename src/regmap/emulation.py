"""What `regmap.emulate` gives back: the registers before and after, what changed, what ran.

Register values are kept as the basis registers' values; a name (``al``,
``xmm3``, ``eflags``) is computed from them when it is read, so an emulation
costs what its instructions cost, not a value for each of the ~290 names of
the register file.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping

from regmap.accesses import format_access, format_value_change as format_change
from regmap.alias import RegisterFile
from regmap.layout import Layout
from regmap.x86.emulator import Step

__all__ = ["Emulation", "RegisterValues", "flag_bits", "format_access", "format_change"]

STEPS_SHOWN = 8     # a repr lists at most this many instructions


class RegisterValues(Mapping[str, int]):
    """Every register of a register file by name (any case), over a dict of basis values.

    A read-only mapping: ``values["ah"]``, ``"ah" in values``, iteration in
    declaration order, ``dict(values)``.  The layout's window is not a register.
    """
    __slots__ = ("_registers", "_basis", "_window", "_names", "_whole")

    def __init__(self, registers: RegisterFile, basis: Mapping[str, int], window: str | None = None):
        self._registers, self._basis, self._window = registers, basis, window
        self._names, self._whole = _readable(registers, window)

    def __getitem__(self, name: str) -> int:
        mask = self._whole.get(name)
        if mask is not None:            # a basis register: its own value
            return self._basis.get(name, 0) & mask
        if name not in self._names:     # not as declared: any case, or not a register at all
            if name not in self._registers or name.lower() == self._window:
                raise KeyError(name)
        return self._registers.read(name, self._basis)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._registers and name.lower() != self._window

    def __iter__(self) -> Iterator[str]:
        return (name for name in self._registers.registers if name != self._window)

    def __len__(self) -> int:
        return len(self._registers) - (self._window in self._registers.registers)

    def basis(self) -> dict[str, int]:
        """The basis registers' values (every basis register; unset ones are 0)."""
        return {name: self._basis.get(name, 0) for name in self._registers.basis}

    def __repr__(self) -> str:
        shown = ", ".join(f"{name!r}: {value:#x}" for name, value in self.basis().items() if value)
        return f"RegisterValues({{{shown}}})"


class Emulation:
    """The outcome of `regmap.emulate`.

    ``regs`` and ``before`` map every register name to its value after and before;
    ``steps`` lists the instructions that ran, in order; ``memory_writes`` what reached
    real memory, as ``(address, bytes)``; ``finished`` is false when ``max_steps`` ran out
    before rip left the code.

    Built when first read: the register views, and a traced emulation's steps (`trace`
    works them out, with their window accesses, from the untraced ones: the run itself takes
    the compiled fast paths and records only where each step began).
    """
    __slots__ = ("layout", "memory_writes", "finished", "_before", "_after", "_steps", "_trace",
                 "_regs", "_before_view")

    def __init__(self, layout: Layout, before: dict[str, int], after: dict[str, int],
                 steps: list[Step], memory_writes: list[tuple[int, bytes]], finished: bool = True,
                 trace: Callable[[list[Step]], list[Step]] | None = None):
        self.layout, self.memory_writes, self.finished = layout, memory_writes, finished
        self._before, self._after, self._steps, self._trace = before, after, steps, trace
        self._regs: RegisterValues | None = None
        self._before_view: RegisterValues | None = None

    @property
    def regs(self) -> RegisterValues:
        view = self._regs
        if view is None:
            view = self._regs = RegisterValues(self.layout.registers, self._after,
                                               self.layout.window)
        return view

    @property
    def before(self) -> RegisterValues:
        view = self._before_view
        if view is None:
            view = self._before_view = RegisterValues(self.layout.registers, self._before,
                                                      self.layout.window)
        return view

    @property
    def steps(self) -> list[Step]:
        if self._trace is not None:
            self._steps, self._trace = self._trace(self._steps), None
        return self._steps

    @property
    def step(self) -> Step | None:
        """The last instruction that ran."""
        return self.steps[-1] if self.steps else None

    @property
    def changed(self) -> dict[str, tuple[int, int]]:
        """Each basis register whose value changed: name -> (before, after), in file order."""
        before, after = self.before.basis(), self.regs.basis()
        return {name: (before[name], after[name]) for name in before if before[name] != after[name]}

    @property
    def flags(self) -> dict[str, int]:
        """The flags after, decoded from rflags: ``{"cf": 1, "pf": 0, ...}`` by bit position."""
        return _decode_flags(self.layout.registers, self.regs.basis().get("rflags", 0))

    @property
    def changed_flags(self) -> dict[str, tuple[int, int]]:
        """Each flag whose value changed: name -> (before, after)."""
        rflags = self.changed.get("rflags")
        if rflags is None:
            return {}
        before, after = (_decode_flags(self.layout.registers, value) for value in rflags)
        return {name: (before[name], after[name]) for name in before if before[name] != after[name]}

    def __repr__(self) -> str:
        count = len(self.steps)
        state = "rip left the code" if self.finished else "stopped at max_steps"
        lines = [f"<Emulation: {count} instruction{'s' if count != 1 else ''}, {state}"]
        for step in self.steps[:STEPS_SHOWN]:
            lines.append(f"  {step.address:#x}  {step.disassembly}")
            lines.extend(f"      {format_access(access)}" for access in step.accesses or ())
        if count > STEPS_SHOWN:
            lines.append(f"  ... {count - STEPS_SHOWN} more")
        changes = ", ".join(f"{name} {format_change(*values)}" for name, values in self.changed.items())
        lines.append(f"  changed: {changes or 'nothing'}")
        flag_changes = ", ".join(f"{name} {b}->{a}" for name, (b, a) in self.changed_flags.items())
        if flag_changes:
            lines.append(f"  flags: {flag_changes}")
        return "\n".join(lines) + ">"


@functools.lru_cache(maxsize=None)
def _readable(registers: RegisterFile, window: str | None) -> tuple[frozenset[str], dict[str, int]]:
    """The register names a `RegisterValues` answers for, as declared (lower case), and of
    those the basis registers with their masks."""
    names = frozenset(registers.registers) - {window}
    return names, {name: (1 << registers.width(name)) - 1 for name in registers.basis
                   if name in names}


@functools.lru_cache(maxsize=None)
def flag_bits(registers: RegisterFile) -> tuple[tuple[str, int], ...]:
    """``(name, bit)`` for each bit of rflags that a 1-bit register names, lowest bit first."""
    if "rflags" not in registers:
        return ()
    named = ((registers.name_of("rflags", bit, bit), bit) for bit in range(registers.width("rflags")))
    return tuple((name, bit) for name, bit in named if name is not None)


def _decode_flags(registers: RegisterFile, rflags: int) -> dict[str, int]:
    return {name: (rflags >> bit) & 1 for name, bit in flag_bits(registers)}


