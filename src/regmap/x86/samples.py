"""One encoding of an instruction form with a constant window address, and how translation takes it.

`regmap coverage --translation` asks, for every form this CPU has, what hot-site translation
would do with a typical site of it: rewrite it in place (`regmap.x86.translate`), give it a
trampoline (`regmap.x86.trampoline`) or leave it faulting, and why.  The typical site is built
here with iced-x86's encoder: every register operand a fixed register of its class (rdx, xmm2,
k2...; a second one of the same class the next), immediates 1, and the memory operand the
window's rcx (an operand of at most 8 bytes, at 8) or ymm0 (a wider one, at 0x100).
"""
from __future__ import annotations

from iced_x86 import (Code, Decoder, Encoder, Instruction, MemorySizeInfo, OpCodeInfo,
                      OpCodeOperandKind, OpKind, Register)

from regmap.x86 import stub, trampoline
from regmap.x86.translate import Declined, translate

ADDRESS = 0x401000          # where the sample site is taken to be
_K = OpCodeOperandKind
# Register classes by the name iced-x86 gives an operand kind's prefix: (first, second) choice.
_CLASSES = {"R8": (Register.DL, Register.BL), "R16": (Register.DX, Register.BX),
            "R32": (Register.EDX, Register.EBX), "R64": (Register.RDX, Register.RBX),
            "XMM": (Register.XMM2, Register.XMM3), "YMM": (Register.YMM2, Register.YMM3),
            "ZMM": (Register.ZMM2, Register.ZMM3), "K": (Register.K2, Register.K3),
            "KP1": (Register.K2, Register.K4), "MM": (Register.MM2, Register.MM3),
            "TMM": (Register.TMM1, Register.TMM2), "BND": (Register.BND1, Register.BND2),
            "XMMP3": (Register.XMM4, Register.XMM4), "ZMMP3": (Register.ZMM4, Register.ZMM4)}
_FIXED = {_K.AL: Register.AL, _K.AX: Register.AX, _K.EAX: Register.EAX, _K.RAX: Register.RAX,
          _K.CL: Register.CL, _K.DX: Register.DX, _K.ST0: Register.ST0,
          _K.STI_OPCODE: Register.ST1, _K.ES: Register.ES, _K.CS: Register.CS,
          _K.SS: Register.SS, _K.DS: Register.DS, _K.FS: Register.FS, _K.GS: Register.GS,
          _K.SEG_REG: Register.ES}
_IMMEDIATES = {_K.IMM8: OpKind.IMMEDIATE8, _K.IMM8_CONST_1: OpKind.IMMEDIATE8,
               _K.IMM16: OpKind.IMMEDIATE16, _K.IMM32: OpKind.IMMEDIATE32,
               _K.IMM64: OpKind.IMMEDIATE64, _K.IMM8SEX16: OpKind.IMMEDIATE8TO16,
               _K.IMM8SEX32: OpKind.IMMEDIATE8TO32, _K.IMM8SEX64: OpKind.IMMEDIATE8TO64,
               _K.IMM32SEX64: OpKind.IMMEDIATE32TO64, _K.IMM4_M2Z: OpKind.IMMEDIATE8}
_NAMES = {value: name for name, value in vars(OpCodeOperandKind).items() if name.isupper()}
_MEMORY_NAMES = ("MEM", "MEM_MPX", "MEM_OFFS")
_CODE_NAMES = {value: name for name, value in vars(Code).items() if name.isupper()}
# the pseudo-instructions iced-x86 encodes as wait (9Bh) and their no-wait form (fnstenv...)
_WAITING = frozenset(code for code, name in _CODE_NAMES.items()
                     if name.startswith("F") and "FN" + name[1:] in vars(Code))


