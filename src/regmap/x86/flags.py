"""RFLAGS: bit positions, the arithmetic flag functions, condition codes.

Every instruction family computes its flags here, named after the SDM's
pseudo-code, so each rule is written once.

Undefined flags: where the SDM leaves a flag undefined, CPUs differ, and
regmap gives what the host CPU gives: the semantic functions compute what the
SDM defines here and take the undefined flags from the host's own run of the
instruction (`regmap.x86.undefined`), joined by `settled`.  Where no machine
code can run (the pure backend off Linux x86-64) the update a function
computed stands: undefined flags left unchanged, except AF after the logical
instructions, which is cleared (and the rotates' OF: `regmap.x86.semantics.shift`).
The functions below return ``(mask, bits)``: the flags the instruction
defines and their new values.
"""
from __future__ import annotations

from regmap.places import AC, AF, CF, DF, ID, IF, NT, OF, PF, RF, SF, TF, VM, ZF  # noqa: F401 - re-exported

STATUS = CF | PF | AF | ZF | SF | OF
# What POPFQ can change at CPL 3 (IOPL 0): a write to the rflags slot is one.
USER_WRITABLE = STATUS | TF | DF | NT | AC | ID
# Bit 1 of RFLAGS always reads as 1.
RESERVED_ONE = 1 << 1
# What PUSHFQ never shows: the kernel sets RF in a faulting instruction's saved rflags, and VM is
# clear in 64-bit mode.  A read of the rflags slot is a PUSHFQ.  An emulated instruction that
# completes clears RF, as the CPU does (`Cpu.commit`, the compiled fast paths); one that stops
# part-way to be restarted keeps it.
PUSHFQ_HIDDEN = RF | VM
# rflags & CLEAR_RF: the flags after an instruction completes (the compiled fast paths' form).
CLEAR_RF = ~RF & (1 << 64) - 1

# PF is set when the low byte of the result has an even number of 1 bits.
PARITY = tuple(PF if bin(byte).count("1") % 2 == 0 else 0 for byte in range(256))


def szp(result: int, width: int) -> int:
    """SF, ZF and PF of a `width`-bit result (already masked)."""
    return ((result >> (width - 1)) & 1) * SF | (0 if result else ZF) | PARITY[result & 0xFF]


def add(a: int, b: int, result: int, width: int) -> tuple[int, int]:
    """ADD/ADC/INC family: `result` is the unmasked sum."""
    masked = result & ((1 << width) - 1)
    overflow = ((a ^ masked) & (b ^ masked)) >> (width - 1) & 1
    return STATUS, ((result >> width) & 1) * CF | overflow * OF \
        | ((a ^ b ^ masked) & 0x10) | szp(masked, width)


def sub(a: int, b: int, borrow: int, width: int) -> tuple[int, int]:
    """SUB/SBB/CMP/NEG/DEC family: a - b - borrow."""
    masked = (a - b - borrow) & ((1 << width) - 1)
    overflow = ((a ^ b) & (a ^ masked)) >> (width - 1) & 1
    carry = a < b + borrow
    return STATUS, carry * CF | overflow * OF | ((a ^ b ^ masked) & 0x10) | szp(masked, width)


def logic(result: int, width: int) -> tuple[int, int]:
    """AND/OR/XOR/TEST: CF and OF cleared, AF cleared (see the policy above)."""
    return STATUS, szp(result, width)


def settled(update: tuple[int, int], undefined: int, host) -> tuple[int, int]:
    """`update` with the flags in `undefined` as the host CPU left them: `host` is the
    `regmap.x86.undefined.Answer` of the instruction's run on the host, or None (no machine
    code here), and then `update` stands as computed."""
    if host is None:
        return update
    mask, bits = update
    return mask | undefined, (bits & ~undefined) | (host.rflags & undefined)


def without(flags: tuple[int, int], kept: int) -> tuple[int, int]:
    """The same update, leaving the flags in `kept` alone (INC/DEC keep CF)."""
    mask, bits = flags
    return mask & ~kept, bits & ~kept


# Condition codes, by iced-x86's ConditionCode numbering:
# none o no b ae e ne be a s ns p np l ge le g
def _sf_ne_of(f: int) -> bool:
    return bool(f & SF) != bool(f & OF)


CONDITIONS = (
    None,
    lambda f: bool(f & OF),
    lambda f: not f & OF,
    lambda f: bool(f & CF),
    lambda f: not f & CF,
    lambda f: bool(f & ZF),
    lambda f: not f & ZF,
    lambda f: bool(f & (CF | ZF)),
    lambda f: not f & (CF | ZF),
    lambda f: bool(f & SF),
    lambda f: not f & SF,
    lambda f: bool(f & PF),
    lambda f: not f & PF,
    _sf_ne_of,
    lambda f: not _sf_ne_of(f),
    lambda f: bool(f & ZF) or _sf_ne_of(f),
    lambda f: not f & ZF and not _sf_ne_of(f),
)
