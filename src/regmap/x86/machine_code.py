"""Machine code regmap generates at run time: assembled with iced-x86, run from a private page.

Three parts of regmap need a few instructions no Python can be: the native
engine's stub (`regmap.x86.native.stub`), the in-process copy routine that
recovers its own faults (`regmap.runtime.usercopy`) and the tracer's system
call batches (`regmap.trace.batch`).  They share what is here: branch labels,
assembly at an address, and a page written while writable and then made read
+ execute, never both writable and executable.
"""
from __future__ import annotations

import ctypes
import os

from iced_x86 import BlockEncoder, Code, Decoder, Instruction, MemoryOperand

PAGE = 4096
_PROT_READ, _PROT_WRITE, _PROT_EXEC = 1, 2, 4
_MAP_PRIVATE, _MAP_ANONYMOUS = 0x02, 0x20

_libc = ctypes.CDLL(None, use_errno=True)
_mmap, _mprotect, _munmap = _libc.mmap, _libc.mprotect, _libc.munmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                  ctypes.c_long)
_mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)


class Labels:
    """Branch targets for BlockEncoder: an instruction whose ip is the label's number."""

    def __init__(self):
        self.count = 0

    def new(self) -> int:
        self.count += 1
        return self.count

    @staticmethod
    def at(label: int) -> Instruction:
        mark = Instruction.create(Code.NOPD)
        mark.ip = label
        return mark


def assemble(instructions: list[Instruction], address: int) -> bytes:
    """The bytes of `instructions` placed at `address` (branches to `Labels` resolved)."""
    encoder = BlockEncoder(64)
    encoder.add_many(instructions)
    return encoder.encode(address)


def locked(instruction: Instruction) -> Instruction:
    """`instruction` with a LOCK prefix."""
    instruction.has_lock_prefix = True
    return instruction


def based(base, displacement: int = 0) -> MemoryOperand:
    """``[base + displacement]``, the displacement's size left to the encoder (8 bits, or none)."""
    return MemoryOperand(base, displ=displacement, displ_size=1 if displacement else 0)


def label_addresses(instructions: list[Instruction], code: bytes, address: int) -> dict[int, int]:
    """Where each `Labels` mark among ``instructions`` landed in ``code`` (their assembly at
    ``address``).  BlockEncoder returns only bytes and may shorten branches, so the bytes are
    decoded back, one instruction for each one given (a mark is a one-byte NOP): this also checks
    that the code decodes back to as many instructions as were assembled."""
    decoded = list(Decoder(64, code, ip=address))
    if len(decoded) != len(instructions) or any(d.code == Code.INVALID for d in decoded):
        raise ValueError(f"{len(instructions)} instructions assembled, {len(decoded)} decoded back")
    return {given.ip: got.ip for given, got in zip(instructions, decoded)
            if given.code == Code.NOPD and given.ip}


def code_page(generate, size: int = PAGE) -> int:
    """A private mapping of `size` bytes holding ``generate(base)``: written while read + write,
    then made read + execute.  OSError if the kernel refuses either step (a policy that forbids
    making a page executable), with nothing left mapped."""
    base = _mmap(None, size, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0)
    if base in (None, ctypes.c_void_p(-1).value):
        error = ctypes.get_errno()
        raise OSError(error, f"mmap of a code page: {os.strerror(error)}")
    try:
        code = generate(base)
        if len(code) > size:
            raise ValueError(f"{len(code)} bytes of code for a {size}-byte mapping")
        ctypes.memmove(base, code, len(code))
        if _mprotect(base, size, _PROT_READ | _PROT_EXEC) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"mprotect of a code page to read + execute: {os.strerror(error)}")
    except BaseException:
        _munmap(base, size)
        raise
    return base
