"""The native engine's machine code, generated with iced-x86 into the region's code page.

- prologue: save the host's callee-saved registers, rsp, MXCSR and FCW; block the
  asynchronous signals; unless the run stays on the host's stack (B_SIGNALS bit 0,
  a form run for the emulator), put up the alternate stack (when the thread is not
  on one already: a signal handler's) and take rsp from B_RSP; route the fault
  signals whose bits B_SIGNALS sets (SIGSEGV/SIGBUS/SIGFPE/SIGILL/SIGTRAP) to the
  handler (raw rt_sigaction, the old actions kept); load x87/SSE (FXRSTOR), the
  vector and opmask registers, MXCSR, rflags and the GPRs; jump to the instruction.
- epilogue (the instruction jumps there): save it all back, then `restore`.
- handler: a fault of the thread running the stub (same fs:[0], the TCB) is
  recorded (signal, si_code, si_addr, rip) and the stub abandoned through
  `restore`; another thread's fault goes to the handler that was installed
  before, or, if that was the default action or SIG_IGN, the old action is put
  back and the fault repeats to act as it would have.
- restore: put back the caller's rflags (less DF and AC, which the ABI wants clear: ID and NT
  as they were, which a signal handler's sigreturn does not take from the frame), the signal
  actions routed, the alternate stack and the mask, then the ABI's state (empty x87 stack,
  the host's control words),
  and return to the caller.

The parts are one block of instructions, their entries labels, assembled in one pass
(`generate`); where each entry landed is read back from the bytes, and the instruction slot
follows the last part.  Nothing has a fixed room: the prologue loads 32 zmm and 8 opmask
registers on an AVX-512 host and 16 xmm on an SSE-only one.  `generate` depends only on a
`Profile`'s features, so the tests generate it for every profile on any host.
"""
from __future__ import annotations

from iced_x86 import Code, Instruction, MemoryOperand, Register

from regmap.x86.host import Profile
from regmap.x86.machine_code import Labels, assemble, label_addresses
from regmap.x86.native.region import (
    B_ACTION, B_ALTSET, B_ALTSTACK, B_FAULT, B_FX, B_GPR, B_HOST, B_HOST_FCW, B_HOST_MXCSR, B_K, B_MASK,
    B_MXCSR, B_OLDACT, B_OLDALT, B_OLDMASK, B_OWNER, B_RFLAGS, B_RSP, B_SIGNALS, B_ZMM, FAULT_SIGNALS, HOST_STACK,
    B_HOST_RFLAGS, HOST_RFLAGS_CLEARED, RFLAGS_FIXED, SA_ONSTACK)

GPR_REGISTERS = (Register.RAX, Register.RCX, Register.RDX, Register.RBX, Register.RSP, Register.RBP,
                 Register.RSI, Register.RDI, Register.R8, Register.R9, Register.R10, Register.R11,
                 Register.R12, Register.R13, Register.R14, Register.R15)
_HOST_SAVED = (Register.RBX, Register.RBP, Register.R12, Register.R13, Register.R14, Register.R15)
_UC_MCONTEXT_RIP = 40 + 16 * 8     # ucontext_t: flags, link, stack_t(24), then gregs; REG_RIP = 16
SYS_RT_SIGACTION, SYS_RT_SIGPROCMASK, SYS_RT_SIGRETURN, SYS_SIGALTSTACK = 13, 14, 15, 131
SIG_SETMASK = 2


def _abs(address: int) -> MemoryOperand:
    """``[address]`` as an absolute (SIB, no base, no index) 64-bit-mode operand."""
    return MemoryOperand(displ=address, displ_size=8)


def _mov(reg, value: int) -> Instruction:
    return Instruction.create_reg_i32(Code.MOV_R32_IMM32, reg, value)


def _syscall(number: int, *args: int) -> list[Instruction]:
    """A raw system call with up to four 32-bit immediate arguments (rdi, rsi, rdx, r10)."""
    ins = [_mov(Register.EAX, number)]
    for reg, value in zip((Register.EDI, Register.ESI, Register.EDX, Register.R10D), args):
        ins.append(_mov(reg, value))
    return ins + [Instruction.create(Code.SYSCALL)]


ENTRIES = ("prologue", "epilogue", "handler", "restore", "restorer", "insn")
MAX_BODY = 64       # the instruction slot: one instruction (at most 15 bytes) and its jump back


class _Entries(dict):
    """Entry name -> its label, while the stub is generated."""

    def __init__(self, labels: Labels):
        super().__init__((name, labels.new()) for name in ENTRIES)
        self.labels = labels


