"""Trampolines: out-of-line machine code that does what a window instruction does, without a fault.

A window instruction with a constant address and no exact register form
(`regmap.x86.translate`) -- ``mov rax, [4]``, ``mov dword [8], eax``,
``or qword [0x88], 0x400``, ``movdqu xmm0, [0]``, ``vpaddd zmm1, zmm2, [0x100]`` --
can still run on the CPU if its window bytes are in memory.  Its trampoline
puts them there, on the thread's own stack, runs the instruction against
them, and puts the written bytes back into the registers:

1. ``lea rsp, [rsp - FRAME]``: the scratch lies below the red zone (the 128
   bytes under rsp that leaf code may use) and above the new rsp, so a signal
   delivered meanwhile puts its frame below it and leaves it alone;
2. one general register, the *base* (one the instruction does not use), is
   saved at ``[rsp]`` and pointed at a 256-byte aligned mirror of the window:
   ``mov r11b, 0`` clears its low eight bits without touching the flags (``and``
   would), with an x86-64 baseline instruction: no CPU feature is asked for;
3. every register placed in the window bytes the operand covers is stored at
   its window offset in the mirror (the rip slot as the site's next address,
   the rflags slot through ``pushfq``), so the operand's address modulo 64 is
   the window's: #GP for an aligned SSE operand and #AC are raised as at the
   window address;
4. the instruction itself, its memory operand ``[base + offset]``;
5. if it writes memory, the registers are loaded back from the mirror (the rsp slot on the
   way out, ``mov rsp, [rsp + 8]`` as the last instruction before the jump back; a
   general register whole; xmm with a legacy load and ymm with an insert into
   the zmm, which keep the upper lanes, as the window write does; rflags with
   ``popfq``, which at CPL 3 changes the user-writable flags only, the
   emulator's `regmap.x86.flags.USER_WRITABLE`);
6. the base back from ``[rsp]``, ``lea rsp, [rsp + FRAME]``, ``jmp`` to the
   site's next instruction, or, when the rip slot was written, ``ret`` to the
   written address (``ret imm16`` pops the target and restores rsp in one
   instruction: no byte of it ever sits below rsp).

Only step 4 can fault, at a known address (`Trampoline.instruction`): the
runtime maps such a fault back onto the site (rsp and the base restored, rip
the site's) before it delivers it, as if the instruction had raised it in
place.  Flags are never touched by steps 1-3 and 5-6 (``mov``, ``lea``,
``pushfq``/``pop``, vector moves), so undefined flags are the CPU's
by construction.

The site becomes ``jmp rel32`` to the trampoline, followed by int3 up to its
old length (never executed).  This module only builds the bytes; the
runtime (`regmap.runtime.trampolines`) finds room within ±2 GiB of the site,
writes them and patches the site.
"""
from __future__ import annotations

from typing import NamedTuple

from iced_x86 import (Code, Decoder, Encoder, FlowControl, Formatter, FormatterSyntax, Instruction,
                      InstructionInfoFactory, MemoryOperand, MemorySizeInfo, Mnemonic, OpKind,
                      Register, RegisterExt)

from regmap.errors import LayoutError
from regmap.x86.machine_code import based
from regmap.x86.native.transfer import original_fop
from regmap.x86.operands import REGISTER_NAMES
from regmap.x86.translate import ENCODINGS, WRITES, Declined

RED_ZONE = 128          # System V ABI: below rsp, leaf code's own
SAVED_BASE = 0          # [moved rsp + 0]: the base register's value
TARGET = 8              # [moved rsp + 8]: where a write to the rip slot jumps (or a spare register)
MIRROR = 16             # the mirror starts at the first ALIGN-byte boundary from here
LINE = 64               # the alignment the mirror keeps (a cache line, the largest operand)
ALIGN = 256             # the base's: a byte store clears the low eight bits, flags untouched
JMP_REL32 = 0xE9
INT3 = 0xCC
JUMP_LENGTH = 5
MAX_OPERAND = 64
M64 = (1 << 64) - 1
FXSAVE_AREA = 512 + 32     # an x87 form's FXSAVE64 image and four constants (`_x87_pointers`)
# The base is the first of these the instruction does not use (rbp and rsp never: rsp moves).
BASES = (Register.R11, Register.R10, Register.R9, Register.R8, Register.RSI, Register.RDI,
         Register.RDX, Register.RCX, Register.RBX, Register.RAX, Register.R12, Register.R13,
         Register.R14, Register.R15)

