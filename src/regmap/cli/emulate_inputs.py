"""What ``regmap emulate`` starts from: registers (REG=VALUE, --random, --seed), where the code
sits (--rip) and the real memory it may touch (--memory, --stack)."""
from __future__ import annotations

import random
from typing import NamedTuple

from regmap.assembler import hex_bytes
from regmap.errors import DecodeError

ADDRESSES = 1 << 64
# What --random fills: the general registers, ymm0..15 and the status flags (each a basis
# register or bits of one).  rip, segments, mxcsr and x87 stay as given or zero; so does rsp
# with --stack (its stack is where rsp points).
RANDOM_REGISTERS = (*(f"r{n}" for n in ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di")),
                    *(f"r{n}" for n in range(8, 16)), *(f"ymm{n}" for n in range(16)),
                    "cf", "pf", "af", "zf", "sf", "of")
# --stack: STACK_SIZE zeroed bytes below rsp and a page above it (what a pop or a ret reads
# first); rsp is STACK_TOP unless given
STACK_TOP = 0x7FFF_0000
STACK_SIZE = 0x10000
STACK_ABOVE = 0x1000


class Inputs(NamedTuple):
    regs: dict[str, int]
    rip: int
    memory: dict[int, bytes]
    seed: int | None                     # with --random: the seed, given or drawn
    random: dict[str, int]               # with --random: the values it drew that were used


def read_inputs(args, layout, code_size: int) -> Inputs:
    """The starting point ``args`` describe; ValueError naming the option or word that is wrong."""
    rip = integer(args.rip, "--rip")
    if not 0 <= rip < ADDRESSES:
        raise ValueError(f"--rip {args.rip}: an address is 0 to 0xffffffffffffffff")
    given = _given_values(args.values, layout)
    seed, drawn = None, {}
    if args.random or args.seed is not None:        # a seed asks for random values
        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
        chooser = random.Random(seed)
        registers = layout.registers
        for name in RANDOM_REGISTERS:
            if name in registers:
                value = chooser.getrandbits(registers.width(name))
                if name not in given and not (name == "rsp" and args.stack):
                    drawn[name] = value
    regs = {**drawn, **given}
    memory, stack = {}, None
    for item in args.memory:
        address, data = _region(item)
        if address in memory:
            raise ValueError(f"--memory {item}: a second region at {address:#x}")
        memory[address] = data
    if args.stack:
        rsp = regs.setdefault("rsp", STACK_TOP)
        bottom, top = max(0, rsp - STACK_SIZE), min(ADDRESSES, rsp + STACK_ABOVE)
        if bottom in memory:
            raise ValueError(f"--stack ({bottom:#x}..{top:#x}) overlaps --memory at {bottom:#x}")
        stack, memory[bottom] = bottom, bytes(top - bottom)
    _check_apart([*((f"--memory at {start:#x}" if start != stack else "--stack", start, len(data))
                    for start, data in memory.items()), ("the code (--rip)", rip, code_size)])
    return Inputs(regs, rip, memory, seed, drawn)


def integer(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a number (write 0xff, 255 or 0b11)") from None


def _given_values(items: list[str], layout) -> dict[str, int]:
    registers = layout.registers
    values: dict[str, int] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise ValueError(f"{item!r}: give initial values as REG=VALUE (rax=0xff, cf=1)")
        if name not in registers or name.lower() == layout.window:
            raise ValueError(f"{item!r}: no register {name!r} in the register file")
        values[name.lower()] = integer(value, name)
    return values


def _region(item: str) -> tuple[int, bytes]:
    """``--memory ADDR=HEX``: the address and its bytes."""
    where, equals, text = item.partition("=")
    if not equals or not where or not text:
        raise ValueError(f"--memory {item}: give memory as ADDR=HEX (--memory 0x1000=48656c6c6f)")
    address = integer(where, f"--memory {item}")
    try:
        data = hex_bytes(text)
    except DecodeError:
        raise ValueError(f"--memory {item}: {text!r} is not hex bytes "
                         "(write 0011aabb, '00 11 aa bb' or 0x00,0x11)") from None
    if not 0 <= address <= ADDRESSES - len(data):
        raise ValueError(f"--memory {item}: the bytes must lie within 0 .. 0xffffffffffffffff")
    return address, data


def _check_apart(regions: list[tuple[str, int, int]]) -> None:
    """Regions (what, start, size) may not overlap: which would hold a byte two of them give?"""
    spans = sorted((start, start + size, what) for what, start, size in regions)
    for (start, end, what), (later, later_end, other) in zip(spans, spans[1:]):
        if later < end:
            raise ValueError(f"{what} ({start:#x}..{end:#x}) overlaps {other} "
                             f"({later:#x}..{later_end:#x})")
