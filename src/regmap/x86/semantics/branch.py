"""JMP and CALL through a memory operand: `jmp [0x8]` jumps to rcx."""
from iced_x86 import Mnemonic as M

from regmap.x86.semantics import semantics
from regmap.x86.semantics.stack import push_value


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