BIT_OFFSET = frozenset({Mnemonic.BT, Mnemonic.BTS, Mnemonic.BTR, Mnemonic.BTC})
ICED = {name: value for value, name in REGISTER_NAMES.items()}
_FORMATTER = Formatter(FormatterSyntax.INTEL)
_INFO = InstructionInfoFactory()


class Trampoline(NamedTuple):
    """A site's trampoline: `code` to be placed at `address`, and what the site becomes."""
    site: int
    old: bytes             # the site's instruction
    jump: bytes            # its replacement: jmp rel32 to `address`, int3 to the old length
    address: int
    code: bytes
    instruction: int       # address of the moved instruction, the only one that can fault
    frame: int             # how far rsp is moved down while inside
    base: str              # the general register saved at [rsp] while inside ("r11")
    old_text: str
    new_text: str


class Plan(NamedTuple):
    """What a site's trampoline will do, decided before any address is known."""
    site: int
    old: bytes
    ins: Instruction
    placements: tuple      # (name, mirror offset, size) of each register the operand covers
    operand: int           # the operand's offset in the mirror
    base: int              # iced Register
    spare: int             # a second one, for a read of the rsp slot (saved at [rsp + TARGET])
    writes: bool           # whether the instruction writes its memory operand
    frame: int
    x87: int               # the offset of the FXSAVE area in the mirror for an x87 form, else 0
    address: int           # the operand's window address


