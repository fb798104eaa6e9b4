"""Hot-site translation: a window instruction rewritten into its exact register form.

``add rax, qword ptr [8]`` always reads the window bytes 8..15, which the
default layout makes rcx; ``add rax, rcx`` has exactly the same effect on
every register, flag and memory byte, and runs at native speed.  This module
decides, from x86 knowledge alone, when such a rewrite is exact, and builds
the new bytes; the backends (`regmap.runtime.patch`, `regmap.trace.patch`)
decide when to write them and how.

A translation is exact only when all of these hold, and `translate` returns
None (with `why_not` saying which failed) otherwise:

- the operand's address is constant: no base, no index, no segment override,
  no address-size prefix (which wraps the address at 32 bits);
- the address is a multiple of the operand's size (a layout may place xmm0 at
  0x108: ``movaps xmm0, [0x108]`` raises #GP, and any misaligned operand #AC
  when the thread sets AC; the register form never faults);
- the window bytes are one whole register of the layout's register file
  that the instruction can name: a general register of the operand's width
  (rcx, ecx, cx, cl, or ch when no REX prefix is needed) or xmm/ymm;
- the instruction's own operand accepts a register (an r/m operand of that
  width: `OpCodeInfo.op_kind` is R64_OR_MEM, XMM_OR_MEM, ...) and reads or
  writes as many bytes as the register has (``movss xmm0, dword [0x100]``
  does not qualify: it reads 4 bytes where xmm0 has 16, and zeroes the rest);
- a register write does the same as the window write: writing a 32-bit
  general register zero-extends it (``mov dword [8], eax`` changes
  rcx[31:0] only, ``mov ecx, eax`` all of rcx), and a VEX store writes the
  register's upper lanes (``vmovdqu [0x100], xmm1`` leaves ymm0[255:128],
  ``vmovdqu xmm0, xmm1`` clears them), so those stay in memory form;
- the register form means the same thing: bit tests with a register offset
  (``bt [8], rax`` addresses a bit string beyond the operand, ``bt rcx, rax``
  takes the offset modulo 64), LOCK (invalid with a register), and stack
  instructions on the rsp slot are declined;
- the new encoding fits in the old bytes;
- where the SDM leaves a flag undefined, the host CPU answers alike for both
  forms (an Intel CPU computes OF of ``rol m64, imm8`` by more than one bit
  and leaves it alone for ``rol r64, imm8``), on a sample of inputs.

One read of the rip slot is translated too: ``mov r64, qword [0x80]`` (the
window's rip reads as the next instruction's address) becomes
``lea r64, [rip]``, whose next instruction is the same one.

The new bytes are ONE instruction as long as the old one: the register form
padded in front with CS segment prefixes (2Eh), which an instruction without a
memory operand ignores, and which the Linux kernel itself uses to pad
rewritten indirect calls.  It ends where the old one did (its next_ip, the
return address ``call rcx`` pushes, is the old one's), and no thread can ever
be paused inside it: with NOPs in front, a thread stopped between the NOPs and
the register instruction would resume inside the old instruction once
`unmap_registers()` put it back.

Every translation is checked by decoding the new bytes back with iced-x86:
one instruction of the same `Code` with the same operands except the memory
one, now the register, ending where the old instruction ended.
"""
from __future__ import annotations

from typing import NamedTuple

from iced_x86 import (Code, Decoder, EncodingKind, Encoder, Formatter, FormatterSyntax, Instruction,
                      InstructionInfoFactory, MemoryOperand, MemorySizeInfo, Mnemonic, OpAccess,
                      OpCodeInfo, OpCodeOperandKind, OpKind, Register, RegisterExt)

from regmap.alias import Slice
from regmap.errors import LayoutError
from regmap.x86 import undefined
from regmap.x86.operands import REGISTER_NAMES

_K = OpCodeOperandKind
# The r/m operand kinds that take a register as well as memory, and the register width.
REGISTER_OR_MEMORY = {_K.R8_OR_MEM: 8, _K.R16_OR_MEM: 16, _K.R32_OR_MEM: 32, _K.R64_OR_MEM: 64,
                      _K.XMM_OR_MEM: 128, _K.YMM_OR_MEM: 256}
