"""The engine's low region: a shadow page, a state block, a scratch stack and generated code.

One private RWX mapping at ``REGION_BASE``, placed low so every save and restore
in the stub can use ``[disp32]`` absolute addressing with no register, and so a
window operand moves onto the shadow page by a 32-bit displacement:

==============  =========================================================
offset          contents
==============  =========================================================
0x00000-0x00fff guard page (no access)
0x01000-0x01fff shadow page: the 4096-byte window image
0x02000-0x02fff guard page
0x03000-0x03fff state block: GPRs, rflags, mxcsr, k0-k7, host slots,
                fault record, chained handlers, zmm0-zmm31, FXSAVE area
0x04000-0x07fff scratch stack (``STACK_TOP`` leaves room for a signal frame)
0x08000-0x08fff guard page
0x09000-0x09fff code: prologue, epilogue, fault handler, the instruction
0x0a000-0x11fff alternate signal stack for the fault handler
==============  =========================================================

The guard pages turn an access that strays from the shadow page or the stack
into a fault instead of a corrupted state block.  Nothing is mapped until the
engine is first used (`ensure`).

Faults: while the instruction runs, the synchronous fault signals are routed
to a handler (generated machine code) that records signal, ``si_code``,
``si_addr`` and rip, puts the host's stack and callee-saved registers back and
returns from the stub, so the fault surfaces as data instead of killing the
process.  A fault in *another* thread during that moment (its fs:[0], the TCB
pointer, differs from the one the stub recorded) is passed to the handler that
was installed before, or, if that was the default action, the default action
is put back so the fault repeats and acts as it would have.
"""
from __future__ import annotations

import ctypes
import signal
import struct

from iced_x86 import BlockEncoder, Code, Instruction, MemoryOperand, Register

from regmap.x86.native import host

GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
GPR_REGISTERS = (Register.RAX, Register.RCX, Register.RDX, Register.RBX, Register.RSP, Register.RBP,
                 Register.RSI, Register.RDI, Register.R8, Register.R9, Register.R10, Register.R11,
                 Register.R12, Register.R13, Register.R14, Register.R15)

REGION_SIZE = 0x12000
_CANDIDATE_BASES = tuple(range(0x10000, 0x100000, 0x20000))
GUARD_OFFS = (0x0000, 0x2000, 0x8000)
SHADOW_OFF = SHADOW_SIZE = 0x1000
BLOCK_OFF = 0x3000
STACK_OFF, STACK_SIZE = 0x4000, 0x4000
STACK_TOP_OFF = 0x3000           # in the stack: 12 KiB below for pushes and signal frames, 4 KiB above
CODE_OFF = 0x9000
ALTSTACK_OFF, ALTSTACK_SIZE = 0xA000, 0x8000

# state block fields (offsets inside the block)
B_GPR = 0x000          # 16 x 8
B_RFLAGS = 0x080
B_MXCSR = 0x088        # 4 bytes
B_K = 0x090            # 8 x 8
B_HOST = 0x100         # rbx rbp r12 r13 r14 r15 rsp
B_HOST_MXCSR = 0x138
B_HOST_FCW = 0x140
B_OWNER = 0x148        # fs:[0] of the thread running the stub
B_FAULT = 0x180        # flag, signo, si_code, si_addr, rip
B_CHAIN = 0x200        # 32 x 8 (by signal number): the handler each fault signal had before (0 = default)
B_DEFAULT_ACTION = 0x300   # a kernel sigaction of SIG_DFL (32 zero bytes)
B_ZMM = 0x400          # 32 x 64
B_FX = 0xC00           # 512-byte FXSAVE area (16-byte aligned)

C_PROLOGUE, C_EPILOGUE, C_HANDLER, C_INSN = 0x000, 0x300, 0x600, 0x800

_UC_MCONTEXT_RIP = 40 + 16 * 8     # ucontext_t: flags, link, stack_t(24), then gregs; REG_RIP = 16
_SA_SIGINFO, _SA_ONSTACK, _SA_NODEFER = 0x4, 0x08000000, 0x40000000
_SS_ONSTACK = 1
FAULT_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP)
_RT_SIGACTION = 13