def sample(code: int, base: int = Register.NONE, short: bool = False) -> bytes | None:
    """The form `code` encoded with a constant window address, or None (no such encoding).
    With a `base` register: ``[base + disp32]``, the base's value taken to be 0; `short`:
    ``[base + disp8]`` (``[base]`` with the base at 0x100 for an operand of over 8 bytes), the
    form's shortest register-addressed encoding."""
    info = OpCodeInfo(code)
    ins = Instruction()
    ins.code = code
    classes_seen: set[str] = set()
    memory = False
    for i in range(info.op_count):
        kind = info.op_kind(i)
        name = _NAMES.get(kind, "")
        if name in _MEMORY_NAMES or name.endswith(("_OR_MEM", "_OR_MEM_MPX")):
            memory = True
            ins.set_op_kind(i, OpKind.MEMORY)
        elif kind in _FIXED:
            ins.set_op_kind(i, OpKind.REGISTER)
            ins.set_op_register(i, _FIXED[kind])
        elif kind in _IMMEDIATES:
            ins.set_op_kind(i, _IMMEDIATES[kind])
            _set_immediate(ins, i, _IMMEDIATES[kind])
        else:
            prefix = name.split("_")[0]
            if prefix not in _CLASSES:
                return None         # branches, string and VSIB operands, system registers
            ins.set_op_kind(i, OpKind.REGISTER)
            ins.set_op_register(i, _CLASSES[prefix][prefix in classes_seen])
            classes_seen.add(prefix)
    if not memory:
        return None
    size = MemorySizeInfo(ins.memory_size).size
    ins.memory_base = base
    ins.memory_index = Register.NONE
    ins.memory_displacement = 8 if size <= 8 else 0 if short else 0x100
    ins.memory_displ_size = (1 if size <= 8 else 0) if short else 8
    try:
        encoder = Encoder(64)
        encoder.encode(ins, ADDRESS)
        encoded = bytes(encoder.take_buffer())
    except ValueError:
        return None
    # fstenv, fsave, fstcw...: wait, then the no-wait form, which is the site that faults
    return encoded[1:] if code in _WAITING else encoded


def _set_immediate(ins, i: int, kind: int) -> None:
    if kind == OpKind.IMMEDIATE8 and i and ins.op_kind(i - 1) == OpKind.IMMEDIATE8:
        ins.set_op_kind(i, OpKind.IMMEDIATE8_2ND)     # enter's and extrq's second immediate
        ins.immediate8_2nd = 1
    else:
        ins.set_immediate_u32(i, 1)


def translation_of(code: int, layout, vector_width: int) -> tuple[str, str]:
    """("in place" | "trampoline" | "not", why not) for a sample site of the form `code`."""
    encoded = sample(code)
    if encoded is None:
        return "not", "no encoding with a constant window address"
    try:
        if translate(ADDRESS, encoded, layout) is not None:
            return "in place", ""
    except Declined:
        pass
    reason = trampoline.why_not(ADDRESS, encoded, layout, vector_width)
    return ("trampoline", "") if reason is None else ("not", reason)


FOLLOWER = bytes.fromhex("49 ff ca")        # dec r10: a short site's next instruction


def short_stub_of(code: int, layout, vector_width: int) -> str | None:
    """For a form whose ``[rdi + disp8]`` encoding is shorter than a jmp rel32, followed by
    `FOLLOWER`: None if the site gets a (punned) stub and a window trampoline, else why not;
    "not short" if that encoding is 5 bytes or more."""
    encoded = sample(code, Register.RDI, short=True)
    if encoded is None:
        return "no encoding with a register address"
    if len(encoded) >= 5:
        return "not short"
    at = 8 if MemorySizeInfo(Decoder(64, encoded).decode().memory_size).size <= 8 else 0x100
    try:
        placed = stub.build(ADDRESS, encoded + FOLLOWER, at, ADDRESS, ADDRESS, pun=False)
        trampoline.build(trampoline.plan(ADDRESS, encoded, layout, vector_width, at), ADDRESS,
                         vector_width, exit=placed.follower)
    except Declined as reason:
        return str(reason)
    return None


def stub_of(code: int, layout, vector_width: int) -> str | None:
    """None if a site of the form `code` addressed ``[rdi + disp32]`` (rdi 0: the same window
    address as `sample`'s) gets a stub (`regmap.x86.stub`) and a window trampoline; else why not."""
    encoded = sample(code, Register.RDI)
    if encoded is None:
        return "no encoding with a register address"
    try:
        at = stub.window_address(ADDRESS, encoded, lambda name: 0)
        if at is None:
            stub.decode(ADDRESS, encoded)          # raises the reason
            return "no stub"
        stub.build(ADDRESS, encoded, at, ADDRESS, ADDRESS, pun=False)
        trampoline.build(trampoline.plan(ADDRESS, encoded, layout, vector_width, at), ADDRESS,
                         vector_width)
    except Declined as reason:
        return str(reason)
    return None


def fast_fault_of(code: int, layout, vector_width: int) -> str | None:
    """None if a faulting site of the form `code` (`sample`'s) is sent to its trampoline by fast
    faults (`regmap.runtime.dispatch` in-process, `regmap.trace.known` traced), which need no
    patching: in-place forms count, and a site of any length; else why not."""
    encoded = sample(code)
    if encoded is None:
        return "no encoding with a constant window address"
    try:
        trampoline.operand_address(ADDRESS, encoded)
    except Declined as reason:
        return str(reason)
    return trampoline.why_not(ADDRESS, encoded, layout, vector_width)


__all__ = ["ADDRESS", "fast_fault_of", "sample", "stub_of", "translation_of"]