WRITES = frozenset({OpAccess.WRITE, OpAccess.READ_WRITE, OpAccess.COND_WRITE,
                    OpAccess.READ_COND_WRITE})
# bt/bts/btr/btc m, r: the register offset reaches beyond the operand (a bit string)
BIT_STRING = frozenset({Mnemonic.BT, Mnemonic.BTS, Mnemonic.BTR, Mnemonic.BTC})
# system register stores, whose register form writes more (or other) bits than their memory form
SYSTEM_STORES = frozenset({Mnemonic.SMSW, Mnemonic.SLDT, Mnemonic.STR})
ENCODINGS = frozenset({EncodingKind.LEGACY, EncodingKind.VEX})

# The register names iced-x86 spells differently from the register files (r8b is R8L).
ICED_REGISTERS = {name: value for value, name in REGISTER_NAMES.items()}

# A segment override prefix, ignored by an instruction without a memory operand: the padding.
CS_PREFIX = 0x2E
MAX_LENGTH = 15      # the longest x86 instruction, prefixes included

_FORMATTER = Formatter(FormatterSyntax.INTEL)
_INFO = InstructionInfoFactory()


class Translation(NamedTuple):
    """The old bytes at `address` and the register form that replaces them (same length)."""
    address: int
    old: bytes
    new: bytes
    old_text: str      # "add rax,[8]"
    new_text: str      # "add rax,rcx" (the prefixes that pad it are not shown)
    kind: str = "in place"     # or "trampoline" (`regmap.x86.trampoline`: new is a jmp to it)

    def __str__(self) -> str:
        return f"{self.address:#x}  {self.old_text}  ->  {self.new_text}"


def overlaps(translation: Translation, others) -> bool:
    """Whether `translation`'s bytes take in another's (a short site's jump over the instruction
    after it, already rewritten: its rewritten bytes would go back as its own at unmapping)."""
    end = translation.address + len(translation.old)
    return any(other.address < end and translation.address < other.address + len(other.old)
               for other in others if other.address != translation.address)


class Declined(Exception):
    """Why an instruction stays in memory form."""


def translate(address: int, code: bytes, layout) -> Translation | None:
    """The exact register form of the window instruction `code` at `address`, or None."""
    try:
        return _translate(address, code, layout)
    except Declined:
        return None


def why_not(address: int, code: bytes, layout) -> str | None:
    """None if `translate` succeeds, else the reason it declines."""
    try:
        _translate(address, code, layout)
    except Declined as reason:
        return str(reason)
    return None


def warm_up(layout, emulator=None) -> None:
    """Pay the one-time costs (iced-x86's lazily built tables, the emulator's first decode and
    compile) now, when translation is switched on, rather than at a program's first hot site."""
    code = bytes.fromhex("48 03 04 25 08 00 00 00")     # add rax, [8]
    translate(0, code, layout)
    form_at = getattr(emulator, "form_at", None)
    if form_at is not None:
        form_at(0, code)      # address 0 holds no instruction: the cached form is never used


def padded(body: bytes, length: int) -> bytes:
    """`body` lengthened to `length` bytes by CS prefixes in front: still one instruction."""
    return bytes([CS_PREFIX]) * (length - len(body)) + body


def _translate(address: int, code: bytes, layout) -> Translation:
    ins = Decoder(64, code, ip=address).decode()
    if ins.is_invalid:
        raise Declined("not a valid instruction")
    old = bytes(code[:ins.len])
    index = _memory_operand(ins)
    window_address = _constant_address(ins)
    if _reads_rip_slot(ins, window_address, layout):
        _check_aligned(ins, window_address)
        return _rip_read(address, old, ins)
    register, width = _window_register(ins, index, window_address, layout)
    _check_aligned(ins, window_address)
    _check_same_meaning(ins, index, register, width, layout)
    new_ins = ins.copy()
    new_ins.set_op_kind(index, OpKind.REGISTER)
    new_ins.set_op_register(index, register)
    body = _encode(new_ins, address, len(old))
    new = padded(body, len(old))
    _verify(address, new, ins, index, register)
    _check_undefined_alike(ins, old, body, register, width, layout)
    return Translation(address, old, new, _FORMATTER.format(ins), _FORMATTER.format(new_ins))