# rflags bits the stub loads: CF PF AF ZF SF DF OF and AC (an unaligned access then raises #AC);
# TF would single-step the stub
LOADED_RFLAGS = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800 | 0x40000
RFLAGS_FIXED = 0x2

class SigSet(ctypes.Structure):
    _fields_ = [("val", ctypes.c_ulong * 16)]


class SigAction(ctypes.Structure):
    _fields_ = [("handler", ctypes.c_void_p), ("mask", SigSet), ("flags", ctypes.c_int),
                ("restorer", ctypes.c_void_p)]


class Stack(ctypes.Structure):
    _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]


class _TimeVal(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("usec", ctypes.c_long)]


class _ITimerVal(ctypes.Structure):
    _fields_ = [("interval", _TimeVal), ("value", _TimeVal)]


def _arm(seconds: float) -> None:
    """Arm (or, with 0, disarm) the virtual-time timer that sends SIGVTALRM."""
    timer = _ITimerVal(_TimeVal(0, 0), _TimeVal(int(seconds), int(seconds % 1 * 1e6)))
    _libc.setitimer(1, ctypes.byref(timer), None)      # ITIMER_VIRTUAL


_libc = None


def _load_libc():
    """The C library, its prototypes set (Linux only: the region is never made elsewhere)."""
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long)
        libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        libc.setitimer.argtypes = (ctypes.c_int, ctypes.POINTER(_ITimerVal), ctypes.POINTER(_ITimerVal))
        libc.sigaction.argtypes = (ctypes.c_int, ctypes.POINTER(SigAction), ctypes.POINTER(SigAction))
        libc.sigaltstack.argtypes = (ctypes.POINTER(Stack), ctypes.POINTER(Stack))
        libc.pthread_sigmask.argtypes = (ctypes.c_int, ctypes.POINTER(SigSet), ctypes.POINTER(SigSet))
        _libc = libc
    return _libc