def plan(site: int, code: bytes, layout, vector_width: int = 512, at: int | None = None) -> Plan:
    """Decide whether the instruction at `site` gets a trampoline (raises `Declined` if not).

    `at`: the window address a register-addressed operand had (``[rdi + 8]`` with rdi = 0:
    8).  Such a trampoline is right only while the operand's address is `at`, and whoever
    sends a thread to it checks that first (`regmap.runtime.dispatch`); it has no ``jmp`` to
    patch in, and the site may be shorter than one."""
    ins = Decoder(64, code, ip=site).decode()
    if ins.is_invalid:
        raise Declined("not a valid instruction")
    if ins.encoding not in ENCODINGS and not _is_evex(ins):
        raise Declined("only legacy, VEX and EVEX encodings get trampolines")
    memory = [i for i in range(ins.op_count) if ins.op_kind(i) == OpKind.MEMORY]
    if len(memory) != 1:
        raise Declined("no explicit [address] operand")
    if at is None:
        if ins.memory_base != Register.NONE or ins.memory_index != Register.NONE:
            raise Declined("the address depends on a register")
        if ins.memory_displ_size not in (4, 8):
            raise Declined("a 16-bit displacement")
        # (an address-size prefix makes [disp32] zero-extended, not sign-extended: the same
        # address for every window address; the moved instruction addresses the mirror with
        # 64-bit registers)
        if ins.len < JUMP_LENGTH:
            raise Declined("shorter than a jmp rel32")
        address = ins.memory_displacement
    else:
        if ins.is_ip_rel_memory_operand:
            raise Declined("a rip-relative address")
        if ins.memory_index != Register.NONE and not RegisterExt.is_gpr(ins.memory_index):
            raise Declined("a vector index (vsib)")
        address = at
    if ins.segment_prefix != Register.NONE:
        raise Declined("a segment override")
    if ins.flow_control != FlowControl.NEXT:
        raise Declined("a branch (it would leave the trampoline)")
    if ins.mnemonic in BIT_OFFSET and ins.op1_kind == OpKind.REGISTER:
        raise Declined("a register bit offset (it moves the access beyond the operand)")
    size = MemorySizeInfo(ins.memory_size).size
    if not 0 < size <= MAX_OPERAND:
        raise Declined(f"an operand of {size} bytes (at most {MAX_OPERAND} are mirrored)")
    info = _INFO.info(ins)
    used = {RegisterExt.full_register(u.register) for u in info.used_registers()}
    written = {RegisterExt.full_register(u.register) for u in info.used_registers()
               if u.access in WRITES}
    if Register.RSP in used or ins.stack_pointer_increment:
        raise Declined("uses rsp (moved while inside the trampoline)")
    if any(RegisterExt.is_segment_register(r) or RegisterExt.is_cr(r) or RegisterExt.is_dr(r)
           for r in used):
        raise Declined("a segment or system register operand")
    writes = info.op_access(memory[0]) in WRITES
    placements = _placements(layout, address, size)
    bases = {layout.registers.slices(name)[0].basis for name, _, _ in placements}
    # (a write to the rflags slot is loaded back after the instruction's own flags: the window
    # write wins, as in the emulator: ``or qword [0x88], 0x400`` keeps CF)
    if writes and any(REGISTER_NAMES.get(r) in bases for r in written):
        raise Declined("writes a register its own operand's window bytes hold too")
    if writes and {"rsp", "rip"} <= bases:
        raise Declined("a write to both the rsp and the rip slot")
    for name, _, _ in placements:
        _check_copyable(name, layout, vector_width)
    free = [r for r in BASES if r not in used and REGISTER_NAMES[r] not in bases]
    if len(free) < 2:
        raise Declined("no general registers left for the scratch base")
    base, spare = free[:2]
    start = min(at for _, at, _ in placements) // LINE * LINE
    end = max(at + length for _, at, length in placements)
    mirrored = tuple((name, offset - start, length) for name, offset, length in placements)
    span = -(-(end - start) // LINE) * LINE
    x87 = span if original_fop(bytes(code[:ins.len])) >= 0 else 0
    frame = -(-(MIRROR + ALIGN - 1 + span + (FXSAVE_AREA if x87 else 0) + RED_ZONE) // 16) * 16
    return Plan(site, bytes(code[:ins.len]), ins, mirrored, address - start, base, spare, writes,
                frame, x87, address)


def build(p: Plan, address: int, vector_width: int = 512, exit: int | None = None) -> Trampoline:
    """The trampoline of plan `p` placed at `address` (within ±2 GiB of the site).  `exit`: where
    it goes on to, if not to the site's next instruction (a short site's stub, `regmap.x86.stub`,
    has moved that instruction); the rip slot still reads as the next instruction's address."""
    out = _Code(address)
    base, ins = p.base, p.ins
    out.add(Instruction.create_reg_mem(Code.LEA_R64_M, Register.RSP, based(Register.RSP, -p.frame)))
    out.add(Instruction.create_mem_reg(Code.MOV_RM64_R64, based(Register.RSP, SAVED_BASE), base))
    out.add(Instruction.create_reg_mem(Code.LEA_R64_M, base, based(Register.RSP, MIRROR + ALIGN - 1)))
    out.add(Instruction.create_reg_u32(Code.MOV_RM8_IMM8, _low_byte(base), 0))
    for name, offset, _ in p.placements:
        if name == "rsp":       # the rsp the instruction would see: the spare register computes it
            spare = p.spare
            out.add(Instruction.create_mem_reg(Code.MOV_RM64_R64, based(Register.RSP, TARGET), spare))
            out.add(Instruction.create_reg_mem(Code.LEA_R64_M, spare, based(Register.RSP, p.frame)))
            out.add(Instruction.create_mem_reg(Code.MOV_RM64_R64, based(base, offset), spare))
            out.add(Instruction.create_reg_mem(Code.MOV_R64_RM64, spare, based(Register.RSP, TARGET)))
            continue
        for stored in _store(name, base, offset, ins.next_ip):
            out.add(stored)
    moved = ins.copy()
    moved.memory_base = base
    moved.memory_index = Register.NONE
    moved.memory_index_scale = 1
    moved.memory_displacement = p.operand
    moved.memory_displ_size = 1
    instruction = out.add(moved)
    if p.x87:
        _x87_pointers(out, p, instruction, original_fop(bytes(out.data[instruction - address:])))
    rip_written = rsp_written = False
    if p.writes:
        for name, offset, _ in p.placements:
            if name in ("rip", "rsp"):     # a jump, a stack switch: on the way out
                rip_written, rsp_written = rip_written or name == "rip", rsp_written or name == "rsp"
                continue
            for loaded in _load(name, based(base, offset), vector_width):
                out.add(loaded)
    if rip_written or rsp_written:     # the new rip (or rsp) where restoring the base keeps it
        offset = next(o for n, o, _ in p.placements if n == ("rip" if rip_written else "rsp"))
        out.add(Instruction.create_reg_mem(Code.MOV_R64_RM64, base, based(base, offset)))
        out.add(Instruction.create_mem_reg(Code.MOV_RM64_R64, based(Register.RSP, TARGET), base))
    out.add(Instruction.create_reg_mem(Code.MOV_R64_RM64, base, based(Register.RSP, SAVED_BASE)))
    if rsp_written:
        out.add(Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RSP, based(Register.RSP, TARGET)))
        out.add(Instruction.create_branch(Code.JMP_REL32_64, exit or ins.next_ip))
    elif rip_written:
        out.add(Instruction.create_reg_mem(Code.LEA_R64_M, Register.RSP, based(Register.RSP, TARGET)))
        out.add(Instruction.create_u32(Code.RETNQ_IMM16, p.frame - TARGET - 8))
    else:
        out.add(Instruction.create_reg_mem(Code.LEA_R64_M, Register.RSP, based(Register.RSP, p.frame)))
        out.add(Instruction.create_branch(Code.JMP_REL32_64, exit or ins.next_ip))
    displacement = address - (p.site + JUMP_LENGTH)
    if not -(1 << 31) <= displacement < 1 << 31:
        raise Declined("the trampoline is beyond a rel32 jump from the site")
    jump = b""             # a register-addressed site is never patched: it is only sent here
    if p.ins.memory_base == Register.NONE == p.ins.memory_index and len(p.old) >= JUMP_LENGTH:
        jump = (bytes([JMP_REL32]) + (displacement & 0xFFFFFFFF).to_bytes(4, "little")
                + bytes([INT3]) * (len(p.old) - JUMP_LENGTH))
    return Trampoline(p.site, p.old, jump, address, bytes(out.data), instruction, p.frame,
                      REGISTER_NAMES[base], _FORMATTER.format(ins),
                      f"jmp {address:#x} ({_FORMATTER.format(moved)} on the stack)")


def _low_byte(register: int) -> int:
    """The low byte of a 64-bit general register (r11 -> r11b, rsi -> sil)."""
    number = register - Register.RAX
    return Register.AL + number if number < 4 else Register.SPL + number - 4


def _x87_pointers(out: _Code, p: Plan, instruction: int, moved_fop: int) -> None:
    """An x87 instruction leaves its own address in FIP, its operand's in FDP and its opcode in
    FOP: put back what it would have left at the site, as the native engine does (FIP the site,
    FDP the window address, FOP the original's) where the CPU changed them.  FXSAVE64, a
    comparison and a conditional move each, FXRSTOR64; the flags kept by pushfq/popfq."""
    base, spare, fx = p.base, p.spare, p.x87
    constants = fx + 512
    m = lambda offset: based(base, offset)              # noqa: E731
    out.add(Instruction.create_mem(Code.FXSAVE64_M512BYTE, m(fx)))
    out.add(Instruction.create(Code.PUSHFQ))
    out.add(Instruction.create_mem_reg(Code.MOV_RM64_R64, based(Register.RSP, 8 + TARGET), spare))
    for offset, value in ((0, p.site), (8, instruction)):
        out.add(Instruction.create_mem_u32(Code.MOV_RM32_IMM32, m(constants + offset), value & 0xFFFFFFFF))
        out.add(Instruction.create_mem_u32(Code.MOV_RM32_IMM32, m(constants + offset + 4), value >> 32))
    out.add(Instruction.create_mem_i32(Code.MOV_RM64_IMM32, m(constants + 16), p.address))
    out.add(Instruction.create_mem_i32(Code.MOV_RM64_IMM32, m(constants + 24), original_fop(p.old)))
    # FIP: the moved instruction's address -> the site's
    out.add(Instruction.create_reg_mem(Code.MOV_R64_RM64, spare, m(fx + 8)))
    out.add(Instruction.create_reg_mem(Code.CMP_R64_RM64, spare, m(constants + 8)))
    out.add(Instruction.create_reg_mem(Code.CMOVE_R64_RM64, spare, m(constants)))
    out.add(Instruction.create_mem_reg(Code.MOV_RM64_R64, m(fx + 8), spare))
    # FDP: the operand's scratch address -> its window address
    out.add(Instruction.create_reg_mem(Code.LEA_R64_M, spare, m(p.operand)))
    out.add(Instruction.create_reg_mem(Code.CMP_R64_RM64, spare, m(fx + 16)))
    out.add(Instruction.create_reg_mem(Code.MOV_R64_RM64, spare, m(fx + 16)))
    out.add(Instruction.create_reg_mem(Code.CMOVE_R64_RM64, spare, m(constants + 16)))
    out.add(Instruction.create_mem_reg(Code.MOV_RM64_R64, m(fx + 16), spare))
    # FOP: the moved encoding's (another ModR/M byte) -> the original's
    out.add(Instruction.create_reg_mem(Code.MOVZX_R64_RM16, spare, m(fx + 6)))
    out.add(Instruction.create_reg_i32(Code.CMP_RM64_IMM32, spare, moved_fop))
    out.add(Instruction.create_reg_mem(Code.CMOVE_R64_RM64, spare, m(constants + 24)))
    out.add(Instruction.create_mem_reg(Code.MOV_RM16_R16, m(fx + 6), Register.AX + (spare - Register.RAX)))
    out.add(Instruction.create_reg_mem(Code.MOV_R64_RM64, spare, based(Register.RSP, 8 + TARGET)))
    out.add(Instruction.create(Code.POPFQ))
    out.add(Instruction.create_mem(Code.FXRSTOR64_M512BYTE, m(fx)))


class OperandAddress(NamedTuple):
    """How an instruction's memory operand's address comes from the general registers:
    ``(base + (index << shift) + disp) & mask`` (a register None: not there)."""
    base: str | None
    index: str | None
    shift: int
    disp: int
    mask: int

    def value(self, read) -> int:
        """The address, `read(name)` giving each register's 64-bit value."""
        total = self.disp
        if self.base:
            total += read(self.base)
        if self.index:
            total += read(self.index) << self.shift
        return total & self.mask


def operand_address(site: int, code: bytes) -> OperandAddress:
    """The address of the one explicit memory operand of the instruction `code` at `site`, as
    whoever sends a site to its trampoline computes it from the registers the thread stopped
    with (raises `Declined` where that does not give the address: no single memory operand, a
    vector or rip-relative address, or an instruction that writes a register of its own
    address, which a handler that runs after it would see changed)."""
    ins = Decoder(64, code, ip=site).decode()
    memory = [i for i in range(ins.op_count) if ins.op_kind(i) == OpKind.MEMORY]
    if ins.is_invalid or len(memory) != 1:
        raise Declined("no single explicit memory operand")
    written = {RegisterExt.full_register(u.register) for u in _INFO.info(ins).used_registers()
               if u.access in WRITES}
    names: list[str | None] = []
    mask = M64
    for register in (ins.memory_base, ins.memory_index):
        if register == Register.NONE:
            names.append(None)
            continue
        if not (RegisterExt.is_gpr64(register) or RegisterExt.is_gpr32(register)):
            raise Declined(f"the address uses {REGISTER_NAMES.get(register, '?')}")
        full = RegisterExt.full_register(register)
        if full in written:
            raise Declined("the instruction writes a register of its own address")
        if RegisterExt.is_gpr32(register):
            mask = 0xFFFFFFFF
        names.append(REGISTER_NAMES[full])
    if names == [None, None] and ins.memory_displ_size == 4:
        mask = 0xFFFFFFFF           # [disp32] under 67h: zero-extended
    return OperandAddress(names[0], names[1], ins.memory_index_scale.bit_length() - 1,
                          ins.memory_displacement & M64, mask)


def why_not(site: int, code: bytes, layout, vector_width: int = 512) -> str | None:
    """None if the instruction gets a trampoline, else the reason it does not."""
    try:
        build(plan(site, code, layout, vector_width), site, vector_width)
    except Declined as reason:
        return str(reason)
    return None


# -- the pieces ----------------------------------------------------------------------------------

class _Code:
    """Instructions encoded one after another from `address`."""

    def __init__(self, address: int):
        self.address = address
        self.data = bytearray()
        self._encoder = Encoder(64)

    def add(self, ins: Instruction) -> int:
        """Append `ins`; its address."""
        at = self.address + len(self.data)
        try:
            self._encoder.encode(ins, at)
        except ValueError as error:
            raise Declined(f"no encoding: {error}") from None
        self.data += self._encoder.take_buffer()
        return at


def _is_evex(ins) -> bool:
    from iced_x86 import EncodingKind
    return ins.encoding == EncodingKind.EVEX


def _overlapping(layout, address: int, size: int):
    return [p for p in layout.placements() if p.address < address + size and address < p.address + p.size]


def _placements(layout, address: int, size: int) -> tuple:
    """(name, window address, size) of the registers placed in the operand's bytes; each byte
    must be a register's (`layout.resolve` raises otherwise) and no register placed twice."""
    try:
        layout.resolve(address, size)
    except LayoutError as error:
        raise Declined(f"not a window operand: {error}") from None
    found = _overlapping(layout, address, size)
    bases = [layout.registers.slices(p.name)[0].basis for p in found]
    if len(set(bases)) != len(bases):
        raise Declined("one register placed twice in the operand's bytes")
    return tuple((p.name, p.address, p.size) for p in found)


def _check_copyable(name: str, layout, vector_width: int) -> None:
    if name in ("rip", "rflags", "rsp"):
        return
    register = ICED.get(name)
    if register is None:
        raise Declined(f"{name}: no trampoline copies it yet")
    if RegisterExt.is_gpr64(register):
        return
    vector = RegisterExt.is_xmm(register) or RegisterExt.is_ymm(register) \
        or RegisterExt.is_zmm(register)
    if not vector:
        raise Declined(f"{name}: no trampoline copies it yet")
    width = 8 * RegisterExt.size(register)
    if width > vector_width or (vector_width < 512 and RegisterExt.number(register) >= 16):
        raise Declined(f"{name}: not on this host")


def _store(name: str, base: int, offset: int, next_ip: int) -> list:
    """Instructions that store register `name` at ``[base + offset]``, flags untouched; the rip
    slot holds the site's next address."""
    memory = based(base, offset)
    if name == "rip":
        return [Instruction.create_mem_u32(Code.MOV_RM32_IMM32, memory, next_ip & 0xFFFFFFFF),
                Instruction.create_mem_u32(Code.MOV_RM32_IMM32, based(base, offset + 4),
                                           next_ip >> 32)]
    if name == "rflags":
        return [Instruction.create(Code.PUSHFQ), Instruction.create_mem(Code.POP_RM64, memory)]
    register = ICED[name]
    if RegisterExt.is_gpr64(register):
        return [Instruction.create_mem_reg(Code.MOV_RM64_R64, memory, register)]
    number = RegisterExt.number(register)
    if RegisterExt.is_zmm(register):
        return [Instruction.create_mem_reg(Code.EVEX_VMOVDQU64_ZMMM512_K1Z_ZMM, memory, register)]
    if number >= 16:        # extracted from the zmm: AVX-512F alone (an EVEX move of xmm16 is VL)
        code = (Code.EVEX_VEXTRACTI32X4_XMMM128_K1Z_ZMM_IMM8 if RegisterExt.is_xmm(register)
                else Code.EVEX_VEXTRACTI64X4_YMMM256_K1Z_ZMM_IMM8)
        return [Instruction.create_mem_reg_u32(code, memory, Register.ZMM0 + number, 0)]
    code = Code.MOVDQU_XMMM128_XMM if RegisterExt.is_xmm(register) else Code.VEX_VMOVDQU_YMMM256_YMM
    return [Instruction.create_mem_reg(code, memory, register)]


def _load(name: str, memory: MemoryOperand, vector_width: int) -> list:
    """Instructions that load register `name` from `memory`, changing no other bits of the
    register's basis (the window write changes only the bytes it writes) and no flag but
    through the rflags slot."""
    if name == "rflags":
        return [Instruction.create_mem(Code.PUSH_RM64, memory), Instruction.create(Code.POPFQ)]
    register = ICED[name]
    if RegisterExt.is_gpr64(register):
        return [Instruction.create_reg_mem(Code.MOV_R64_RM64, register, memory)]
    number = RegisterExt.number(register)
    zmm = Register.ZMM0 + number
    if RegisterExt.is_zmm(register):
        return [Instruction.create_reg_mem(Code.EVEX_VMOVDQU64_ZMM_K1Z_ZMMM512, register, memory)]
    if RegisterExt.is_xmm(register):
        if number < 16:
            return [Instruction.create_reg_mem(Code.MOVDQU_XMM_XMMM128, register, memory)]
        return [Instruction.create_reg_reg_mem_u32(Code.EVEX_VINSERTI32X4_ZMM_K1Z_ZMM_XMMM128_IMM8,
                                                   zmm, zmm, memory, 0)]
    if vector_width >= 512:
        return [Instruction.create_reg_reg_mem_u32(Code.EVEX_VINSERTI64X4_ZMM_K1Z_ZMM_YMMM256_IMM8,
                                                   zmm, zmm, memory, 0)]
    return [Instruction.create_reg_mem(Code.VEX_VMOVDQU_YMM_YMMM256, register, memory)]