def _check_undefined_alike(ins, old: bytes, body: bytes, register: int, width: int, layout) -> None:
    """Where the SDM leaves a flag (or a 16-bit shld/shrd's result) undefined, a CPU may answer
    differently for the memory and the register form (an Intel one does for ``rol m64, imm8``):
    translated only if the host answers alike (`regmap.x86.undefined.same_answers`)."""
    if not ins.rflags_undefined:
        return
    basis, _, lo = layout.registers.slices(REGISTER_NAMES[register])[0]
    if basis not in undefined.GPRS or not undefined.same_answers(old, body, basis, lo, width):
        raise Declined("the host CPU leaves the undefined flags otherwise in the register form")


def _reads_rip_slot(ins, window_address: int, layout) -> bool:
    if ins.code != Code.MOV_R64_RM64:
        return False
    try:
        return layout.resolve(window_address, 8) == (Slice("rip", 63, 0),)
    except LayoutError:
        return False


def _rip_read(address: int, old: bytes, ins) -> Translation:
    """``mov r64, [rip slot]`` -> ``lea r64, [rip]``: both give the next instruction's address."""
    lea = Instruction.create_reg_mem(Code.LEA_R64_M, ins.op0_register,
                                     MemoryOperand(Register.RIP, displ=ins.next_ip))
    padding = len(old) - len(_encode(lea, address, len(old)))
    # RIP-relative: encoded where it ends, after the prefixes, so its next_ip is the old one's
    new = padded(_encode(lea, address + padding, len(old) - padding), len(old))
    last = _one_instruction(address, new)
    if not (last is not None and last.code == Code.LEA_R64_M
            and last.op0_register == ins.op0_register and last.memory_base == Register.RIP
            and last.memory_displacement == ins.next_ip == last.next_ip):
        raise Declined("the new encoding does not decode back to the intended instruction")
    return Translation(address, old, new, _FORMATTER.format(ins), _FORMATTER.format(last))


def _memory_operand(ins) -> int:
    if ins.encoding not in ENCODINGS:
        raise Declined("only legacy and VEX encodings are translated")
    operands = [i for i in range(ins.op_count) if ins.op_kind(i) == OpKind.MEMORY]
    if len(operands) != 1:
        raise Declined("no explicit [address] operand")
    index = operands[0]
    if OpCodeInfo(ins.code).op_kind(index) not in REGISTER_OR_MEMORY:
        raise Declined("the operand takes memory only (no register form)")
    return index


def _constant_address(ins) -> int:
    if ins.memory_base != Register.NONE or ins.memory_index != Register.NONE:
        raise Declined("the address depends on a register")
    if ins.segment_prefix != Register.NONE:
        raise Declined("a segment override (fs:/gs: have a base; others are not worth it)")
    if ins.memory_displ_size != 8:
        raise Declined("an address-size prefix (the address wraps at 32 bits)")
    return ins.memory_displacement


def _check_aligned(ins, window_address: int) -> None:
    size = MemorySizeInfo(ins.memory_size).size
    if size > 1 and window_address % size:
        raise Declined(f"the operand is not {size}-byte aligned: the memory form may fault (#GP for "
                       "SSE, #AC under alignment checking), the register form never does")