class Region:
    """The mapped region and its addresses."""

    def __init__(self):
        _load_libc()
        self.base = _map()
        for guard in GUARD_OFFS:
            if _libc.mprotect(self.base + guard, 0x1000, 0) != 0:
                raise OSError(ctypes.get_errno(), "cannot protect the native engine's guard pages")
        self.shadow = self.base + SHADOW_OFF
        self.block = self.base + BLOCK_OFF
        self.stack = self.base + STACK_OFF
        self.stack_top = self.stack + STACK_TOP_OFF
        self.code = self.base + CODE_OFF
        self.insn = self.code + C_INSN
        self.epilogue = self.code + C_EPILOGUE
        self.altstack = self.base + ALTSTACK_OFF
        _install_code(self)
        self.stub = ctypes.PYFUNCTYPE(None)(self.code + C_PROLOGUE)
        self._plain = SigAction(self.code + C_HANDLER, SigSet(), _SA_SIGINFO | _SA_NODEFER, None)
        self._onstack = SigAction(self.code + C_HANDLER, SigSet(), _SA_SIGINFO | _SA_NODEFER | _SA_ONSTACK,
                                  None)
        self._altstack = Stack(self.altstack, 0, ALTSTACK_SIZE)
        # during the stub: every signal blocked except the synchronous faults it must catch
        self._stub_mask = SigSet()
        for sig in range(1, 65):
            if sig not in FAULT_SIGNALS + (signal.SIGVTALRM,) and sig not in (signal.SIGKILL, signal.SIGSTOP):
                self._stub_mask.val[(sig - 1) // 64] |= 1 << ((sig - 1) % 64)

    def call(self, body: bytes, watchdog: float = 0.0) -> tuple[int, int, int, int] | None:
        """Run the stub with ``body`` (the instruction and its jump to the epilogue) in place.

        Returns None, or ``(signo, si_code, si_addr, rip)`` of the fault that stopped it.
        ``watchdog`` (seconds of CPU time, for a branch that may go astray) stops the stub with
        SIGVTALRM.
        """
        signals = FAULT_SIGNALS + ((signal.SIGVTALRM,) if watchdog else ())
        ctypes.memmove(self.insn, body, len(body))
        ctypes.memset(self.block + B_FAULT, 0, 0x28)
        old_mask, old_stack = SigSet(), Stack()
        old_actions = [SigAction() for _ in signals]
        _libc.pthread_sigmask(2, ctypes.byref(self._stub_mask), ctypes.byref(old_mask))   # SIG_SETMASK
        try:
            # On an alternate stack already (a signal handler's), the stack cannot change: the
            # handler then runs on the scratch stack the stub's rsp points into.
            _libc.sigaltstack(None, ctypes.byref(old_stack))
            onstack = not old_stack.flags & _SS_ONSTACK
            if onstack:
                _libc.sigaltstack(ctypes.byref(self._altstack), None)
            action = self._onstack if onstack else self._plain
            try:
                for sig, old in zip(signals, old_actions):
                    if _libc.sigaction(sig, ctypes.byref(action), ctypes.byref(old)) != 0:
                        raise OSError(ctypes.get_errno(), "sigaction")
                    handler = old.handler or 0
                    ctypes.c_uint64.from_address(self.block + B_CHAIN + 8 * sig).value = \
                        handler if handler > 1 else 0
                if watchdog:
                    _arm(watchdog)
                try:
                    self.stub()
                finally:
                    if watchdog:
                        _arm(0.0)
            finally:
                for sig, old in zip(signals, old_actions):
                    _libc.sigaction(sig, ctypes.byref(old), None)
                if onstack:
                    _libc.sigaltstack(ctypes.byref(old_stack), None)
        finally:
            _libc.pthread_sigmask(2, ctypes.byref(old_mask), None)
        flag, signo, si_code, si_addr, rip = struct.unpack("<QQQQQ", ctypes.string_at(self.block + B_FAULT, 40))
        if not flag:
            return None
        return signo & 0xFFFFFFFF, ctypes.c_int32(si_code & 0xFFFFFFFF).value, si_addr, rip

    def jump_to_epilogue(self, at: int) -> bytes:
        return b"\xe9" + struct.pack("<i", self.epilogue - (at + 5))


def _map() -> int:
    prot = 0x1 | 0x2 | 0x4                                 # PROT_READ | PROT_WRITE | PROT_EXEC
    flags = 0x02 | 0x20 | 0x100000                         # MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
    for base in _CANDIDATE_BASES:
        got = _libc.mmap(base, REGION_SIZE, prot, flags, -1, 0)
        if got == base:
            return base
        if got not in (None, ctypes.c_void_p(-1).value):   # an old kernel took it as a hint
            _libc.munmap(got, REGION_SIZE)
    raise OSError(ctypes.get_errno(), "cannot map the native engine's low region")


# ---------------------------------------------------------------------------------------------
# the generated code


def _abs(address: int) -> MemoryOperand:
    """``[address]`` as an absolute (SIB, no base, no index) 64-bit-mode operand."""
    return MemoryOperand(displ=address, displ_size=8)


_HOST_SAVED = (Register.RBX, Register.RBP, Register.R12, Register.R13, Register.R14, Register.R15)


def _vector_moves(block: int, load: bool) -> list[Instruction]:
    out = []
    width = host.vector_width()
    moves = {512: (Register.ZMM0, Code.EVEX_VMOVDQU64_ZMM_K1Z_ZMMM512, Code.EVEX_VMOVDQU64_ZMMM512_K1Z_ZMM),
             256: (Register.YMM0, Code.VEX_VMOVDQU_YMM_YMMM256, Code.VEX_VMOVDQU_YMMM256_YMM),
             128: (Register.XMM0, Code.MOVDQU_XMM_XMMM128, Code.MOVDQU_XMMM128_XMM)}
    first, load_code, store_code = moves[width]
    for i in range(host.vector_count()):
        slot = _abs(block + B_ZMM + 64 * i)
        out.append(Instruction.create_reg_mem(load_code, first + i, slot) if load
                   else Instruction.create_mem_reg(store_code, slot, first + i))
    if width == 512:
        wide = host.wide_opmasks()
        for i in range(8):
            slot = _abs(block + B_K + 8 * i)
            if load:
                out.append(Instruction.create_reg_mem(
                    Code.VEX_KMOVQ_KR_KM64 if wide else Code.VEX_KMOVW_KR_KM16, Register.K0 + i, slot))
            else:
                out.append(Instruction.create_mem_reg(
                    Code.VEX_KMOVQ_M64_KR if wide else Code.VEX_KMOVW_M16_KR, slot, Register.K0 + i))
    return out


def _assemble(instructions: list[Instruction], address: int) -> bytes:
    encoder = BlockEncoder(64)
    encoder.add_many(instructions)
    return encoder.encode(address)


def _prologue(r: Region) -> bytes:
    b = r.block
    ins = [Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(b + B_HOST + 8 * i), reg)
           for i, reg in enumerate(_HOST_SAVED)]
    ins.append(Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(b + B_HOST + 0x30), Register.RSP))
    ins.append(Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RAX,
                                          MemoryOperand(displ=0, displ_size=8, seg=Register.FS)))
    ins.append(Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(b + B_OWNER), Register.RAX))
    ins.append(Instruction.create_mem(Code.STMXCSR_M32, _abs(b + B_HOST_MXCSR)))
    ins.append(Instruction.create_mem(Code.FNSTCW_M2BYTE, _abs(b + B_HOST_FCW)))
    ins.append(Instruction.create_mem(Code.FXRSTOR64_M512BYTE, _abs(b + B_FX)))
    ins += _vector_moves(b, load=True)
    ins.append(Instruction.create_mem(Code.LDMXCSR_M32, _abs(b + B_MXCSR)))
    ins.append(Instruction.create_mem(Code.PUSH_RM64, _abs(b + B_RFLAGS)))
    ins.append(Instruction.create(Code.POPFQ))
    # from here on no instruction may touch the flags
    ins.append(Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RSP, _abs(b + B_GPR + 8 * 4)))
    for i, reg in enumerate(GPR_REGISTERS):
        if reg != Register.RSP:
            ins.append(Instruction.create_reg_mem(Code.MOV_R64_RM64, reg, _abs(b + B_GPR + 8 * i)))
    ins.append(Instruction.create_branch(Code.JMP_REL32_64, r.insn))
    return _assemble(ins, r.code + C_PROLOGUE)


