"""Random valid encodings of an instruction form (an iced-x86 ``Code``) whose memory operand is in the window.

``forms(code)`` is a hypothesis strategy of ``Form``: the instruction bytes, the window offset and
size of its memory operand, and the register values that make the effective address land there
(for a base/index operand).  Register operands are drawn from the class and range the encoding
allows (legacy, VEX, EVEX), immediates from edge values and random ones of the right width, the
address from every shape x86-64 has: absolute ``[disp32]`` (SIB form, not RIP-relative),
``[base+disp]``, ``[base+index*scale+disp]``, ``[index*scale+disp32]``, ``moffs``, and the same with
a 32-bit address size (``67`` prefix: the sum wraps at 2**32, so the upper halves of base and index
are free).  The encoder is the referee of what is legal (REX versus ah..bh and so on): a draw it
rejects is drawn again.
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache

from hypothesis import strategies as st
from iced_x86 import (
    Code, Decoder, Encoder, EncodingKind, FlowControl, Instruction, InstructionInfoFactory,
    MemorySizeExt, Mnemonic, OpCodeInfo, RegisterExt, OpCodeOperandKind as K, OpKind, Register,
)

# ---------------------------------------------------------------------------------------------
# registers


def _regs(*names: str) -> tuple[int, ...]:
    return tuple(getattr(Register, n) for n in names)


GPR64 = _regs("RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI",
              "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15")
GPR32 = _regs("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI",
              *(f"R{i}D" for i in range(8, 16)))
GPR16 = _regs("AX", "CX", "DX", "BX", "SP", "BP", "SI", "DI", *(f"R{i}W" for i in range(8, 16)))
GPR8 = _regs("AL", "CL", "DL", "BL", "SPL", "BPL", "SIL", "DIL", *(f"R{i}L" for i in range(8, 16)),
             "AH", "CH", "DH", "BH")
XMM = _regs(*(f"XMM{i}" for i in range(32)))
YMM = _regs(*(f"YMM{i}" for i in range(32)))
ZMM = _regs(*(f"ZMM{i}" for i in range(32)))
KREG = _regs(*(f"K{i}" for i in range(8)))
MMREG = _regs(*(f"MM{i}" for i in range(8)))
BASIS_OF_GPR64 = dict(zip(GPR64, ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                                  *(f"r{i}" for i in range(8, 16)))))

_REGISTER_KINDS = {
    K.R8_REG: GPR8, K.R8_OPCODE: GPR8,
    K.R16_REG: GPR16, K.R16_RM: GPR16, K.R16_OPCODE: GPR16, K.R16_REG_MEM: GPR16,
    K.R32_REG: GPR32, K.R32_RM: GPR32, K.R32_OPCODE: GPR32, K.R32_VVVV: GPR32, K.R32_REG_MEM: GPR32,
    K.R64_REG: GPR64, K.R64_RM: GPR64, K.R64_OPCODE: GPR64, K.R64_VVVV: GPR64, K.R64_REG_MEM: GPR64,
    K.XMM_REG: XMM, K.XMM_RM: XMM, K.XMM_VVVV: XMM, K.XMMP3_VVVV: XMM, K.XMM_IS4: XMM, K.XMM_IS5: XMM,
    K.YMM_REG: YMM, K.YMM_RM: YMM, K.YMM_VVVV: YMM, K.YMM_IS4: YMM, K.YMM_IS5: YMM,
    K.ZMM_REG: ZMM, K.ZMM_RM: ZMM, K.ZMM_VVVV: ZMM, K.ZMMP3_VVVV: ZMM,
    K.K_REG: KREG, K.K_RM: KREG, K.K_VVVV: KREG, K.KP1_REG: KREG,
    K.MM_REG: MMREG, K.MM_RM: MMREG,
}
_FIXED_REGISTERS = {K.AL: Register.AL, K.AX: Register.AX, K.EAX: Register.EAX, K.RAX: Register.RAX,
                    K.CL: Register.CL, K.DX: Register.DX}
_MEMORY_KINDS = {K.R8_OR_MEM, K.R16_OR_MEM, K.R32_OR_MEM, K.R64_OR_MEM, K.XMM_OR_MEM, K.YMM_OR_MEM,
                 K.ZMM_OR_MEM, K.K_OR_MEM, K.MEM, K.MEM_OFFS, K.MM_OR_MEM}
_VSIB_KINDS = {K.MEM_VSIB32X, K.MEM_VSIB32Y, K.MEM_VSIB32Z, K.MEM_VSIB64X, K.MEM_VSIB64Y, K.MEM_VSIB64Z}
VSIB_INDEX = {  # operand kind -> (index register pool, index bits)
    K.MEM_VSIB32X: ("XMM", 32), K.MEM_VSIB32Y: ("YMM", 32), K.MEM_VSIB32Z: ("ZMM", 32),
    K.MEM_VSIB64X: ("XMM", 64), K.MEM_VSIB64Y: ("YMM", 64), K.MEM_VSIB64Z: ("ZMM", 64),
}
_IMMEDIATES = {  # operand kind -> (OpKind, bits, signed)
    K.IMM8: (OpKind.IMMEDIATE8, 8, False), K.IMM16: (OpKind.IMMEDIATE16, 16, False),
    K.IMM32: (OpKind.IMMEDIATE32, 32, False), K.IMM64: (OpKind.IMMEDIATE64, 64, False),
    K.IMM8SEX16: (OpKind.IMMEDIATE8TO16, 8, True), K.IMM8SEX32: (OpKind.IMMEDIATE8TO32, 8, True),
    K.IMM8SEX64: (OpKind.IMMEDIATE8TO64, 8, True), K.IMM32SEX64: (OpKind.IMMEDIATE32TO64, 32, True),
    K.IMM8_CONST_1: (OpKind.IMMEDIATE8, 0, False),
}
# operand kinds this generator cannot drive (x87 stack operands, segment, bound, control registers...)
_UNDRIVABLE = {K.ST0, K.STI_OPCODE, K.SEG_REG, K.BND_REG,
               K.BND_OR_MEM_MPX, K.MEM_MPX, K.MEM_MIB, K.CR_REG, K.DR_REG, K.TR_REG, K.TMM_REG, K.TMM_RM,
               K.TMM_VVVV, K.SIBMEM, K.SEG_RSI, K.SEG_RDI, K.ES_RDI, K.SEG_RBX_AL, K.IMM4_M2Z,
               K.ES, K.CS, K.SS, K.DS, K.FS, K.GS}


# ---------------------------------------------------------------------------------------------
# the window


@dataclasses.dataclass(frozen=True)
class Region:
    start: int
    end: int        # exclusive
    kind: str       # "gpr", "vector" or "special"


@lru_cache(maxsize=None)
def window_regions(layout=None) -> tuple[Region, ...]:
    """Contiguous placed ranges of the layout, grouped by what they hold."""
    try:
        from regmap.layout import load_layout
        placements = sorted((layout or load_layout()).placements())
    except Exception:                      # before the layout module exists: the default layout's GPRs
        return (Region(0, 0x80, "gpr"),)

    def kind(name: str) -> str:
        if name in BASIS_OF_GPR64.values():
            return "gpr"
        if name[:3] in ("xmm", "ymm", "zmm"):
            return "vector"
        return "special"

    runs: list[Region] = []
    for p in placements:
        k = kind(p.name)
        if runs and runs[-1].end == p.address and runs[-1].kind == k:
            runs[-1] = Region(runs[-1].start, p.address + p.size, k)
        else:
            runs.append(Region(p.address, p.address + p.size, k))
    return tuple(runs)


def slot_registers(offset: int, size: int, layout=None) -> frozenset[str]:
    """The basis registers that window bytes offset..offset+size-1 hold."""
    try:
        from regmap.layout import load_layout
        return frozenset(s.basis for s in (layout or load_layout()).resolve(offset, size))
    except Exception:
        return frozenset(BASIS_OF_GPR64[GPR64[i]] for i in range(offset // 8, (offset + size - 1) // 8 + 1)
                         if i < 16)


# ---------------------------------------------------------------------------------------------
# what a Code is


@dataclasses.dataclass(frozen=True)
class FormInfo:
    code: int
    name: str
    drivable: bool
    reason: str                 # why not, when not drivable
    memory_operand: int | None  # operand index of the window operand
    is_branch: bool             # jmp/call through the window
    uses_stack: bool
    encoding: int
    bit_offset_operand: int | None = None   # BT/BTS/BTR/BTC m, r: the register that moves the access
    far: bool = False                       # far jmp/call: the operand is offset:selector
    string: str = ""                        # movs/cmps/stos/lods/scas: which of them


_CODE_NAMES = {v: k for k, v in Code.__dict__.items() if isinstance(v, int) and not k.startswith("_")}


def code_name(code: int) -> str:
    return _CODE_NAMES.get(code, str(code))


@lru_cache(maxsize=None)
def form_info(code: int) -> FormInfo:
    op = OpCodeInfo(code)
    name = code_name(code)
    kinds = list(op.op_kinds())
    mem = [i for i, k in enumerate(kinds) if k in _MEMORY_KINDS or k in _VSIB_KINDS]

    def no(reason: str) -> FormInfo:
        return FormInfo(code, name, False, reason, mem[0] if mem else None, False, False, op.encoding)

    if not op.mode64:
        return no("not available in 64-bit mode")
    if op.encoding not in (EncodingKind.LEGACY, EncodingKind.VEX, EncodingKind.EVEX):
        return no("encoding other than legacy/VEX/EVEX")
    string = _string_kind(op)
    if string:
        return FormInfo(code, name, True, "", None, False, False, op.encoding, None, False, string)
    if len(mem) != 1:
        return no("no explicit memory operand" if not mem else "several memory operands")
    bad = [k for k in kinds if k in _UNDRIVABLE]
    if bad:
        names = {v: k for k, v in K.__dict__.items() if isinstance(v, int)}
        return no("operand kinds the runner cannot drive: " + ", ".join(names.get(k, str(k)) for k in bad))
    unknown = [k for k in kinds if k not in _REGISTER_KINDS and k not in _FIXED_REGISTERS
               and k not in _MEMORY_KINDS and k not in _IMMEDIATES and k not in _VSIB_KINDS]
    if unknown:
        return no(f"operand kinds {unknown} not generated")
    probe = Instruction.create(code)
    flow = probe.flow_control
    is_branch = flow in (FlowControl.INDIRECT_BRANCH, FlowControl.INDIRECT_CALL)
    if flow not in (FlowControl.NEXT, FlowControl.INDIRECT_BRANCH, FlowControl.INDIRECT_CALL):
        return no(f"flow control {flow} (not a plain or indirect-branch instruction)")
    far = probe.is_jmp_far_indirect or probe.is_call_far_indirect
    if is_branch and op.operand_size == 16:
        return no("16-bit branch target: cannot reach the native stub (above 0xffff)")
    bit_offset = None
    if probe.mnemonic in (Mnemonic.BT, Mnemonic.BTS, Mnemonic.BTR, Mnemonic.BTC) and kinds[1] in _REGISTER_KINDS:
        bit_offset = 1
    return FormInfo(code, name, True, "", mem[0], is_branch, op.is_stack_instruction, op.encoding, bit_offset,
                    far)


def host_can_run(code: int, flags: frozenset[str]) -> tuple[bool, str]:
    """Whether a CPU with /proc/cpuinfo ``flags`` executes ``code``; else the missing features
    (iced-x86's CPUID features, spelled as /proc/cpuinfo does by `regmap.x86.host`)."""
    from regmap.x86.host import missing_features
    missing = missing_features(code, frozenset(flags))
    return (not missing, "host CPU lacks " + ", ".join(missing) if missing else "")


# ---------------------------------------------------------------------------------------------
# the generator


@dataclasses.dataclass(frozen=True)
class Form:
    code: int                    # iced Code
    bytes: bytes                 # the window instruction
    offset: int                  # window address of its memory operand
    size: int                    # bytes it spans
    fixed: dict                  # basis register -> value the address needs
    instruction: Instruction     # decoded ``bytes``
    address_shape: str           # "abs", "base", "base+index", "index", "moffs", "string" (+ "/a32")
    aligned: bool
    bias: dict = dataclasses.field(default_factory=dict)   # registers the native run offsets onto the shadow page
    rflags_fixed: tuple = (0, 0)                           # (mask, value) of rflags bits the form needs

    def __repr__(self) -> str:
        regs = ", ".join(f"{k}={v:#x}" for k, v in sorted(self.fixed.items()))
        return (f"Form({code_name(self.code)}: {self.bytes.hex(' ')}  {self.instruction}  "
                f"@{self.offset:#x}+{self.size} {self.address_shape}{' ' + regs if regs else ''})")


class Impossible(Exception):
    """The form has no encoding that fits the window (e.g. its operand is larger than any region)."""


_info_factory = InstructionInfoFactory()

_EDGE_IMMEDIATES = (0, 1, 2, 3, 7, 8, 0x1F, 0x20, 0x3F, 0x40, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF,
                    0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 2**63 - 1, 2**63, 2**64 - 1)


def immediates(bits: int) -> st.SearchStrategy[int]:
    mask = (1 << bits) - 1
    return st.one_of(st.sampled_from(sorted({e & mask for e in _EDGE_IMMEDIATES})), st.integers(0, mask))


def _span_size(code: int, broadcast: bool) -> int:
    op = OpCodeInfo(code)
    size = MemorySizeExt.size(op.broadcast_memory_size if broadcast else op.memory_size)
    return size


def window_accesses(instr: Instruction, memory_operand_only: bool = True):
    """(offset, size, access) of ``instr``'s explicit memory operand, from iced's used-memory info,
    with the effective address left symbolic: offset is the displacement."""
    return [m for m in _info_factory.info(instr).used_memory()
            if m.base == instr.memory_base and m.index == instr.memory_index]


class Chooser:
    """Where the generator's random choices come from: hypothesis (``draw``) or a ``random.Random``."""

    def __init__(self, draw=None, rng=None):
        self._draw, self._rng = draw, rng

    def choice(self, seq):
        seq = list(seq)
        return self._draw(st.sampled_from(seq)) if self._draw else self._rng.choice(seq)

    def integer(self, lo: int, hi: int) -> int:
        return self._draw(st.integers(lo, hi)) if self._draw else self._rng.randint(lo, hi)

    def boolean(self) -> bool:
        return self._draw(st.booleans()) if self._draw else self._rng.random() < 0.5

    def immediate(self, bits: int) -> int:
        if self._draw:
            return self._draw(immediates(bits))
        mask = (1 << bits) - 1
        if self._rng.random() < 0.4:
            return self._rng.choice(_EDGE_IMMEDIATES) & mask
        return self._rng.getrandbits(bits)

    def displacement(self) -> int:
        pick = self.integer(0, 3)
        if pick == 0:
            return 0
        if pick == 1:
            return self.integer(-128, 127)
        return self.integer(-2**31, 2**31 - 1)


@st.composite
def forms(draw, code: int, **options) -> Form:
    """A hypothesis strategy of random encodings of ``code`` (see ``generate`` for ``options``)."""
    return generate(code, Chooser(draw=draw), **options)


def random_form(code: int, rng, **options) -> Form:
    """``generate`` driven by a ``random.Random``."""
    return generate(code, Chooser(rng=rng), **options)


def generate(code: int, c: Chooser, *, regions: tuple[Region, ...] | None = None, kinds=("gpr", "vector"),
             aligned: bool | None = None, avoid: frozenset[str] = frozenset(), addr32: bool | None = None,
             shapes: tuple[str, ...] | None = None) -> Form:
    """A random encoding of ``code`` with its memory operand on a window register.

    ``kinds`` selects the regions (of ``window_regions()``) the operand may lie in; ``aligned``
    forces or forbids natural alignment (None: either); ``avoid`` lists basis registers that must
    not serve as base or index (their values are fixed by the caller).
    """
    info = form_info(code)
    if not info.drivable:
        raise Impossible(info.reason)
    op = OpCodeInfo(code)
    regions = tuple(r for r in (regions or window_regions()) if r.kind in kinds)
    if info.string:
        from form_draws import draw_string   # it builds on this module
        for _attempt in range(40):
            form = draw_string(c, code, op, info, regions, aligned, addr32)
            if form is not None:
                return form
        raise Impossible(f"{info.name}: no valid encoding found in 40 attempts")
    avoid = set(avoid)
    if info.uses_stack:
        avoid.add("rsp")
    for _attempt in range(40):
        form = _draw_once(c, code, op, info, regions, aligned, avoid, addr32, shapes)
        if form is not None:
            return form
    raise Impossible(f"{info.name}: no valid encoding found in 40 attempts")



def encode_as(instr, code):
    """(bytes, decoded) of `instr`, or None when iced refuses it or it decodes as another form."""
    try:
        encoder = Encoder(64)
        encoder.encode(instr, 0x400000)
        data = encoder.take_buffer()
    except ValueError:
        return None
    decoded = Decoder(64, data, ip=0x400000).decode()
    if decoded.code != code or decoded.len != len(data):
        return None
    return data, decoded


def _draw_once(c: Chooser, code, op, info, regions, aligned, avoid, addr32, shapes):
    kinds = list(op.op_kinds())
    evex = op.encoding == EncodingKind.EVEX
    instr = Instruction.create(code)
    mem_i = info.memory_operand
    used_regs: list[int] = []
    imm_count = 0
    for i, k in enumerate(kinds):
        if i == mem_i:
            instr.set_op_kind(i, OpKind.MEMORY)
        elif k in _FIXED_REGISTERS:
            instr.set_op_kind(i, OpKind.REGISTER)
            instr.set_op_register(i, _FIXED_REGISTERS[k])
        elif k in _REGISTER_KINDS:
            pool = _REGISTER_KINDS[k]
            if pool in (XMM, YMM, ZMM) and not evex:
                pool = pool[:16]
            if k == K.KP1_REG:
                pool = pool[::2]
            reg = c.choice(pool)
            if op.requires_unique_reg_nums and reg in used_regs:
                return None
            used_regs.append(reg)
            instr.set_op_kind(i, OpKind.REGISTER)
            instr.set_op_register(i, reg)
        elif k in _IMMEDIATES:
            kind, bits, signed = _IMMEDIATES[k]
            if kind == OpKind.IMMEDIATE8 and imm_count:
                kind = OpKind.IMMEDIATE8_2ND
            imm_count += 1
            value = 1 if bits == 0 else c.immediate(bits)
            if signed and value >= 1 << (bits - 1):
                value -= 1 << bits
            instr.set_op_kind(i, kind)
            if signed:
                instr.set_immediate_i64(i, value)
            else:
                instr.set_immediate_u64(i, value)
        else:
            return None
    if evex and op.can_use_op_mask_register:
        if op.require_op_mask_register or c.boolean():
            instr.op_mask = c.choice(KREG[1:])
            if op.can_use_zeroing_masking and mem_i != 0 and c.boolean():
                instr.zeroing_masking = True
    if kinds[mem_i] in _VSIB_KINDS:
        from form_draws import draw_vsib
        return draw_vsib(c, code, op, info, instr, kinds, used_regs, regions, aligned, avoid)
    broadcast = bool(evex and op.can_broadcast and c.boolean())
    size = _span_size(code, broadcast)
    if size == 0:
        return None
    fits = [r for r in regions if r.end - r.start >= size]
    if not fits:
        raise Impossible(f"{info.name}: a {size}-byte operand fits no window region")
    # prefer the general registers: three in four draws when both are possible
    gpr_regions = [r for r in fits if r.kind == "gpr"]
    region = gpr_regions[0] if gpr_regions and c.integer(0, 3) else c.choice(fits)
    want_aligned = c.boolean() if aligned is None else aligned
    align = size if size & (size - 1) == 0 else 1
    first, last = region.start, region.end - size
    if want_aligned:
        candidates = range((first + align - 1) // align * align, last + 1, align)
        if not candidates:
            return None
        offset = c.choice(candidates)
    else:
        offset = c.integer(first, last)
        if align > 1 and offset % align == 0 and aligned is False:
            offset = offset + 1 if offset + 1 <= last else offset - 1
            if offset < first or offset % align == 0:
                return None
    is_aligned = align == 1 or offset % align == 0
    avoid = set(avoid)
    if info.is_branch:
        # the branch target is written into the operand's bytes: their registers cannot also address it
        covered = slot_registers(offset, size)
        if info.uses_stack and "rsp" in covered:
            return None
        avoid |= covered
    # the address
    moffs = kinds[mem_i] == K.MEM_OFFS
    a32 = c.integer(0, 7) == 7 if addr32 is None else addr32
    if moffs:
        shape = "moffs"
    else:
        shape = c.choice(shapes or ("abs", "abs", "base", "base", "base+index", "index"))
    fixed: dict[str, int] = {}
    width = 32 if a32 else 64
    amask = (1 << width) - 1
    pool = GPR32 if a32 else GPR64
    ok = [r for r in range(16) if BASIS_OF_GPR64[GPR64[r]] not in avoid]
    base = index = Register.NONE
    scale, disp = 1, offset
    if shape in ("base", "base+index"):
        if not ok:
            return None
        b = c.choice(ok)
        base = pool[b]
        disp = c.displacement()
        rest = offset - disp
        if shape == "base+index":
            idx_ok = [r for r in ok if r != 4]            # rsp cannot be an index
            if not idx_ok:
                return None
            x = c.choice(idx_ok)
            index = pool[x]
            scale = c.choice((1, 2, 4, 8))
            if x == b:
                v = c.integer(0, 2**20)
                disp = offset - v * (1 + scale)
                fixed[BASIS_OF_GPR64[GPR64[b]]] = v
            else:
                v = c.immediate(64)
                fixed[BASIS_OF_GPR64[GPR64[x]]] = v
                fixed[BASIS_OF_GPR64[GPR64[b]]] = (rest - (v & amask) * scale) & amask
        else:
            fixed[BASIS_OF_GPR64[GPR64[b]]] = rest & amask
    elif shape == "index":
        idx_ok = [r for r in ok if r != 4]
        if not idx_ok:
            return None
        x = c.choice(idx_ok)
        index = pool[x]
        scale = c.choice((1, 2, 4, 8))
        v = c.integer(-2**27, 2**27)
        disp = offset - v * scale
        fixed[BASIS_OF_GPR64[GPR64[x]]] = v & amask
    if a32:
        # with a 32-bit address the upper halves of base and index do not count
        for name in list(fixed):
            fixed[name] = (fixed[name] & 0xFFFFFFFF) | (c.immediate(32) << 32)
    if info.bit_offset_operand is not None:
        # a register bit offset moves the access to EA + size * (offset div (8 * size)): keep it in the region
        reg = instr.op_register(info.bit_offset_operand)
        name = BASIS_OF_GPR64[RegisterExt.full_register(reg)]
        if name in fixed or name in avoid:
            return None
        k = c.integer(-((offset - region.start) // size), (region.end - size - offset) // size)
        bits = RegisterExt.size(reg) * 8
        value = (k * 8 * size + c.integer(0, 8 * size - 1)) & ((1 << bits) - 1)
        fixed[name] = value | (c.immediate(64) >> bits << bits)
    instr.memory_base = base
    instr.memory_index = index
    instr.memory_index_scale = scale
    instr.memory_displacement = disp & (2**64 - 1)
    if shape in ("abs", "moffs"):
        instr.memory_displ_size = 4 if a32 else 8
    elif shape == "index":          # no base: the displacement is always 32 bits
        instr.memory_displ_size = 4
    else:                           # [base] with no displacement byte at all when it is zero
        instr.memory_displ_size = 0 if disp == 0 else 1 if -128 <= disp <= 127 else 4
    if broadcast:
        instr.is_broadcast = True
    if op.can_use_lock_prefix and mem_i == 0 and c.integer(0, 3) == 3:
        instr.has_lock_prefix = True
    encoded = encode_as(instr, code)
    if encoded is None:
        return None
    data, decoded = encoded
    dmask = 0xFFFFFFFF if a32 else 2**64 - 1
    if (decoded.memory_base, decoded.memory_index, decoded.memory_displacement & dmask) != (
            base, index, disp & dmask) or (index != Register.NONE and decoded.memory_index_scale != scale):
        return None                 # the encoding does not say what was asked for
    if not window_accesses(decoded):
        return None
    if shape == "abs" and decoded.is_ip_rel_memory_operand:
        raise AssertionError(f"{decoded}: absolute operand encoded RIP-relative")
    return Form(code, data, offset, size, fixed, decoded, shape + ("/a32" if a32 else ""), is_aligned)


# ---------------------------------------------------------------------------------------------
# string instructions: rsi and/or rdi point into the window (or one of them at the scratch stack)

STRING_ROLES = {  # kind -> (reads [rsi], reads or writes [rdi], writes [rdi], may take repe/repne)
    "movs": (True, True, True, False), "cmps": (True, True, False, True), "stos": (False, True, True, False),
    "lods": (True, False, False, False), "scas": (False, True, False, True),
}
_STRING_OPCODES = {0xA4: "movs", 0xA5: "movs", 0xA6: "cmps", 0xA7: "cmps", 0xAA: "stos", 0xAB: "stos",
                   0xAC: "lods", 0xAD: "lods", 0xAE: "scas", 0xAF: "scas"}


def _string_kind(op) -> str:
    if op.encoding != EncodingKind.LEGACY or op.table != 0 or op.op_code not in _STRING_OPCODES:
        return ""
    return _STRING_OPCODES[op.op_code]