def _window_register(ins, index: int, window_address: int, layout) -> tuple[int, int]:
    """The iced-x86 register that the operand's window bytes are, and its width in bits."""
    size = MemorySizeInfo(ins.memory_size).size
    width = REGISTER_OR_MEMORY[OpCodeInfo(ins.code).op_kind(index)]
    if 8 * size != width:
        raise Declined(f"reads or writes {size} bytes, its register form {width // 8}")
    try:
        slices = layout.resolve(window_address, size)
    except LayoutError as error:
        raise Declined(f"not a window operand: {error}") from None
    registers = layout.registers
    if len(slices) != 1:
        raise Declined("the bytes span several registers")
    (basis, hi, lo), = slices
    name = registers.name_of(basis, hi, lo) if basis is not None else None
    register = ICED_REGISTERS.get(name) if name is not None else None
    if register is None or not _encodable_class(register, width):
        raise Declined(f"{layout.describe(window_address, size)} is not a register this "
                       "instruction can name")
    if registers.slices(REGISTER_NAMES[register]) != slices:
        raise Declined(f"{name} is not exactly those window bytes")
    return register, width


def _encodable_class(register: int, width: int) -> bool:
    """A general register of the operand's width, or xmm0-15 / ymm0-15 (EVEX is not used)."""
    if 8 * RegisterExt.size(register) != width:
        return False
    if RegisterExt.is_gpr(register):
        return True
    return (RegisterExt.is_xmm(register) or RegisterExt.is_ymm(register)) \
        and RegisterExt.number(register) < 16


def _check_same_meaning(ins, index: int, register: int, width: int, layout) -> None:
    if ins.has_lock_prefix:
        raise Declined("LOCK (invalid with a register operand)")
    if ins.has_rep_prefix or ins.has_repne_prefix or ins.has_xacquire_prefix \
            or ins.has_xrelease_prefix:
        raise Declined("a REP/XACQUIRE/XRELEASE prefix")
    if ins.mnemonic in SYSTEM_STORES or any(
            RegisterExt.is_segment_register(ins.op_register(i)) or RegisterExt.is_cr(ins.op_register(i))
            for i in range(ins.op_count) if ins.op_kind(i) == OpKind.REGISTER):
        raise Declined("a segment or system register operand")
    if ins.mnemonic in BIT_STRING and ins.op_kind(1) == OpKind.REGISTER:
        raise Declined("a bit test with a register offset addresses a bit string in memory")
    basis = layout.registers.slices(REGISTER_NAMES[register])[0].basis
    if ins.stack_pointer_increment and basis == "rsp":
        raise Declined("a stack instruction on the rsp slot")
    if _INFO.info(ins).op_access(index) in WRITES:
        if width == 32:
            raise Declined("a 32-bit register write zero-extends; a 4-byte window write does not")
        if width >= 128 and ins.encoding != EncodingKind.LEGACY \
                and width < layout.registers.width(basis):
            raise Declined("a VEX register write clears the upper lanes; the window write does not")


def _encode(ins, address: int, room: int) -> bytes:
    try:
        encoder = Encoder(64)
        encoder.encode(ins, address)
        body = bytes(encoder.take_buffer())
    except ValueError as error:   # e.g. ch with a register that needs REX
        raise Declined(f"no encoding: {error}") from None
    if len(body) > room:
        raise Declined(f"the register form needs {len(body)} bytes, the old one has {room}")
    return body


def _verify(address: int, new: bytes, old_ins, index: int, register: int) -> None:
    """Decode `new` back: the old instruction, with the register in place of memory."""
    last = _one_instruction(address, new)
    same = (last is not None and last.code == old_ins.code and last.op_count == old_ins.op_count
            and all(_same_operand(last, old_ins, i, register if i == index else None)
                    for i in range(old_ins.op_count)))
    if not same:
        raise Declined("the new encoding does not decode back to the intended instruction")


def _one_instruction(address: int, code: bytes):
    """The one valid instruction `code` is, all of it, or None."""
    if len(code) > MAX_LENGTH:
        return None
    ins = Decoder(64, code, ip=address).decode()
    return None if ins.is_invalid or ins.len != len(code) else ins


def _same_operand(new, old, i: int, register: int | None) -> bool:
    kind = new.op_kind(i)
    if register is not None:
        return kind == OpKind.REGISTER and new.op_register(i) == register
    if kind != old.op_kind(i):
        return False
    if kind == OpKind.REGISTER:
        return new.op_register(i) == old.op_register(i)
    return new.immediate(i) == old.immediate(i)     # the only other kinds beside memory
