"""The machine an instruction runs against: registers by basis name, real memory.

Every backend (pure, in-process, traced) implements this protocol; the
emulator never knows which one it is talking to.

Basis register names are those of the shipped ``amd64`` register file:
``rax``..``r15``, ``rip``, ``rflags``, ``zmm0``..``zmm31`` (512 bits; a
backend without AVX-512 keeps the bits above what the CPU has at zero),
``k0``..``k7``, ``mxcsr``, ``fs_base``, ``gs_base``, the segment selectors.
Values are unsigned ints of the register's full width.

The page-0 window is *not* the machine's business: the emulator redirects
window accesses through the layout to registers before memory is asked.
"""
from __future__ import annotations

from typing import Protocol


class Machine(Protocol):
    # Optional: ``namespace``, an object whose attribute ``rax`` reads and writes basis register
    # rax (every basis register the machine has).  The emulator's compiled fast paths use it:
    # an attribute access costs less than a method call.  Without it they go through the methods.

    def read_register(self, basis: str) -> int:
        """The full value of basis register ``basis``."""

    def write_register(self, basis: str, value: int) -> None:
        """Set basis register ``basis`` to ``value`` (already masked to its width)."""

    def read_memory(self, address: int, size: int) -> bytes:
        """``size`` bytes of real memory at ``address``; raise ``MemoryFault`` if unreadable."""

    def write_memory(self, address: int, data: bytes) -> None:
        """Store ``data`` at ``address``; raise ``MemoryFault`` if unwritable."""

    def fetch(self, address: int) -> bytes:
        """Up to 15 instruction bytes at ``address``; fewer (never a fault) near an unreadable page."""
