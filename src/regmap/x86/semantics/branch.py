"""JMP and CALL through a memory operand: `jmp [0x8]` jumps to rcx.

The relative forms, Jcc, LOOP, JRCXZ, RET and NOP never touch the window, so no
fault brings them here; `regmap.emulate` runs them when it executes a snippet
(a relative branch's operand is its target address).
"""
from iced_x86 import Code, Mnemonic as M

from regmap.x86.flags import ZF
from regmap.x86.semantics import mask, semantics
from regmap.x86.semantics.stack import push_value

_ECX_LOOPS = frozenset({Code.LOOP_REL8_64_ECX, Code.LOOPE_REL8_64_ECX, Code.LOOPNE_REL8_64_ECX})
_JCC = tuple(getattr(M, "J" + cc) for cc in
             ("O", "NO", "B", "AE", "E", "NE", "BE", "A", "S", "NS", "P", "NP", "L", "GE", "LE", "G"))


@semantics(M.JMP)
def jmp(cpu, form):
    target, = form.ops
    cpu.jump(target.read(cpu))


@semantics(M.CALL)
def call(cpu, form):
    target, = form.ops
    destination = target.read(cpu)
    push_value(cpu, form, form.next_ip, 8)
    cpu.jump(destination)


@semantics(*_JCC)
def jcc(cpu, form):
    target, = form.ops
    if form.condition(cpu):
        cpu.jump(target.read(cpu))


@semantics(M.LOOP, M.LOOPE, M.LOOPNE)
def loop(cpu, form):
    """Decrement the count register (rcx; ecx with 67h) and branch while it is not zero (and,
    for LOOPE/LOOPNE, while ZF is set/clear)."""
    target, = form.ops
    count = form.register("ecx" if form.instruction.code in _ECX_LOOPS else "rcx")
    left = (count.read(cpu) - 1) & count.mask
    count.write(cpu, left)
    if left and (form.mnemonic == M.LOOP or bool(cpu.flag(ZF)) == (form.mnemonic == M.LOOPE)):
        cpu.jump(target.read(cpu))


@semantics(M.JRCXZ, M.JECXZ)
def jrcxz(cpu, form):
    target, = form.ops
    if not form.register("rcx" if form.mnemonic == M.JRCXZ else "ecx").read(cpu):
        cpu.jump(target.read(cpu))


@semantics(M.RET)
def ret(cpu, form):
    """Near return: pop rip, then release an immediate count of bytes."""
    rsp = cpu.reg("rsp")
    destination = form.read_memory(cpu, rsp, 8)
    release = form.ops[0].read(cpu) if form.ops else 0
    cpu.set_reg("rsp", (rsp + 8 + release) & mask(64))
    cpu.jump(destination)


@semantics(M.NOP)
def nop(cpu, form):
    """NOP, including the hinting `nop dword [rax]`, which names memory but never reads it."""
