"""One instruction's view of the machine: registers cached, writes buffered.

Nothing reaches the `Machine` until `commit`, so an instruction that fails
half-way (a real-memory fault, a divide error) leaves the machine untouched.

During an instruction the window is memory: reads see the register image as
it was when the instruction began, plus the instruction's own window stores
(a string instruction copying within the window sees its earlier elements).
At the end the window writes land on the registers after the instruction's
register writes: page-0 bytes *are* register bytes, and the memory write is
the last thing an instruction does (``xadd [8], rcx`` leaves rcx = 2*rcx).
"""
from __future__ import annotations

from typing import NamedTuple

from regmap.errors import GeneralProtection, MemoryFault, RegmapError
from regmap.x86 import flags
from regmap.x86.host import MXCSR_WRITABLE  # noqa: F401 - the emulator's name for it


class Access(NamedTuple):
    """One window access, for traces: before/after are the window bytes' values (after None for
    a read).  How it is shown, as text and as JSON: `regmap.accesses`."""
    address: int
    size: int
    write: bool
    before: int
    after: int | None
    names: str


class Cpu:
    __slots__ = ("machine", "layout", "regs", "originals", "dirty", "window_writes",
                 "memory_writes", "accesses", "next_ip", "addresses", "restarts")

    def __init__(self, machine, layout, next_ip: int, trace: bool):
        self.machine = machine
        self.layout = layout
        self.regs: dict[str, int] = {}
        self.originals: dict[str, int] = {}  # values as the instruction found them
        self.dirty: set[str] = set()
        self.window_writes: list[tuple[int, int, int]] = []
        self.memory_writes: list[tuple[int, bytes]] = []
        self.accesses: list[Access] | None = [] if trace else None
        self.next_ip = next_ip
        self.addresses: dict = {}  # memory operand -> its effective address in this instruction
        self.restarts = False      # rip stays on an unfinished instruction (see `restart`)

    # registers -------------------------------------------------------------
    def reg(self, basis: str) -> int:
        try:
            return self.regs[basis]
        except KeyError:
            value = self.regs[basis] = self.originals[basis] = self.machine.read_register(basis)
            return value

    def set_reg(self, basis: str, value: int) -> None:
        if basis not in self.regs:
            self.reg(basis)  # keep the original for the commit's rflags rule
        self.regs[basis] = value
        self.dirty.add(basis)

    def rflags(self) -> int:
        return self.reg("rflags")

    def set_flags(self, update: tuple[int, int]) -> None:
        mask, bits = update
        self.set_reg("rflags", (self.reg("rflags") & ~mask) | (bits & mask))

    def flag(self, bit: int) -> int:
        return 1 if self.reg("rflags") & bit else 0

    def jump(self, target: int) -> None:
        self.set_reg("rip", target & 0xFFFF_FFFF_FFFF_FFFF)

    def restart(self, address: int) -> None:
        """The instruction at `address` is not finished (a ``rep`` string instruction stopped
        by a fault part-way): rip stays on it, and so does RF, as the CPU leaves them for the
        instruction to resume."""
        self.jump(address)
        self.restarts = True

    # the window --------------------------------------------------------------
    def window_read(self, address: int, size: int) -> int:
        value = self._peek_window(address, size)
        if self.window_writes:
            value = self._with_own_stores(address, size, value)
        if self.accesses is not None:
            self.accesses.append(Access(address, size, False, value, None,
                                        self.layout.describe(address, size)))
        return value

    def _window_reg(self, basis: str) -> int:
        # Reading the rip slot gives the address of the next instruction, as RIP-relative addressing
        # does; reading the rflags slot gives what PUSHFQ would (no RF from the kernel's frame).
        if basis == "rip":
            return self.next_ip
        self.reg(basis)
        if basis == "rflags":
            return self.originals[basis] & ~flags.PUSHFQ_HIDDEN
        return self.originals[basis]

    def _with_own_stores(self, address: int, size: int, value: int) -> int:
        """`value` read at address..+size, overlaid with this instruction's window stores so far."""
        data = bytearray(value.to_bytes(size, "little"))
        for start, length, stored in self.window_writes:
            low, high = max(start, address), min(start + length, address + size)
            if low < high:
                data[low - address:high - address] = \
                    stored.to_bytes(length, "little")[low - start:high - start]
        return int.from_bytes(data, "little")

    def window_write(self, address: int, size: int, value: int) -> None:
        self.layout.resolve(address, size)  # a hole faults now, before anything is committed
        self.window_writes.append((address, size, value))

    # real memory -------------------------------------------------------------
    def memory_read(self, address: int, size: int) -> int:
        for start, data in reversed(self.memory_writes):
            if start <= address and address + size <= start + len(data):
                offset = address - start
                return int.from_bytes(data[offset:offset + size], "little")
        return int.from_bytes(self.machine.read_memory(address, size), "little")

    def memory_write(self, address: int, size: int, value: int) -> None:
        self.memory_writes.append((address, value.to_bytes(size, "little")))

    def memory_write_now(self, address: int, data: bytes) -> None:
        """Store to real memory at once, not at the commit: a bulk string store, whose elements
        before a fault stay done as the CPU's do (`MemoryFault` if the range is not writable)."""
        self.machine.write_memory(address, data)

    # the end of the instruction ----------------------------------------------
    def commit(self) -> None:
        if "rip" not in self.dirty:
            self.set_reg("rip", self.next_ip)
        original_flags = self.originals.get("rflags")
        for address, size, value in self.window_writes:
            if self.accesses is not None:
                before = self._peek_window(address, size)
                self.accesses.append(Access(address, size, True, before, value,
                                            self.layout.describe(address, size)))
            self._store_window(address, size, value)
        if "rflags" in self.dirty:
            self._keep_system_flags(original_flags)
        if not self.restarts and self.reg("rflags") & flags.RF:
            # The instruction completed: the CPU clears RF, which the kernel set in the faulting
            # instruction's saved rflags (left set, an instruction breakpoint on the next
            # instruction would not fire).
            self.set_reg("rflags", self.regs["rflags"] & ~flags.RF)
        if "mxcsr" in self.dirty and self.regs["mxcsr"] & ~MXCSR_WRITABLE:
            # LDMXCSR raises #GP for reserved bits; a signal return would refuse them too.
            raise GeneralProtection(f"mxcsr {self.regs['mxcsr']:#x} sets reserved bits")
        for address, data in self.memory_writes:
            self.machine.write_memory(address, data)
        written = []
        try:
            for basis in self.dirty:
                self.machine.write_register(basis, self.regs[basis])
                written.append(basis)
        except RegmapError:
            # A register the machine refuses (a selector in a signal frame): put back the ones
            # already written (rip among them), so the fault is seen where it happened.
            for basis in written:
                self.machine.write_register(basis, self.originals[basis])
            raise

    def _peek_window(self, address: int, size: int) -> int:
        value = 0
        for basis, hi, lo in self.layout.resolve(address, size):
            width = hi - lo + 1
            value = (value << width) | ((self._window_reg(basis) >> lo) & ((1 << width) - 1))
        return value

    def _store_window(self, address: int, size: int, value: int) -> None:
        for basis, hi, lo in reversed(self.layout.resolve(address, size)):
            width = hi - lo + 1
            mask = ((1 << width) - 1) << lo
            current = self.reg(basis) if basis != "rip" else self.regs.get("rip", self.next_ip)
            self.set_reg(basis, (current & ~mask) | ((value << lo) & mask))
            value >>= width

    def _keep_system_flags(self, original: int | None) -> None:
        """Only user-writable flags change, as with POPFQ in user mode."""
        if original is None:
            original = self.machine.read_register("rflags")
        new = self.regs["rflags"]
        self.regs["rflags"] = (original & ~flags.USER_WRITABLE) | (new & flags.USER_WRITABLE) \
            | flags.RESERVED_ONE


__all__ = ["Access", "Cpu", "MemoryFault"]
