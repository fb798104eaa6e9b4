"""Instruction semantics: one function per instruction family, keyed by mnemonic.

A semantic function takes ``(cpu, form)``: `cpu` is the instruction's view of
the machine (`regmap.x86.cpu.Cpu`), `form` the decoded instruction with its
operands bound (`regmap.x86.emulator.Form`).  Importing the family modules
fills `SEMANTICS`.
"""
from __future__ import annotations

from typing import Callable

SEMANTICS: dict[int, Callable] = {}
# String instructions share mnemonics with SSE ones (movsd, cmpsd): a table of their own.
STRING_SEMANTICS: dict[int, Callable] = {}


def semantics(*mnemonics: int, string_instruction: bool = False):
    """Register the decorated function as the semantics of `mnemonics` (iced-x86 Mnemonic values)."""
    table = STRING_SEMANTICS if string_instruction else SEMANTICS

    def register(function):
        for mnemonic in mnemonics:
            if mnemonic in table:
                raise ValueError(f"mnemonic {mnemonic} has two semantic functions")
            table[mnemonic] = function
        return function
    return register


# Mnemonics whose semantic functions handle EVEX (AVX-512) opmasks; other EVEX forms are not emulated.
EVEX_READY: set[int] = set()


def sign(value: int, width: int) -> int:
    """`value` (a width-bit pattern) as a signed integer."""
    return value - (1 << width) if value >> (width - 1) & 1 else value


def mask(width: int) -> int:
    return (1 << width) - 1


from regmap.x86.semantics import (arithmetic, bits, branch, control, data, multiply,  # noqa: E402,F401
                                  packed, shift, shuffle, stack, string, vector)
