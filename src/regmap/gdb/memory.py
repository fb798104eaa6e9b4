"""gdb's view of a stopped program's memory: page 0 through the layout, the rest as it is.

Page 0 is not memory: a read of window bytes is the registers the layout places there
(``x/16gx 0`` shows rax..r15 with the default layout) and a write sets them, as the
program's own access would.  Bytes the layout leaves as holes, and page 0 past the window,
read as an error, as unmapped memory does.  Everything else goes through
``/proc/PID/mem``, which reads and writes any mapped page whatever its protection (as
ptrace's PEEK/POKE do): that is how breakpoints get into read-only code.
"""
from __future__ import annotations

import os

from regmap.errors import RegmapError

PAGE = 4096


class Unreadable(Exception):
    """What gdb is told as an error reply."""


class Memory:
    """The memory of process ``pid`` as gdb sees it; ``layout`` maps page 0."""

    def __init__(self, layout):
        self.layout = layout
        self.pid = 0
        self._fd = -1

    def attach(self, pid: int) -> None:
        """Use ``pid``'s address space (again, after an exec: the old file is stale)."""
        self.close()
        self.pid = pid

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def _file(self) -> int:
        if self._fd < 0:
            try:
                self._fd = os.open(f"/proc/{self.pid}/mem", os.O_RDWR | os.O_CLOEXEC)
            except OSError as error:
                raise Unreadable(f"/proc/{self.pid}/mem: {error.strerror}") from None
        return self._fd

    # -- page 0 --------------------------------------------------------------------------------
    def _bases(self, address: int, size: int):
        if not self.layout.contains(address, size):
            raise Unreadable(f"{address:#x}+{size}: page 0 past the {self.layout.size}-byte window")
        try:
            return {piece[0] for piece in self.layout.resolve(address, size)}
        except RegmapError as error:        # a hole
            raise Unreadable(str(error)) from None

    def read_window(self, machine, address: int, size: int) -> bytes:
        values = {basis: machine.read_register(basis) for basis in self._bases(address, size)}
        return self.layout.read(address, size, values).to_bytes(size, "little")

    def write_window(self, machine, address: int, data: bytes) -> None:
        values = {basis: machine.read_register(basis) for basis in self._bases(address, len(data))}
        before = dict(values)
        self.layout.write(address, len(data), int.from_bytes(data, "little"), values)
        for basis, value in values.items():
            if value != before[basis]:
                machine.write_register(basis, value)
        machine.store()

    # -- the rest ------------------------------------------------------------------------------
    def read(self, machine, address: int, size: int) -> bytes:
        if address < PAGE:
            return self.read_window(machine, address, size)
        try:
            data = os.pread(self._file(), size, address)
        except (OSError, OverflowError) as error:
            raise Unreadable(f"{address:#x}: {getattr(error, 'strerror', error)}") from None
        if not data:
            raise Unreadable(f"{address:#x}: not mapped")
        return data             # gdb accepts a shorter read: the rest is unmapped

    def write(self, machine, address: int, data: bytes) -> None:
        if address < PAGE:
            self.write_window(machine, address, data)
            return
        try:
            written = os.pwrite(self._file(), data, address)
        except (OSError, OverflowError) as error:
            raise Unreadable(f"{address:#x}: {getattr(error, 'strerror', error)}") from None
        if written != len(data):
            raise Unreadable(f"{address + written:#x}: not mapped")