def _restore_host(r: Region) -> list[Instruction]:
    # the ABI wants clear DF and AC, an empty x87 stack and the caller's control words back
    b = r.block
    ins = [Instruction.create_i32(Code.PUSHQ_IMM8, RFLAGS_FIXED), Instruction.create(Code.POPFQ),
           Instruction.create_mem(Code.LDMXCSR_M32, _abs(b + B_HOST_MXCSR)),
           Instruction.create(Code.FNINIT),
           Instruction.create_mem(Code.FLDCW_M2BYTE, _abs(b + B_HOST_FCW))]
    ins += [Instruction.create_reg_mem(Code.MOV_R64_RM64, reg, _abs(b + B_HOST + 8 * i))
            for i, reg in enumerate(_HOST_SAVED)]
    if host.vector_width() >= 256:
        ins.append(Instruction.create(Code.VEX_VZEROUPPER))
    ins.append(Instruction.create(Code.RETNQ))
    return ins


def _epilogue(r: Region) -> bytes:
    b = r.block
    ins = [Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(b + B_GPR + 8 * i), reg)
           for i, reg in enumerate(GPR_REGISTERS)]
    ins.append(Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RSP, _abs(b + B_HOST + 0x30)))
    ins.append(Instruction.create(Code.PUSHFQ))
    ins.append(Instruction.create_mem(Code.POP_RM64, _abs(b + B_RFLAGS)))
    ins.append(Instruction.create_i32(Code.PUSHQ_IMM8, RFLAGS_FIXED))    # AC off before the stores
    ins.append(Instruction.create(Code.POPFQ))
    ins += _vector_moves(b, load=False)
    ins.append(Instruction.create_mem(Code.STMXCSR_M32, _abs(b + B_MXCSR)))
    ins.append(Instruction.create_mem(Code.FXSAVE64_M512BYTE, _abs(b + B_FX)))
    ins += _restore_host(r)
    return _assemble(ins, r.epilogue)


