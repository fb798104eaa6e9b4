"""The pure backend: registers in a dict, memory in a sparse map of byte strings.

Works on any OS, touches nothing real: for tests, analysis, and users who
want to ask "what would this instruction do to these registers?".
"""
from __future__ import annotations

import functools
from collections.abc import Mapping

from regmap.assembler import code_bytes
from regmap.emulation import Emulation, RegisterValues
from regmap.errors import MemoryFault, RegisterValueError
from regmap.layout import Layout, load_layout
from regmap.x86.emulator import Emulator, Step

__all__ = ["Emulation", "PureMachine", "emulate", "code_bytes", "MAX_STEPS"]

MAX_STEPS = 10_000      # emulate's default bound on the instructions one call runs

_EMULATORS: dict[int, Emulator] = {}
# SSE and x87 control as after FNINIT / at process start: every exception masked
_POWER_ON = {"mxcsr": 0x1F80, "fcw": 0x037F}


class _Registers:
    """The pure machine's register namespace: its dict, as attributes; unset registers read 0."""

    def __getattr__(self, basis: str) -> int:
        return 0


class PureMachine:
    """A `Machine` over a dict of basis registers and a map address -> bytes of real memory.

    Memory is a set of regions (address -> bytes); an access outside every
    region raises `MemoryFault`, as an unmapped page would.
    """
    __slots__ = ("namespace", "registers", "regions", "memory_writes", "overwritten")

    def __init__(self, registers: Mapping[str, int] | None = None,
                 memory: Mapping[int, bytes] | None = None):
        self.namespace = namespace = _Registers()
        self.registers = namespace.__dict__
        if registers:
            self.registers.update(registers)
        self.regions: dict[int, bytearray] = {}
        if memory:
            for start, data in memory.items():
                self.regions[start] = bytearray(data)
        self.memory_writes: list[tuple[int, bytes]] = []
        self.overwritten: list[tuple[int, bytes]] = []   # (address, the bytes each write replaced)

    def read_register(self, basis: str) -> int:
        return self.registers.get(basis, 0)

    def write_register(self, basis: str, value: int) -> None:
        self.registers[basis] = value

    def _region(self, address: int, size: int, write: bool) -> tuple[bytearray, int]:
        for start, data in self.regions.items():
            if start <= address and address + size <= start + len(data):
                return data, address - start
        raise MemoryFault(address, write)

    def read_memory(self, address: int, size: int) -> bytes:
        data, offset = self._region(address, size, False)
        return bytes(data[offset:offset + size])

    def write_memory(self, address: int, data: bytes) -> None:
        region, offset = self._region(address, len(data), True)
        self.overwritten.append((address, bytes(region[offset:offset + len(data)])))
        region[offset:offset + len(data)] = data
        self.memory_writes.append((address, bytes(data)))

    def fetch(self, address: int) -> bytes:
        for start, data in self.regions.items():
            if start <= address < start + len(data):
                return bytes(data[address - start:address - start + 15])
        return b""


def emulator_for(layout: Layout) -> Emulator:
    emulator = _EMULATORS.get(id(layout))
    if emulator is None or emulator.layout is not layout:
        emulator = _EMULATORS[id(layout)] = Emulator(layout)
    return emulator


def emulate(code: bytes | str, regs: Mapping[str, int] | None = None, *, rip: int = 0x400000,
            layout: Layout | str | None = None, memory: Mapping[int, bytes] | None = None,
            trace: bool = True, max_steps: int = MAX_STEPS) -> Emulation:
    """Run the instructions in `code` on a copy of `regs`; return the registers before and after.

    `code` is bytes, hex text (``"48 03 04 25 08 00 00 00"``) or Intel-syntax assembly
    (``"add rax, [8]"``, as ``regmap emulate`` takes it: see `regmap.assembler`), placed at `rip`.  Its
    instructions run in order, branches included, until rip leaves the code or
    `max_steps` instructions have run.  Instructions that touch the window and those
    that do not both run (with the emulator's semantics; one it has none for raises
    `UnsupportedInstruction`).

    `regs` maps register names, basis or alias (``rax``, ``eax``, ``xmm0``, ``cf``...),
    to values; registers not given are zero (rflags bit 1 is always set), except mxcsr (0x1f80)
    and fcw (0x37f), which start as in every process.  `memory`
    maps addresses to the bytes of real memory the code may touch; any other access
    outside the window raises `MemoryFault`.  With `trace` (the default) each step
    lists its window accesses.
    """
    if type(code) is not bytes or not code:     # (bytes as they are: no copy)
        code = code_bytes(code)
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, not {max_steps}")
    if not isinstance(layout, Layout):
        layout = load_layout(layout)
    values = _starting_values(layout.registers, regs, rip)
    machine = PureMachine(values, memory)
    machine.regions[rip] = bytearray(code)
    emulator = _EMULATORS.get(id(layout))
    if emulator is None or emulator.layout is not layout:
        emulator = emulator_for(layout)
    end, now = rip + len(code), machine.registers
    steps: list[Step]
    step, steps = emulator.step, []
    # With trace: where each step began (registers, memory writes so far); the first, at values.
    starts: list[tuple[dict[str, int], int]] = [(values, 0)]
    while len(steps) < max_steps and rip <= now["rip"] < end:
        if trace and steps:
            starts.append((now.copy(), len(machine.overwritten)))
        steps.append(step(machine, False, True))
    finished = not rip <= now["rip"] < end
    replay = functools.partial(_replay, emulator, machine, starts) if trace else None
    return Emulation(layout, values, now, steps, machine.memory_writes, finished, replay)