def _vector_moves(p: Profile, block: int, load: bool) -> list[Instruction]:
    out = []
    width = p.vector_width
    moves = {512: (Register.ZMM0, Code.EVEX_VMOVDQU64_ZMM_K1Z_ZMMM512, Code.EVEX_VMOVDQU64_ZMMM512_K1Z_ZMM),
             256: (Register.YMM0, Code.VEX_VMOVDQU_YMM_YMMM256, Code.VEX_VMOVDQU_YMMM256_YMM),
             128: (Register.XMM0, Code.MOVDQU_XMM_XMMM128, Code.MOVDQU_XMMM128_XMM)}
    first, load_code, store_code = moves[width]
    for i in range(p.vector_count):
        slot = _abs(block + B_ZMM + 64 * i)
        out.append(Instruction.create_reg_mem(load_code, first + i, slot) if load
                   else Instruction.create_mem_reg(store_code, slot, first + i))
    if width == 512:
        wide = p.wide_opmasks
        for i in range(8):
            slot = _abs(block + B_K + 8 * i)
            if load:
                out.append(Instruction.create_reg_mem(
                    Code.VEX_KMOVQ_KR_KM64 if wide else Code.VEX_KMOVW_KR_KM16, Register.K0 + i, slot))
            else:
                out.append(Instruction.create_mem_reg(
                    Code.VEX_KMOVQ_M64_KR if wide else Code.VEX_KMOVW_M16_KR, slot, Register.K0 + i))
    return out


def _signal_setup(b: int, labels: Labels) -> list[Instruction]:
    plain, go, stay = labels.new(), labels.new(), labels.new()
    ins = _syscall(SYS_RT_SIGPROCMASK, SIG_SETMASK, b + B_MASK, b + B_OLDMASK, 8)
    ins += [Instruction.create_mem_i32(Code.TEST_RM32_IMM32, _abs(b + B_SIGNALS), HOST_STACK),
            Instruction.create_branch(Code.JNE_REL32_64, stay)]
    ins += _syscall(SYS_SIGALTSTACK, b + B_ALTSTACK, b + B_OLDALT)
    ins += [Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(b + B_ALTSET), Register.RAX),
            Instruction.create_reg_reg(Code.TEST_RM64_R64, Register.RAX, Register.RAX),
            Instruction.create_branch(Code.JNE_REL32_64, plain),
            # on our alternate stack: the handler runs there
            Instruction.create_mem_i32(Code.OR_RM64_IMM32, _abs(b + B_ACTION + 8), SA_ONSTACK),
            Instruction.create_branch(Code.JMP_REL32_64, go),
            # already on a handler's alternate stack (EPERM): the handler runs on the scratch stack,
            # which rsp points into whenever the engine runs for the emulator
            labels.at(plain),
            Instruction.create_mem_i32(Code.AND_RM64_IMM32, _abs(b + B_ACTION + 8), ~SA_ONSTACK),
            Instruction.create_branch(Code.JMP_REL32_64, go),
            # the instruction runs on the host's stack and the handler below it (the runtime's
            # alternate stack in-process), never on a thread's alternate stack that the handler,
            # abandoning its frame without sigreturn, could leave disarmed (SS_AUTODISARM)
            labels.at(stay),
            Instruction.create_mem_i32(Code.MOV_RM64_IMM32, _abs(b + B_ALTSET), 1),     # nothing to put back
            Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RAX, _abs(b + B_HOST + 0x30)),
            Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(b + B_RSP), Register.RAX),
            Instruction.create_mem_i32(Code.AND_RM64_IMM32, _abs(b + B_ACTION + 8), ~SA_ONSTACK),
            labels.at(go)]
    for sig in FAULT_SIGNALS:
        ins += _if_routed(b, sig, labels, _syscall(SYS_RT_SIGACTION, sig, b + B_ACTION, b + B_OLDACT + 32 * sig, 8))
    return ins


def _if_routed(b: int, sig: int, labels: "Labels", body: list[Instruction]) -> list[Instruction]:
    """``body`` run only if this run routes ``sig`` to the handler (its bit in B_SIGNALS)."""
    skip = labels.new()
    return [Instruction.create_mem_i32(Code.TEST_RM32_IMM32, _abs(b + B_SIGNALS), 1 << sig),
            Instruction.create_branch(Code.JE_REL32_64, skip), *body, labels.at(skip)]


