"""MOVS STOS LODS CMPS SCAS, with REP/REPE/REPNE: `rep movsb` from 0 copies the register file out.

Each element goes through the window or real memory on its own, so a copy
may start in the window and run on into real memory.  Within the window the
instruction sees the register image as it began plus its own stores (an
overlapping copy replicates, as memmove would not), and its stores land on
the registers last, after the pointers and count: the rule of every
instruction (`regmap.x86.cpu`).  The whole repeat runs as one step.
"""
from iced_x86 import Mnemonic as M

from regmap.x86 import flags
from regmap.x86.semantics import semantics

_COUNTERS = {64: "rcx", 32: "ecx"}


def _repeat(cpu, form, element) -> None:
    """Run `element` once, or rCX times under a repeat prefix; `element` returns the ZF it leaves
    for REPE/REPNE to test (None for instructions that ignore it)."""
    if form.repeat is None:
        element()
        return
    counter = form.register(_COUNTERS[_address_width(form)])
    remaining = counter.read(cpu)
    while remaining:
        zero = element()
        remaining -= 1
        counter.write(cpu, remaining)
        if zero is not None and (zero != (form.repeat == "rep")):
            break


def _address_width(form) -> int:
    pointer = next(op for op in form.ops if op.is_memory).pointer
    return pointer.width


def _backwards(cpu) -> bool:
    return bool(cpu.flag(flags.DF))


@semantics(M.MOVSB, M.MOVSW, M.MOVSD, M.MOVSQ, string_instruction=True)
def movs(cpu, form):
    dest, source = form.ops

    def element():
        dest.write(cpu, source.read(cpu))
        backwards = _backwards(cpu)
        dest.advance(cpu, backwards)
        source.advance(cpu, backwards)
    _repeat(cpu, form, element)


@semantics(M.STOSB, M.STOSW, M.STOSD, M.STOSQ, string_instruction=True)
def stos(cpu, form):
    dest, value = form.ops

    def element():
        dest.write(cpu, value.read(cpu))
        dest.advance(cpu, _backwards(cpu))
    _repeat(cpu, form, element)


@semantics(M.LODSB, M.LODSW, M.LODSD, M.LODSQ, string_instruction=True)
def lods(cpu, form):
    dest, source = form.ops

    def element():
        dest.write(cpu, source.read(cpu))
        source.advance(cpu, _backwards(cpu))
    _repeat(cpu, form, element)


@semantics(M.CMPSB, M.CMPSW, M.CMPSD, M.CMPSQ, M.SCASB, M.SCASW, M.SCASD, M.SCASQ, string_instruction=True)
def compare_string(cpu, form):
    """CMPS compares [rsi] with [rdi]; SCAS the accumulator with [rdi]. Flags as CMP."""
    first, second = form.ops

    def element():
        a, b = first.read(cpu), second.read(cpu)
        cpu.set_flags(flags.sub(a, b, 0, second.width))
        backwards = _backwards(cpu)
        for op in (first, second):
            if op.is_memory:
                op.advance(cpu, backwards)
        return a == b
    _repeat(cpu, form, element)