def _starting_values(registers, regs: Mapping[str, int] | None, rip: int) -> dict[str, int]:
    """The basis values `emulate` starts from: `regs` spliced in, rip, rflags bit 1, and the
    control registers as every process starts (unless given)."""
    whole, power_on = _starting_point(registers)
    values = dict(power_on)
    for name, value in (regs or {}).items():
        mask = whole.get(name)
        if mask is None:                # an alias (or a name in another case): splice them all
            return _spliced_values(registers, regs or {}, rip, power_on)
        values[name] = register_value(name, value, mask.bit_length())
    if "rip" not in whole:
        return _spliced_values(registers, regs or {}, rip, power_on)
    values["rip"] = rip & whole["rip"]
    values["rflags"] = values.get("rflags", 0) | 2
    return values


def register_value(name: str, value, width: int) -> int:
    """``value`` as the bits of register ``name``, ``width`` bits wide: an int from
    -2**(width-1) (two's complement) to 2**width - 1, a flag 0 or 1; anything else is a
    `RegisterValueError` naming the register and its width.  Text is not taken: a string's
    base would be a guess (``int(text, 0)`` reads 0x, 0b and decimal)."""
    if not isinstance(value, int):
        shown = f"the {type(value).__name__} {value!r}"
        hint = " (int(text, 0) reads 0x, 0b and decimal text)" if isinstance(value, str) else ""
        raise RegisterValueError(f"{name} ({_width(width)}) takes an integer, not {shown}{hint}")
    if width == 1:
        if value not in (0, 1):
            raise RegisterValueError(f"{name} is a flag (1 bit): 0 or 1, not {value}")
        return int(value)
    if not -(1 << (width - 1)) <= value < 1 << width:
        raise RegisterValueError(
            f"{name} is {_width(width)}: {_hex(value)} does not fit (give {_hex(-(1 << (width - 1)))}"
            f" .. {_hex((1 << width) - 1)}; a negative value is its two's complement)")
    return value & ((1 << width) - 1)


def _width(width: int) -> str:
    return "1 bit" if width == 1 else f"{width} bits"


def _hex(value: int) -> str:
    return f"-{-value:#x}" if value < 0 else f"{value:#x}"


def _spliced_values(registers, regs: Mapping[str, int], rip: int,
                    power_on: dict[str, int]) -> dict[str, int]:
    """`_starting_values` when some name is not a basis register's: each spliced in turn."""
    values: dict[str, int] = {}
    for name, value in regs.items():
        registers.write(name, register_value(name, value, registers.width(name)), values)
    registers.write("rip", rip, values)
    values["rflags"] = values.get("rflags", 0) | 2
    for name, value in power_on.items():
        values.setdefault(name, value)
    return values


@functools.lru_cache(maxsize=None)
def _starting_point(registers) -> tuple[dict[str, int], dict[str, int]]:
    """For `_starting_values`: each basis register -> its mask (what a value given for it
    keeps), and what every process starts with of the registers `registers` has."""
    whole = {name: (1 << registers.width(name)) - 1 for name in registers.basis}
    return whole, {name: value for name, value in _POWER_ON.items() if name in registers.registers}


def _replay(emulator: Emulator, machine: PureMachine, starts: list[tuple[dict[str, int], int]],
            steps: list[Step]) -> list[Step]:
    """A traced emulation's `steps`, worked out when they are first read.

    The run itself takes the compiled fast paths (``trace=False``) and records where each
    step began (`starts`): the registers, and how many memory writes had happened.  Here each
    step runs again with ``trace=True`` from there, on a scratch machine whose memory is as it
    was then.  Every step is deterministic, so its replay is the step: the same result, plus
    its window accesses.
    """
    return [emulator.step(_scratch(machine, registers, writes), True, True)
            for registers, writes in starts]


def _scratch(machine: PureMachine, registers: dict[str, int], writes: int) -> PureMachine:
    """A machine with `registers` and `machine`'s memory as it was after its first `writes`
    memory writes."""
    scratch = PureMachine(registers)
    later = machine.overwritten[writes:]
    if later:
        # The later writes' old bytes put back, newest first, on a copy.
        for start, data in machine.regions.items():
            scratch.regions[start] = bytearray(data)
        for address, old in reversed(later):
            region, offset = scratch._region(address, len(old), True)
            region[offset:offset + len(old)] = old
    else:
        # No step wrote memory after this one began, so this one wrote none: share it.
        scratch.regions = machine.regions
    return scratch