def _prologue(p: Profile, b: int, e: _Entries) -> list[Instruction]:
    ins = [Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(b + B_HOST + 8 * i), reg)
           for i, reg in enumerate(_HOST_SAVED)]
    ins.append(Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(b + B_HOST + 0x30), Register.RSP))
    ins.append(Instruction.create(Code.PUSHFQ))             # the caller's ID and NT, for `restore`
    ins.append(Instruction.create_mem(Code.POP_RM64, _abs(b + B_HOST_RFLAGS)))
    ins.append(Instruction.create_mem_i32(Code.AND_RM64_IMM32, _abs(b + B_HOST_RFLAGS),
                                          ~HOST_RFLAGS_CLEARED))
    ins.append(Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RAX,
                                          MemoryOperand(displ=0, displ_size=8, seg=Register.FS)))
    ins.append(Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(b + B_OWNER), Register.RAX))
    ins.append(Instruction.create_mem_i32(Code.MOV_RM64_IMM32, _abs(b + B_FAULT), 0))     # no fault yet
    ins.append(Instruction.create_mem(Code.STMXCSR_M32, _abs(b + B_HOST_MXCSR)))
    ins.append(Instruction.create_mem(Code.FNSTCW_M2BYTE, _abs(b + B_HOST_FCW)))
    ins += _signal_setup(b, e.labels)
    ins.append(Instruction.create_mem(Code.FXRSTOR64_M512BYTE, _abs(b + B_FX)))
    ins += _vector_moves(p, b, load=True)
    ins.append(Instruction.create_mem(Code.LDMXCSR_M32, _abs(b + B_MXCSR)))
    ins.append(Instruction.create_mem(Code.PUSH_RM64, _abs(b + B_RFLAGS)))
    ins.append(Instruction.create(Code.POPFQ))
    # from here on no instruction may touch the flags
    ins.append(Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RSP, _abs(b + B_RSP)))
    for i, reg in enumerate(GPR_REGISTERS):
        if reg != Register.RSP:
            ins.append(Instruction.create_reg_mem(Code.MOV_R64_RM64, reg, _abs(b + B_GPR + 8 * i)))
    ins.append(Instruction.create_branch(Code.JMP_REL32_64, e["insn"]))
    return ins


def _epilogue(p: Profile, b: int, e: _Entries) -> list[Instruction]:
    ins = [Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(b + B_GPR + 8 * i), reg)
           for i, reg in enumerate(GPR_REGISTERS)]
    ins.append(Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RSP, _abs(b + B_HOST + 0x30)))
    ins.append(Instruction.create(Code.PUSHFQ))
    ins.append(Instruction.create_mem(Code.POP_RM64, _abs(b + B_RFLAGS)))
    ins.append(Instruction.create_i32(Code.PUSHQ_IMM8, RFLAGS_FIXED))    # AC off before the stores
    ins.append(Instruction.create(Code.POPFQ))
    ins += _vector_moves(p, b, load=False)
    ins.append(Instruction.create_mem(Code.STMXCSR_M32, _abs(b + B_MXCSR)))
    ins.append(Instruction.create_mem(Code.FXSAVE64_M512BYTE, _abs(b + B_FX)))
    ins.append(Instruction.create_branch(Code.JMP_REL32_64, e["restore"]))
    return ins


def _restore(p: Profile, b: int, e: _Entries) -> list[Instruction]:
    labels = e.labels
    kept = labels.new()
    # the caller's rflags (DF and AC clear): the ID and NT a signal handler's sigreturn keeps
    ins = [Instruction.create_mem(Code.PUSH_RM64, _abs(b + B_HOST_RFLAGS)), Instruction.create(Code.POPFQ)]
    for sig in FAULT_SIGNALS:
        ins += _if_routed(b, sig, labels, _syscall(SYS_RT_SIGACTION, sig, b + B_OLDACT + 32 * sig, 0, 8))
    ins += [Instruction.create_mem_i32(Code.CMP_RM64_IMM8, _abs(b + B_ALTSET), 0),
            Instruction.create_branch(Code.JNE_REL32_64, kept)]
    ins += _syscall(SYS_SIGALTSTACK, b + B_OLDALT, 0)
    ins.append(labels.at(kept))
    ins += _syscall(SYS_RT_SIGPROCMASK, SIG_SETMASK, b + B_OLDMASK, 0, 8)
    ins += [Instruction.create_mem(Code.LDMXCSR_M32, _abs(b + B_HOST_MXCSR)),
            Instruction.create(Code.FNINIT),
            Instruction.create_mem(Code.FLDCW_M2BYTE, _abs(b + B_HOST_FCW))]
    ins += [Instruction.create_reg_mem(Code.MOV_R64_RM64, reg, _abs(b + B_HOST + 8 * i))
            for i, reg in enumerate(_HOST_SAVED)]
    if p.vector_width >= 256:
        ins.append(Instruction.create(Code.VEX_VZEROUPPER))
    ins.append(Instruction.create(Code.RETNQ))
    return ins


