"""The pure backend: registers in a dict, memory in a sparse map of byte strings.

Works on any OS, touches nothing real: for tests, analysis, and users who
want to ask "what would this instruction do to these registers?".
"""
from __future__ import annotations

from dataclasses import dataclass, field

from regmap.errors import MemoryFault
from regmap.layout import Layout, load_layout
from regmap.x86.emulator import Emulator, Step

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

    def __init__(self, registers: dict[str, int] | None = None,
                 memory: dict[int, bytes] | None = None):
        self.namespace = _Registers()
        self.registers = self.namespace.__dict__
        self.registers.update(registers or {})
        self.regions = {start: bytearray(data) for start, data in (memory or {}).items()}
        self.memory_writes: list[tuple[int, bytes]] = []

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
        region[offset:offset + len(data)] = data
        self.memory_writes.append((address, bytes(data)))

    def fetch(self, address: int) -> bytes:
        for start, data in self.regions.items():
            if start <= address < start + len(data):
                return bytes(data[address - start:address - start + 15])
        return b""


@dataclass
class Emulation:
    """The outcome of `emulate`: every register by name, and what reached real memory."""
    regs: dict[str, int]
    memory_writes: list[tuple[int, bytes]] = field(default_factory=list)
    step: Step | None = None


def emulator_for(layout: Layout) -> Emulator:
    emulator = _EMULATORS.get(id(layout))
    if emulator is None or emulator.layout is not layout:
        emulator = _EMULATORS[id(layout)] = Emulator(layout)
    return emulator


def emulate(code: bytes, regs: dict[str, int], *, rip: int = 0x400000,
            layout: Layout | str | None = None, memory: dict[int, bytes] | None = None,
            trace: bool = False) -> Emulation:
    """Execute one instruction on a copy of `regs` and return every register's final value.

    `regs` maps register names, basis or alias (``rax``, ``eax``, ``xmm0``,
    ``rflags``...), to values; registers not given are zero (rflags bit 1 is
    always set), except mxcsr (0x1f80) and fcw (0x37f), which start as in
    every process.  `memory` maps addresses to the bytes of real memory the
    instruction may touch.
    """
    if not isinstance(layout, Layout):
        layout = load_layout(layout)
    registers = layout.registers
    values: dict[str, int] = {}
    for name, value in regs.items():
        registers.write(name.lower(), value & ((1 << registers.width(name.lower())) - 1), values)
    registers.write("rip", rip, values)
    values["rflags"] = values.get("rflags", 0) | 2
    for name, value in _POWER_ON.items():     # what every process starts with, unless given
        if name in registers.registers:
            values.setdefault(name, value)
    regions = dict(memory or {})
    regions[rip] = bytes(code)
    machine = PureMachine(values, regions)
    step = emulator_for(layout).step(machine, trace=trace)
    final = {name: registers.read(name, machine.registers) for name in registers.registers
             if not _is_layout_only(layout, name)}
    return Emulation(final, machine.memory_writes, step)


def _is_layout_only(layout: Layout, name: str) -> bool:
    """The window alias itself is not a register a user asks about."""
    return name == "page"
