"""The tail of regmap's generated signal-handler entries: Python, then wherever it says.

A handler regmap forwards a signal to (the program's own SIGSEGV, SIGFPE...) may never
return: numeric code and memory probes ``siglongjmp`` out of it.  Called from the Python
callback, it would leave the callback's frame, the GIL and the thread-state gate behind it.
So an entry calls the Python part with the handler's three arguments kept in callee-saved
registers, and the Python part returns the address of the handler to go on to (0: none):
the entry jumps there with the same arguments, nothing of regmap's left beneath it, or
returns.  `regmap.runtime.dispatch` (SIGSEGV/SIGBUS) and `regmap.runtime.trampolines`
(SIGFPE/SIGILL) end this way.
"""
from __future__ import annotations

from iced_x86 import Code, Instruction, Register

from regmap.x86.machine_code import Labels

# the handler's arguments (signo, info, ctx), kept across the call in callee-saved registers
SAVED = ((Register.RBX, Register.RDI), (Register.R12, Register.RSI), (Register.R13, Register.RDX))


def call_then_go_on(labels: Labels, call: list[Instruction]) -> list[Instruction]:
    """Instructions that, at a handler's entry (rsp 8 past a 16-byte boundary), run `call` (the
    call to the Python part) with the arguments kept, then jump to the address it returned in
    rax, with the same arguments, or return if it is 0."""
    back = labels.new()
    mov = lambda to, source: Instruction.create_reg_reg(Code.MOV_R64_RM64, to, source)  # noqa: E731
    return [*[Instruction.create_reg(Code.PUSH_R64, keep) for keep, _ in SAVED],   # rsp aligned
            *[mov(keep, argument) for keep, argument in SAVED],
            *call,
            *[mov(argument, keep) for keep, argument in SAVED],
            *[Instruction.create_reg(Code.POP_R64, keep) for keep, _ in reversed(SAVED)],
            Instruction.create_reg_reg(Code.TEST_RM64_R64, Register.RAX, Register.RAX),
            Instruction.create_branch(Code.JE_REL32_64, back),
            Instruction.create_reg(Code.JMP_RM64, Register.RAX),
            labels.at(back),
            Instruction.create(Code.RETNQ)]