def _handler(r: Region) -> bytes:
    """``void handler(int sig, siginfo_t *info, ucontext_t *uc)``: record, then abandon the stub;
    or, for another thread's fault, pass it on."""
    f = r.block + B_FAULT
    foreign = Instruction.create(Code.NOPD)       # branch targets, placed below
    default = Instruction.create(Code.NOPD)
    foreign.ip, default.ip = 1, 2
    jne = Instruction.create_branch(Code.JNE_REL32_64, 1)
    jbe = Instruction.create_branch(Code.JBE_REL32_64, 2)
    ins = [
        Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RAX, MemoryOperand(displ=0, displ_size=8, seg=Register.FS)),
        Instruction.create_reg_mem(Code.CMP_R64_RM64, Register.RAX, _abs(r.block + B_OWNER)),
        jne,
        Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(f + 0x08), Register.RDI),
        Instruction.create_reg_mem(Code.MOV_R32_RM32, Register.EAX, MemoryOperand(Register.RSI, displ=8, displ_size=1)),
        Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(f + 0x10), Register.RAX),
        Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RAX, MemoryOperand(Register.RSI, displ=16, displ_size=1)),
        Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(f + 0x18), Register.RAX),
        Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RAX,
                                   MemoryOperand(Register.RDX, displ=_UC_MCONTEXT_RIP, displ_size=8)),
        Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(f + 0x20), Register.RAX),
        Instruction.create_mem_i32(Code.MOV_RM64_IMM32, _abs(f), 1),
        Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RSP, _abs(r.block + B_HOST + 0x30)),
    ] + _restore_host(r) + [
        foreign,
        # another thread faulted: its previous handler, with the same arguments
        Instruction.create_reg_reg(Code.MOV_R32_RM32, Register.ECX, Register.EDI),
        Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RAX,
                                   MemoryOperand(Register.NONE, Register.RCX, 8, r.block + B_CHAIN, 4)),
        Instruction.create_reg_i32(Code.CMP_RM64_IMM8, Register.RAX, 1),
        jbe,
        Instruction.create_reg(Code.JMP_RM64, Register.RAX),
        default,
        # it had the default action: put that back and return; the fault repeats and acts as usual
        Instruction.create_reg_i32(Code.MOV_R32_IMM32, Register.ESI, r.block + B_DEFAULT_ACTION),
        Instruction.create_reg_reg(Code.XOR_R32_RM32, Register.EDX, Register.EDX),
        Instruction.create_reg_i32(Code.MOV_R32_IMM32, Register.R10D, 8),
        Instruction.create_reg_i32(Code.MOV_R32_IMM32, Register.EAX, _RT_SIGACTION),
        Instruction.create(Code.SYSCALL),
        Instruction.create(Code.RETNQ),
    ]
    return _assemble(ins, r.code + C_HANDLER)


def _install_code(r: Region) -> None:
    for offset, blob, limit in ((C_PROLOGUE, _prologue(r), C_EPILOGUE), (C_EPILOGUE, _epilogue(r), C_HANDLER),
                                (C_HANDLER, _handler(r), C_INSN)):
        assert len(blob) <= limit - offset, (offset, len(blob))
        ctypes.memmove(r.code + offset, blob, len(blob))


_REGION: Region | None = None


def ensure() -> Region:
    """The region, mapped and its code generated on first use."""
    global _REGION
    if _REGION is None:
        problem = host.platform_problem()
        if problem:
            raise OSError(problem)
        _REGION = Region()
    return _REGION
