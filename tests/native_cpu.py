"""Run one instruction on the host CPU against a shadow of the register window.

The oracle's native engine.  A window instruction such as ``add rax, [8]``
cannot run as written (page 0 is not mapped), so it is re-encoded with its
memory operand moved onto a *shadow page*: a real page at ``SHADOW_BASE`` that
holds the register image of the window.  The registers, rflags, vector
registers, opmask registers, mxcsr and the x87/MMX state (through FXRSTOR and
FXSAVE) are loaded from a state block, the instruction runs, and everything is
stored back.  Nothing here needs a
compiler: the stub is machine code generated with iced-x86 at import time and
called through a ctypes function pointer.

Memory map (one private RWX mapping at ``REGION_BASE``, placed low so every
save and restore can use ``[disp32]`` absolute addressing with no register):

==============  =========================================================
offset          contents
==============  =========================================================
0x0000-0x0fff   guard page (no access)
0x1000-0x1fff   shadow page: the 4096-byte window image
0x2000-0x2fff   guard page
0x3000-0x3fff   state block: GPRs, rflags, mxcsr, k0-k7, host slots,
                fault record, zmm0-zmm31, the FXSAVE area
0x4000-0x5fff   scratch stack (the program's stack; rsp = ``STACK_TOP``)
0x6000-0x6fff   guard page
0x7000-0x7fff   code: prologue, epilogue, fault handler, the instruction
0x8000-0xffff   alternate signal stack for the fault handler
==============  =========================================================

The guard pages turn an access that strays from the shadow page or the stack
(a bit test with a large register bit offset, say) into a fault instead of a
corrupted state block.

Faults: while the instruction runs, SIGSEGV/SIGBUS/SIGFPE/SIGILL/SIGTRAP (and
SIGVTALRM, a watchdog for a branch gone astray) are routed to a handler (also generated machine code) that records the signal,
``si_code``, ``si_addr`` and the faulting rip, puts the host's stack and
callee-saved registers back and returns from the stub, so the fault surfaces as
a ``NativeFault`` exception rather than killing the interpreter.  Asynchronous
signals are blocked for the duration of the call (the program's rsp may be any
value while the instruction runs).
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import struct
from functools import lru_cache

from iced_x86 import (
    BlockEncoder, Code, Decoder, Encoder, Instruction, MemoryOperand, MemorySizeExt, OpKind, Register,
    RegisterExt,
)

__all__ = [
    "GPRS", "SHADOW_BASE", "SHADOW_SIZE", "STACK_BASE", "STACK_SIZE", "STACK_TOP", "INSN_ADDRESS",
    "NativeState", "NativeFault", "Placed", "place", "run_native", "cpu_flags", "vector_width",
    "window_address",
]

GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
_GPR_REGS = (Register.RAX, Register.RCX, Register.RDX, Register.RBX, Register.RSP, Register.RBP,
             Register.RSI, Register.RDI, Register.R8, Register.R9, Register.R10, Register.R11,
             Register.R12, Register.R13, Register.R14, Register.R15)
_GPR_OF_REGISTER = dict(zip(_GPR_REGS, GPRS))

# ---------------------------------------------------------------------------------------------
# memory map

REGION_SIZE = 0x10000
_CANDIDATE_BASES = (0x10000, 0x20000, 0x30000, 0x40000, 0x50000, 0x60000)

GUARD_OFFS = (0x0000, 0x2000, 0x6000)
SHADOW_OFF, SHADOW_SIZE = 0x1000, 0x1000
BLOCK_OFF = 0x3000
STACK_OFF, STACK_SIZE = 0x4000, 0x2000
CODE_OFF = 0x7000
ALTSTACK_OFF, ALTSTACK_SIZE = 0x8000, 0x8000
WATCHDOG_SECONDS = 2.0      # an instruction that has not finished by then (a branch gone astray) is stopped

# state block fields (offsets inside the block)
B_GPR = 0x000          # 16 x 8
B_RFLAGS = 0x080
B_MXCSR = 0x088        # 4 bytes
B_K = 0x090            # 8 x 8
B_HOST = 0x100         # rbx rbp r12 r13 r14 r15 rsp, then host mxcsr at +0x38
B_HOST_MXCSR = 0x138
B_FAULT = 0x180        # flag, signo, si_code, si_addr, rip
B_ZMM = 0x400          # 32 x 64
B_FX = 0xC00           # 512-byte FXSAVE area (16-byte aligned): FCW, FSW, FTW, st0-st7
B_HOST_FCW = 0x140

# code page fields (offsets inside the code page)
C_PROLOGUE = 0x000
C_EPILOGUE = 0x300
C_HANDLER = 0x600
C_INSN = 0x800

# SysV x86-64 user ABI
_UC_MCONTEXT_RIP = 40 + 16 * 8     # ucontext_t: flags, link, stack_t(24), then gregs; REG_RIP = 16
_SA_SIGINFO, _SA_ONSTACK, _SA_NODEFER = 0x4, 0x08000000, 0x40000000
_FAULT_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP, signal.SIGVTALRM)

# rflags bits a user program can load with popfq without changing how the CPU treats it
# (TF would single-step, AC would turn unaligned accesses into SIGBUS): CF PF AF ZF SF DF OF
USER_RFLAGS = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800
RFLAGS_FIXED = 0x2


@lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The feature flags of the host CPU, as /proc/cpuinfo spells them."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def vector_width() -> int:
    """Bits of vector state the runner loads and saves: 512, 256 or 128."""
    flags = cpu_flags()
    if "avx512f" in flags:
        return 512
    if "avx" in flags:
        return 256
    return 128


def vector_count() -> int:
    return 32 if vector_width() == 512 else 16


# ---------------------------------------------------------------------------------------------
# state


@dataclasses.dataclass
class NativeState:
    """Everything the native instruction may read or change."""

    gpr: dict[str, int] = dataclasses.field(default_factory=lambda: {r: 0 for r in GPRS})
    rflags: int = RFLAGS_FIXED
    zmm: list[int] = dataclasses.field(default_factory=lambda: [0] * 32)
    k: list[int] = dataclasses.field(default_factory=lambda: [0] * 8)
    mxcsr: int = 0x1F80
    shadow: bytes = bytes(SHADOW_SIZE)
    stack: bytes = bytes(STACK_SIZE)
    st: list[int] = dataclasses.field(default_factory=lambda: [0] * 8)    # 80-bit, in stack order
    fcw: int = 0x37F
    fsw: int = 0                # TOP (bits 13:11) 0: st(i) is physical register i, as MMX has it
    ftw: int = 0                # abridged tag byte: bit i set = register i holds a value

    def copy(self) -> "NativeState":
        return dataclasses.replace(self, gpr=dict(self.gpr), zmm=list(self.zmm), k=list(self.k),
                                   st=list(self.st))


class NativeFault(Exception):
    """The instruction raised an exception on the host CPU (the signal it would have delivered)."""

    def __init__(self, signo: int, si_code: int, address: int, rip: int, insn: str):
        self.signo, self.si_code, self.address, self.rip = signo, si_code, address, rip
        name = signal.Signals(signo).name if signo in signal.Signals._value2member_map_ else str(signo)
        self.signal_name = name
        super().__init__(f"{insn}: {name} (si_code {si_code}, si_addr {address:#x}, rip {rip:#x})")


# ---------------------------------------------------------------------------------------------
# the mapping

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


class _SigSet(ctypes.Structure):
    _fields_ = [("val", ctypes.c_ulong * 16)]


class _SigAction(ctypes.Structure):
    _fields_ = [("handler", ctypes.c_void_p), ("mask", _SigSet), ("flags", ctypes.c_int),
                ("restorer", ctypes.c_void_p)]


class _Stack(ctypes.Structure):
    _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]


_libc.sigaction.argtypes = (ctypes.c_int, ctypes.POINTER(_SigAction), ctypes.POINTER(_SigAction))
_libc.sigaltstack.argtypes = (ctypes.POINTER(_Stack), ctypes.POINTER(_Stack))
_libc.pthread_sigmask.argtypes = (ctypes.c_int, ctypes.POINTER(_SigSet), ctypes.POINTER(_SigSet))


def _map_region() -> int:
    prot = 0x1 | 0x2 | 0x4                                 # PROT_READ | PROT_WRITE | PROT_EXEC
    flags = 0x02 | 0x20 | 0x100000                         # MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
    for base in _CANDIDATE_BASES:
        got = _libc.mmap(base, REGION_SIZE, prot, flags, -1, 0)
        if got == base:
            return base
        if got not in (None, ctypes.c_void_p(-1).value):   # an old kernel took it as a hint
            _libc.munmap(got, REGION_SIZE)
    raise OSError(ctypes.get_errno(), "cannot map the native runner's low region")


REGION_BASE = _map_region()
for _guard in GUARD_OFFS:
    if _libc.mprotect(REGION_BASE + _guard, 0x1000, 0) != 0:
        raise OSError(ctypes.get_errno(), "cannot protect the runner's guard pages")
SHADOW_BASE = REGION_BASE + SHADOW_OFF
BLOCK = REGION_BASE + BLOCK_OFF
STACK_BASE = REGION_BASE + STACK_OFF
STACK_TOP = STACK_BASE + STACK_SIZE // 2      # room both to push and to pop
CODE = REGION_BASE + CODE_OFF
INSN_ADDRESS = CODE + C_INSN
EPILOGUE = CODE + C_EPILOGUE
HANDLER = CODE + C_HANDLER
ALTSTACK = REGION_BASE + ALTSTACK_OFF


# ---------------------------------------------------------------------------------------------
# stub generation


def _abs(address: int) -> MemoryOperand:
    """``[address]`` as an absolute (SIB, no base, no index) 64-bit-mode operand."""
    return MemoryOperand(displ=address, displ_size=8)


def _gpr_slot(i: int) -> int:
    return BLOCK + B_GPR + 8 * i


def _zmm_slot(i: int) -> int:
    return BLOCK + B_ZMM + 64 * i


_HOST_SAVED = (Register.RBX, Register.RBP, Register.R12, Register.R13, Register.R14, Register.R15)


def _vector_moves(load: bool) -> list[Instruction]:
    out = []
    width = vector_width()
    for i in range(vector_count()):
        slot = _abs(_zmm_slot(i))
        if width == 512:
            reg = Register.ZMM0 + i
            out.append(Instruction.create_reg_mem(Code.EVEX_VMOVDQU64_ZMM_K1Z_ZMMM512, reg, slot) if load
                       else Instruction.create_mem_reg(Code.EVEX_VMOVDQU64_ZMMM512_K1Z_ZMM, slot, reg))
        elif width == 256:
            reg = Register.YMM0 + i
            out.append(Instruction.create_reg_mem(Code.VEX_VMOVDQU_YMM_YMMM256, reg, slot) if load
                       else Instruction.create_mem_reg(Code.VEX_VMOVDQU_YMMM256_YMM, slot, reg))
        else:
            reg = Register.XMM0 + i
            out.append(Instruction.create_reg_mem(Code.MOVDQU_XMM_XMMM128, reg, slot) if load
                       else Instruction.create_mem_reg(Code.MOVDQU_XMMM128_XMM, slot, reg))
    if width == 512:
        wide = "avx512bw" in cpu_flags()
        for i in range(8):
            slot = _abs(BLOCK + B_K + 8 * i)
            reg = Register.K0 + i
            if load:
                out.append(Instruction.create_reg_mem(
                    Code.VEX_KMOVQ_KR_KM64 if wide else Code.VEX_KMOVW_KR_KM16, reg, slot))
            else:
                out.append(Instruction.create_mem_reg(
                    Code.VEX_KMOVQ_M64_KR if wide else Code.VEX_KMOVW_M16_KR, slot, reg))
    return out


def _assemble(instructions: list[Instruction], address: int) -> bytes:
    encoder = BlockEncoder(64)
    encoder.add_many(instructions)
    return encoder.encode(address)


def _prologue() -> bytes:
    ins = []
    for i, reg in enumerate(_HOST_SAVED):
        ins.append(Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(BLOCK + B_HOST + 8 * i), reg))
    ins.append(Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(BLOCK + B_HOST + 0x30), Register.RSP))
    ins.append(Instruction.create_mem(Code.STMXCSR_M32, _abs(BLOCK + B_HOST_MXCSR)))
    ins.append(Instruction.create_mem(Code.FNSTCW_M2BYTE, _abs(BLOCK + B_HOST_FCW)))
    ins.append(Instruction.create_mem(Code.FXRSTOR64_M512BYTE, _abs(BLOCK + B_FX)))
    ins += _vector_moves(load=True)
    ins.append(Instruction.create_mem(Code.LDMXCSR_M32, _abs(BLOCK + B_MXCSR)))
    ins.append(Instruction.create_mem(Code.PUSH_RM64, _abs(BLOCK + B_RFLAGS)))
    ins.append(Instruction.create(Code.POPFQ))
    # from here on no instruction may touch the flags
    ins.append(Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RSP, _abs(_gpr_slot(4))))
    for i, reg in enumerate(_GPR_REGS):
        if reg != Register.RSP:
            ins.append(Instruction.create_reg_mem(Code.MOV_R64_RM64, reg, _abs(_gpr_slot(i))))
    ins.append(Instruction.create_branch(Code.JMP_REL32_64, INSN_ADDRESS))
    return _assemble(ins, CODE + C_PROLOGUE)


def _restore_host() -> list[Instruction]:
    # the ABI wants an empty x87 stack and the caller's control word back
    ins = [Instruction.create_mem(Code.LDMXCSR_M32, _abs(BLOCK + B_HOST_MXCSR)),
           Instruction.create(Code.FNINIT),
           Instruction.create_mem(Code.FLDCW_M2BYTE, _abs(BLOCK + B_HOST_FCW))]
    for i, reg in enumerate(_HOST_SAVED):
        ins.append(Instruction.create_reg_mem(Code.MOV_R64_RM64, reg, _abs(BLOCK + B_HOST + 8 * i)))
    ins.append(Instruction.create(Code.CLD))
    if vector_width() >= 256:
        ins.append(Instruction.create(Code.VEX_VZEROUPPER))
    ins.append(Instruction.create(Code.RETNQ))
    return ins


def _epilogue() -> bytes:
    ins = []
    for i, reg in enumerate(_GPR_REGS):
        ins.append(Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(_gpr_slot(i)), reg))
    ins.append(Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RSP, _abs(BLOCK + B_HOST + 0x30)))
    ins.append(Instruction.create(Code.PUSHFQ))
    ins.append(Instruction.create_mem(Code.POP_RM64, _abs(BLOCK + B_RFLAGS)))
    ins += _vector_moves(load=False)
    ins.append(Instruction.create_mem(Code.STMXCSR_M32, _abs(BLOCK + B_MXCSR)))
    ins.append(Instruction.create_mem(Code.FXSAVE64_M512BYTE, _abs(BLOCK + B_FX)))
    ins += _restore_host()
    return _assemble(ins, EPILOGUE)


def _handler() -> bytes:
    """``void handler(int sig, siginfo_t *info, ucontext_t *uc)``: record, then abandon the stub."""
    f = BLOCK + B_FAULT
    ins = [
        Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(f + 0x08), Register.RDI),
        Instruction.create_reg_mem(Code.MOV_R32_RM32, Register.EAX, MemoryOperand(Register.RSI, displ=8, displ_size=1)),
        Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(f + 0x10), Register.RAX),
        Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RAX, MemoryOperand(Register.RSI, displ=16, displ_size=1)),
        Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(f + 0x18), Register.RAX),
        Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RAX,
                                   MemoryOperand(Register.RDX, displ=_UC_MCONTEXT_RIP, displ_size=8)),
        Instruction.create_mem_reg(Code.MOV_RM64_R64, _abs(f + 0x20), Register.RAX),
        Instruction.create_mem_i32(Code.MOV_RM64_IMM32, _abs(f), 1),
        Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RSP, _abs(BLOCK + B_HOST + 0x30)),
    ] + _restore_host()
    return _assemble(ins, HANDLER)


def _install_code() -> None:
    for offset, blob, limit in ((C_PROLOGUE, _prologue(), C_EPILOGUE), (C_EPILOGUE, _epilogue(), C_HANDLER),
                                (C_HANDLER, _handler(), C_INSN)):
        assert len(blob) <= limit - offset, (offset, len(blob))
        ctypes.memmove(CODE + offset, blob, len(blob))


_install_code()
_stub = ctypes.CFUNCTYPE(None)(CODE + C_PROLOGUE)

# signal plumbing, prepared once
_handler_action = _SigAction()
_handler_action.handler = HANDLER
_handler_action.flags = _SA_SIGINFO | _SA_ONSTACK | _SA_NODEFER
_altstack = _Stack(ALTSTACK, 0, ALTSTACK_SIZE)
_async_signals = _SigSet()
for _sig in range(1, 65):
    if _sig not in _FAULT_SIGNALS and _sig not in (signal.SIGKILL, signal.SIGSTOP):
        _async_signals.val[(_sig - 1) // 64] |= 1 << ((_sig - 1) % 64)


# ---------------------------------------------------------------------------------------------
# placing an instruction


def _decode(code: bytes, address: int) -> Instruction:
    instr = Decoder(64, code, ip=address).decode()
    if instr.code == Code.INVALID:
        raise ValueError(f"cannot decode {code.hex(' ')}")
    return instr


def _memory_operand_index(instr: Instruction) -> int | None:
    for i in range(instr.op_count):
        if instr.op_kind(i) == OpKind.MEMORY:
            return i
    return None


def window_address(instr: Instruction, gpr: dict[str, int]) -> int | None:
    """The effective address of ``instr``'s explicit memory operand given ``gpr`` (None if it has none).

    VSIB operands (per-element indexes) are not resolved: None.
    """
    if _memory_operand_index(instr) is None or instr.is_vsib or instr.is_ip_rel_memory_operand:
        return None
    bits = 64
    ea = instr.memory_displacement
    if instr.memory_base != Register.NONE:
        bits = RegisterExt.size(instr.memory_base) * 8
        ea += gpr[_GPR_OF_REGISTER[RegisterExt.full_register(instr.memory_base)]]
    if instr.memory_index != Register.NONE:
        bits = RegisterExt.size(instr.memory_index) * 8
        ea += gpr[_GPR_OF_REGISTER[RegisterExt.full_register(instr.memory_index)]] * instr.memory_index_scale
    if instr.memory_base == Register.NONE and instr.memory_index == Register.NONE:
        # absolute: a 67-prefixed [disp32] is zero-extended, otherwise sign-extended (iced gives u64)
        bits = 64
    return ea & ((1 << bits) - 1)


@dataclasses.dataclass(frozen=True)
class Placed:
    """Where and how an instruction runs natively."""

    code: bytes            # the window form, as given
    native: bytes          # re-encoded with its memory operand on the shadow page
    address: int           # where ``native`` runs
    after: int             # the address after it (the native next rip; branch targets land here)
    emulator_rip: int      # the rip to give the emulator so its next rip equals ``after``
    instruction: Instruction   # ``code`` decoded at ``emulator_rip``

    @property
    def length(self) -> int:
        return len(self.code)


@lru_cache(maxsize=4096)
def place(code: bytes) -> Placed:
    """Re-encode ``code`` (a window instruction) to run at ``INSN_ADDRESS`` against the shadow page.

    The explicit memory operand keeps its base and index; its displacement gains ``SHADOW_BASE``.
    An instruction without an explicit memory operand is placed unchanged.
    """
    code = bytes(code)
    instr = _decode(code, INSN_ADDRESS)
    code = code[:instr.len]
    if instr.is_ip_rel_memory_operand:
        raise ValueError(f"{instr}: RIP-relative operands are not placed on the shadow page")
    if _memory_operand_index(instr) is not None:
        moved = instr.copy()
        a32 = RegisterExt.size(instr.memory_base or instr.memory_index) == 4 if (
            instr.memory_base or instr.memory_index) else instr.memory_displ_size == 4
        moved.memory_displacement = (instr.memory_displacement + SHADOW_BASE) & (0xFFFFFFFF if a32 else 2**64 - 1)
        if moved.memory_displ_size == 0:
            moved.memory_displ_size = 1             # [rcx] gains a displacement: the encoder widens it
        if instr.memory_base == Register.NONE and instr.memory_index == Register.NONE:
            if instr.memory_displacement >= 2**31 and instr.memory_displ_size == 8:
                raise ValueError(f"{instr}: absolute address outside the window")
        encoder = Encoder(64)
        encoder.encode(moved, INSN_ADDRESS)
        native = encoder.take_buffer()
    else:
        native = code
    after = INSN_ADDRESS + len(native)
    emulator_rip = after - len(code)
    return Placed(code, native, INSN_ADDRESS, after, emulator_rip, _decode(code, emulator_rip))


# ---------------------------------------------------------------------------------------------
# running


def _jmp_epilogue(at: int) -> bytes:
    return b"\xe9" + struct.pack("<i", EPILOGUE - (at + 5))


def _write_state(state: NativeState) -> None:
    block = bytearray(0x1000)
    for i, name in enumerate(GPRS):
        struct.pack_into("<Q", block, B_GPR + 8 * i, state.gpr.get(name, 0) & (2**64 - 1))
    struct.pack_into("<Q", block, B_RFLAGS, (state.rflags & USER_RFLAGS) | RFLAGS_FIXED)
    struct.pack_into("<I", block, B_MXCSR, state.mxcsr & 0xFFFF)
    for i in range(8):
        struct.pack_into("<Q", block, B_K + 8 * i, state.k[i] & (2**64 - 1))
    for i in range(32):
        block[B_ZMM + 64 * i:B_ZMM + 64 * (i + 1)] = (state.zmm[i] & (2**512 - 1)).to_bytes(64, "little")
    struct.pack_into("<HHB", block, B_FX, state.fcw & 0xFFFF, state.fsw & 0xFFFF, state.ftw & 0xFF)
    struct.pack_into("<I", block, B_FX + 24, state.mxcsr & 0xFFFF)
    for i in range(8):
        block[B_FX + 32 + 16 * i:B_FX + 42 + 16 * i] = (state.st[i] & (2**80 - 1)).to_bytes(10, "little")
    ctypes.memmove(BLOCK, bytes(block), len(block))
    assert len(state.shadow) == SHADOW_SIZE and len(state.stack) == STACK_SIZE
    ctypes.memmove(SHADOW_BASE, bytes(state.shadow), SHADOW_SIZE)
    ctypes.memmove(STACK_BASE, bytes(state.stack), STACK_SIZE)


def _read_state(template: NativeState) -> NativeState:
    block = ctypes.string_at(BLOCK, 0x1000)
    out = template.copy()
    out.gpr = {name: struct.unpack_from("<Q", block, B_GPR + 8 * i)[0] for i, name in enumerate(GPRS)}
    out.rflags = struct.unpack_from("<Q", block, B_RFLAGS)[0]
    out.mxcsr = struct.unpack_from("<I", block, B_MXCSR)[0]
    width = vector_width()
    kmask = (2**64 - 1) if "avx512bw" in cpu_flags() else 0xFFFF
    if width == 512:
        out.k = [struct.unpack_from("<Q", block, B_K + 8 * i)[0] & kmask for i in range(8)]
    n = vector_count()
    out.zmm = [int.from_bytes(block[B_ZMM + 64 * i:B_ZMM + 64 * i + width // 8], "little") if i < n
               else template.zmm[i] for i in range(32)]
    out.fcw, out.fsw, out.ftw = struct.unpack_from("<HHB", block, B_FX)
    out.st = [int.from_bytes(block[B_FX + 32 + 16 * i:B_FX + 42 + 16 * i], "little") for i in range(8)]
    out.shadow = ctypes.string_at(SHADOW_BASE, SHADOW_SIZE)
    out.stack = ctypes.string_at(STACK_BASE, STACK_SIZE)
    return out


class _TimeVal(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("usec", ctypes.c_long)]


class _ITimerVal(ctypes.Structure):
    _fields_ = [("interval", _TimeVal), ("value", _TimeVal)]


_libc.setitimer.argtypes = (ctypes.c_int, ctypes.POINTER(_ITimerVal), ctypes.POINTER(_ITimerVal))
_ITIMER_VIRTUAL = 1
_watchdog_off = _ITimerVal()


def _arm_watchdog() -> None:
    seconds = WATCHDOG_SECONDS
    timer = _ITimerVal(_TimeVal(0, 0), _TimeVal(int(seconds), int(seconds % 1 * 1e6)))
    _libc.setitimer(_ITIMER_VIRTUAL, ctypes.byref(timer), None)


def _call_stub() -> None:
    old_mask = _SigSet()
    old_stack = _Stack()
    old_actions = [_SigAction() for _ in _FAULT_SIGNALS]
    _libc.pthread_sigmask(0, ctypes.byref(_async_signals), ctypes.byref(old_mask))      # SIG_BLOCK
    try:
        _libc.sigaltstack(ctypes.byref(_altstack), ctypes.byref(old_stack))
        try:
            for sig, old in zip(_FAULT_SIGNALS, old_actions):
                if _libc.sigaction(sig, ctypes.byref(_handler_action), ctypes.byref(old)) != 0:
                    raise OSError(ctypes.get_errno(), "sigaction")
            try:
                _arm_watchdog()
                try:
                    _stub()
                finally:
                    _libc.setitimer(_ITIMER_VIRTUAL, ctypes.byref(_watchdog_off), None)
            finally:
                for sig, old in zip(_FAULT_SIGNALS, old_actions):
                    _libc.sigaction(sig, ctypes.byref(old), None)
        finally:
            _libc.sigaltstack(ctypes.byref(old_stack), None)
    finally:
        _libc.pthread_sigmask(2, ctypes.byref(old_mask), None)                             # SIG_SETMASK


def run_native(code: bytes, state: NativeState, *, bias: dict[str, int] | None = None) -> NativeState:
    """Execute window instruction ``code`` on the host CPU from ``state``; return the state after it.

    ``state.shadow`` is the window image the memory operand reads and writes; ``state.stack`` is the
    memory at ``STACK_BASE`` (point rsp into it, e.g. ``STACK_TOP``, for stack instructions).
    ``bias`` adds an amount to registers for the native run only and takes it off again afterwards
    (for implicit memory operands such as a string instruction's rsi/rdi: bias them by
    ``SHADOW_BASE``).  Raises ``NativeFault`` if the instruction faults, ``ValueError`` if its
    explicit memory operand does not lie in the window.
    """
    placed = place(code)
    instr = placed.instruction
    ea = window_address(instr, state.gpr)
    if ea is not None:
        size = max(MemorySizeExt.size(instr.memory_size), 1)
        if not 0 <= ea <= SHADOW_SIZE - size:
            raise ValueError(f"{instr}: effective address {ea:#x} (+{size}) is not inside the window")
    run = state.copy()
    for name, amount in (bias or {}).items():
        run.gpr[name] = (run.gpr[name] + amount) & (2**64 - 1)
    body = placed.native + _jmp_epilogue(placed.after)
    ctypes.memmove(INSN_ADDRESS, body, len(body))
    _write_state(run)
    ctypes.memset(BLOCK + B_FAULT, 0, 0x40)
    _call_stub()
    flag, signo, si_code, si_addr, rip = struct.unpack("<QQQQQ", ctypes.string_at(BLOCK + B_FAULT, 40))
    if flag:
        raise NativeFault(signo & 0xFFFFFFFF, ctypes.c_int32(si_code & 0xFFFFFFFF).value, si_addr, rip,
                          f"{placed.code.hex(' ')} ({instr})")
    out = _read_state(state)
    # a 32-bit address size updates esi/edi as 32-bit registers: the bias comes off modulo 2**32
    mask = 0xFFFFFFFF if bias and _address_bits(instr) == 32 else 2**64 - 1
    for name, amount in (bias or {}).items():
        out.gpr[name] = (out.gpr[name] - amount) & mask
    return out


_info_factory = None


def _address_bits(instr: Instruction) -> int:
    global _info_factory
    if _info_factory is None:
        from iced_x86 import InstructionInfoFactory
        _info_factory = InstructionInfoFactory()
    for m in _info_factory.info(instr).used_memory():
        return {1: 16, 2: 32, 3: 64}.get(m.address_size, 64)      # iced CodeSize
    return 64


def run_in_child(code: bytes, state: NativeState, **kw) -> int:
    """Run ``code`` natively in a forked child with no fault handler; return the signal that ended it
    (0 if it exited normally).  For asserting that an instruction really kills a process."""
    pid = os.fork()
    if pid == 0:
        try:
            for sig in _FAULT_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            placed = place(code)
            body = placed.native + _jmp_epilogue(placed.after)
            ctypes.memmove(INSN_ADDRESS, body, len(body))
            run = state.copy()
            for name, amount in (kw.get("bias") or {}).items():
                run.gpr[name] = (run.gpr[name] + amount) & (2**64 - 1)
            _write_state(run)
            _arm_watchdog()
            _stub()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


# the code segment selector this process runs with (a far branch through the window must load it again)
USER_CS = run_native(b"\x8c\xc8", NativeState()).gpr["rax"] & 0xFFFF      # mov eax, cs


@lru_cache(maxsize=4096)
def mxcsr_accepted(value: int) -> bool:
    """Whether the CPU's LDMXCSR takes ``value`` (reserved bits set raise #GP)."""
    state = NativeState()
    state.shadow = (value & 0xFFFFFFFF).to_bytes(4, "little") + bytes(SHADOW_SIZE - 4)
    try:
        run_native(bytes.fromhex("0fae142500000000"), state)                 # ldmxcsr [0]
    except NativeFault as fault:
        if fault.signo == signal.SIGSEGV:
            return False
        raise
    return True