def _handler(p: Profile, b: int, e: _Entries) -> list[Instruction]:
    """``void handler(int sig, siginfo_t *info, ucontext_t *uc)``."""
    f = b + B_FAULT
    labels = e.labels
    foreign, default, drop = labels.new(), labels.new(), labels.new()
    ins = [
        Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RAX, MemoryOperand(displ=0, displ_size=8, seg=Register.FS)),
        Instruction.create_reg_mem(Code.CMP_R64_RM64, Register.RAX, _abs(b + B_OWNER)),
        Instruction.create_branch(Code.JNE_REL32_64, foreign),
        Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(f + 0x08), Register.RDI),
        Instruction.create_reg_mem(Code.MOV_R32_RM32, Register.EAX, MemoryOperand(Register.RSI, displ=8, displ_size=1)),
        Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(f + 0x10), Register.RAX),
        Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RAX, MemoryOperand(Register.RSI, displ=16, displ_size=1)),
        Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(f + 0x18), Register.RAX),
        Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RAX,
                                   MemoryOperand(Register.RDX, displ=_UC_MCONTEXT_RIP, displ_size=8)),
        Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(f + 0x20), Register.RAX),
        Instruction.create_mem_i32(Code.MOV_RM64_IMM32, _abs(f), 1),
        Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RSP, _abs(b + B_HOST + 0x30)),
        Instruction.create_branch(Code.JMP_REL32_64, e["restore"]),
        labels.at(foreign),
        # another thread faulted: the action its signal had before
        Instruction.create_reg_reg(Code.MOV_R32_RM32, Register.ECX, Register.EDI),
        Instruction.create_reg_i32(Code.CMP_RM32_IMM8, Register.ECX, max(FAULT_SIGNALS)),
        Instruction.create_branch(Code.JA_REL32_64, drop),
        Instruction.create_reg_i32(Code.SHL_RM64_IMM8, Register.RCX, 5),
        Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RAX,
                                   MemoryOperand(Register.RCX, displ=b + B_OLDACT, displ_size=8)),
        Instruction.create_reg_i32(Code.CMP_RM64_IMM8, Register.RAX, 1),
        Instruction.create_branch(Code.JBE_REL32_64, default),
        Instruction.create_reg(Code.JMP_RM64, Register.RAX),
        labels.at(default),
        # SIG_DFL or SIG_IGN: put it back and return; the fault repeats and acts as usual
        Instruction.create_reg_mem(Code.LEA_R64_M, Register.RSI,
                                   MemoryOperand(Register.RCX, displ=b + B_OLDACT, displ_size=8)),
        Instruction.create_reg_reg(Code.XOR_R32_RM32, Register.EDX, Register.EDX),
        _mov(Register.R10D, 8),
        _mov(Register.EAX, SYS_RT_SIGACTION),
        Instruction.create(Code.SYSCALL),
        labels.at(drop),
        Instruction.create(Code.RETNQ),
    ]
    return ins


def _restorer(p: Profile, b: int, e: _Entries) -> list[Instruction]:
    """The handler's sa_restorer (only another thread's ignored fault returns through it)."""
    return _syscall(SYS_RT_SIGRETURN)


_PARTS = (("prologue", _prologue), ("epilogue", _epilogue), ("handler", _handler), ("restore", _restore),
          ("restorer", _restorer))


def generate(p: Profile, block: int, code: int) -> tuple[bytes, dict[str, int]]:
    """The stub for a CPU with ``p``'s features, its state block at ``block``, assembled at
    ``code``: its bytes and the address of each entry (`ENTRIES`; ``insn``, the instruction
    slot, just after the bytes)."""
    e = _Entries(Labels())
    ins: list[Instruction] = []
    for name, part in _PARTS:
        ins.append(e.labels.at(e[name]))
        ins += part(p, block, e)
    ins.append(e.labels.at(e["insn"]))
    blob = assemble(ins, code)
    at = label_addresses(ins, blob, code)
    return blob[:-1], {name: at[label] for name, label in e.items()}       # the slot's own mark dropped


def install(r, p: Profile) -> dict[str, int]:
    """Generate the stub into region ``r``'s code room; the entries.  OSError if it does not fit
    (with room for the instruction slot)."""
    from regmap.x86.native.region import CODE_SIZE
    blob, entries = generate(p, r.block, r.code)
    if len(blob) + MAX_BODY > CODE_SIZE:
        raise OSError(f"the native engine's code for {p.describe()} is {len(blob)} bytes; with its "
                      f"{MAX_BODY}-byte instruction slot it does not fit in {CODE_SIZE}")
    r.write_code(0, blob)
    return entries
