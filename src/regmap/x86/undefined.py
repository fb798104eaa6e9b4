"""The host CPU's answers where the SDM leaves a result or flag undefined.

Intel and AMD CPUs give different values there (OF of a rotate by more than
one bit, SF ZF AF PF after a multiply, every flag after a divide, a 16-bit
``shld`` by more than 16...), and a program under regmap must see what it
would see on its own CPU.  No table of vendors' rules can promise that, so
the host CPU computes the undefined part itself: the emulated instruction
runs once more, natively, as its *twin* -- the same iced-x86 ``Code``, the
same register operands and immediate, its memory operand moved onto a
scratch slot -- from the register, flag and operand values the emulated
instruction sees.  The semantic function keeps its own formula for what the
SDM defines and takes the rest from the twin (`regmap.x86.flags.settled`).

Why the instruction's own form and not a register form (``imul rax, rcx`` for
``imul rax, [8]``): CPUs do not always agree with themselves across forms.
On an Intel Sapphire Rapids host ``rol r8, imm8`` by more than one bit leaves
OF alone while ``rol m8, imm8`` and ``rol r8, cl`` compute it, each in its own
way; only the same opcode with the same operand kinds is certain to answer as
the program's instruction would have.

A twin is a few instructions on a page of its own (`machine_code.code_page`),
generated at a form's first undefined case and kept for every form with the
same twin bytes; it is called through ctypes with an ``io`` array allocated
per call (reentrant: a fault in a signal handler's native code may come back
here).  Where machine code cannot run (`host.platform_problem()`: the pure
backend on another OS) or the form has no twin (an ``rsp`` operand),
`answer` returns None and the semantic functions keep regmap's documented
choices (docs/emulator.md, "Undefined flags").
"""
from __future__ import annotations

import ctypes
import functools

from iced_x86 import (Code, Encoder, Instruction, InstructionInfoFactory,
                      MemorySizeExt, OpKind, Register, RegisterExt)

from regmap.x86 import flags
from regmap.x86.host import platform_problem
from regmap.x86.machine_code import based

GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
_GPR_REGISTERS = (Register.RAX, Register.RCX, Register.RDX, Register.RBX, Register.RSP, Register.RBP,
                  Register.RSI, Register.RDI, Register.R8, Register.R9, Register.R10, Register.R11,
                  Register.R12, Register.R13, Register.R14, Register.R15)
_SLOT = dict(zip(_GPR_REGISTERS, range(16)))
# What the twin is given of rflags: the status flags and DF.  Never TF (a trap), never AC (Linux
# sets CR0.AM: an unaligned scratch access would raise #AC).
_LOADED_FLAGS = flags.STATUS | flags.DF
# Registers for the moved memory operand's base, in order of preference; the first four need no
# REX prefix, so an instruction naming ah/ch/dh/bh can still have one.
_BASES = (Register.RSI, Register.RBX, Register.RBP, Register.RDI, Register.R8, Register.R9,
          Register.R10, Register.R11, Register.R12, Register.R13, Register.R14, Register.R15)
_HIGH_BYTES = frozenset((Register.AH, Register.CH, Register.DH, Register.BH))
_INFO = InstructionInfoFactory()


class Answer:
    """What the twin left: `register(name)` (the general registers it uses), ``rflags``, and
    ``memory`` (its memory operand's bytes as an int, for a memory form)."""

    __slots__ = ("names", "values", "rflags", "memory")

    def __init__(self, names: tuple[str, ...], values: list[int]):
        self.names, self.values = names, values
        count = len(names)
        self.rflags = values[count]
        self.memory = values[count + 1] | values[count + 2] << 64

    def register(self, name: str) -> int:
        return self.values[self.names.index(name)]


class _Twin:
    """A twin's entry point and its io layout: the registers `names`, then rflags, then the
    memory operand's two quadwords."""

    __slots__ = ("function", "names", "io", "memory_size")

    def __init__(self, function, names: tuple[str, ...], memory_size: int):
        self.function, self.names, self.memory_size = function, names, memory_size
        self.io = ctypes.c_uint64 * (len(names) + 3)


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether this host runs twins (Linux on x86-64, and a code page can be made)."""
    if platform_problem() is not None:
        return False
    try:
        _twin_of(bytes.fromhex("48 0f af c1"))       # imul rax, rcx: make one page now
    except OSError:
        return False
    return True


def answer_with(cpu, form, *operands) -> Answer | None:
    """`answer` for the instruction whose ``(operand, value)`` pairs are given, each value as
    read before any write: the memory operand's is the twin's memory operand."""
    return answer(cpu, form, next((value for op, value in operands if op.is_memory), 0))


def answer(cpu, form, memory: int = 0, override: dict[str, int] | None = None) -> Answer | None:
    """Run `form`'s twin on the host from the registers `cpu` holds now (read them before the
    instruction writes any), rflags, and `memory` as its memory operand's value; `override`
    replaces some register inputs.  None where no twin can run (see the module's text)."""
    twin = _TWINS.get(form.code, _MISSING)
    if twin is _MISSING:
        twin = _twin_of(form.code) if available() else None
    if twin is None:
        return None
    reg = cpu.reg
    values = [reg(name) for name in twin.names]
    if override:
        values = [override.get(name, value) for name, value in zip(twin.names, values)]
    values += (reg("rflags") & _LOADED_FLAGS | flags.RESERVED_ONE,
               memory & _MASK64, memory >> 64 & _MASK64)
    io = twin.io(*values)
    twin.function(io)
    return Answer(twin.names, io[:])


_MISSING = object()
_MASK64 = (1 << 64) - 1


class _Inputs:
    """A `cpu` for a probe: registers from a dict."""

    def __init__(self, values: dict[str, int]):
        self.values = values

    def reg(self, name: str) -> int:
        return self.values[name]


class _Code:
    __slots__ = ("code",)

    def __init__(self, code: bytes):
        self.code = code


_CLEARED: dict[tuple[bytes, int], bool] = {}
PROBES = 64


def always_clears(code: bytes, flag: int) -> bool:
    """Whether the host leaves `flag` clear after the instruction `code` (the register operands
    only; its memory operand is the twin's) for every one of `PROBES` inputs, whatever it was
    before: the check that lets a hot form keep a constant for an undefined flag (AF after
    AND/OR/XOR/TEST) instead of running the twin each time.  Its inputs are drawn from the
    code's bytes (repeatable), mixing extremes and random values.  True where no machine code
    runs (the documented choice stands)."""
    key = (code, flag)
    known = _CLEARED.get(key)
    if known is not None:
        return known
    if len(_CLEARED) >= _MAX_TWINS:
        _CLEARED.clear()
    if not available():
        result = True
    else:
        import random
        rng = random.Random(code)
        form = _Code(code)
        result = True
        for i in range(PROBES):
            def draw():
                return rng.choice((0, _MASK64, 1 << 63, 0x10, rng.getrandbits(8), rng.getrandbits(64)))
            inputs = {name: draw() for name in GPRS}
            inputs["rflags"] = rng.getrandbits(12) & flags.STATUS | (flag if i % 2 else 0)
            got = answer(_Inputs(inputs), form, draw())
            if got is None:
                break         # no twin (an rsp operand): the documented choice stands
            if got.rflags & flag:
                result = False
                break
    _CLEARED[key] = result
    return result


# Twins by the instruction bytes they stand for (bounded: many sites, one instruction, one twin),
# and their code by the twin's own encoding: ``imul rax, [8]`` and ``imul rax, [rdi+16]`` share
# one.  A page is never unmapped (a thread may be about to call it); there is one per distinct
# twin (opcode, registers, immediate), a few in a real program.
_TWINS: dict[bytes, _Twin | None] = {}
_MAX_TWINS = 4096
_FUNCTIONS: dict[bytes, object] = {}


def _twin_of(code: bytes) -> _Twin | None:
    try:
        return _TWINS[code]
    except KeyError:
        pass
    if len(_TWINS) >= _MAX_TWINS:
        for old in list(_TWINS)[:_MAX_TWINS // 2]:
            del _TWINS[old]
    twin = _TWINS[code] = _build(code)
    return twin


def _build(code: bytes) -> _Twin | None:
    from iced_x86 import Decoder
    from regmap.x86.machine_code import assemble, code_page

    ins = Decoder(64, code).decode()
    # the registers the twin reads or writes, explicit and implicit, are loaded and stored back
    # (the memory operand's address registers are not, once it is moved)
    used = {RegisterExt.full_register(u.register) for u in _INFO.info(ins).used_registers()}
    explicit = {ins.op_register(i) for i in range(ins.op_count) if ins.op_kind(i) == OpKind.REGISTER}
    spares = [r for r in _BASES if r not in used and not (explicit & _HIGH_BYTES and r >= Register.R8)]
    twin = ins.copy()
    memory_size, base, renamed = 0, None, {}
    if any(ins.op_kind(i) == OpKind.MEMORY for i in range(ins.op_count)):
        memory_size = ins.memory_size and MemorySizeExt.size(ins.memory_size)
        if not spares or memory_size > 16:
            return None
        base = spares.pop(0)
        twin.memory_base, twin.memory_index, twin.memory_index_scale = base, Register.NONE, 1
        twin.memory_displacement, twin.memory_displ_size = 0, 0
        twin.segment_prefix = Register.NONE
    for i in range(ins.op_count):
        # the twin runs on regmap's stack: an rsp operand becomes a spare register of its size
        # (which register an operand is does not change what the CPU computes)
        if ins.op_kind(i) == OpKind.REGISTER and RegisterExt.full_register(ins.op_register(i)) == Register.RSP:
            if not spares:
                return None
            spare = renamed.get(Register.RSP) or spares.pop(0)
            renamed[Register.RSP] = spare
            twin.set_op_register(i, _PART[spare, RegisterExt.size(ins.op_register(i))])
    uses = {RegisterExt.full_register(u.register) for u in _INFO.info(twin).used_registers()}
    uses = {r for r in uses if r in _SLOT} - {base}
    if Register.RSP in uses:
        return None          # rsp used implicitly (the stack): never a twin
    order = tuple(sorted(uses, key=_SLOT.get))
    encoding = _encode(twin)
    if encoding is None:
        return None
    function = _FUNCTIONS.get(encoding)
    if function is None:
        def generate(address):
            return assemble(_frame(twin, order, base), address)
        # PYFUNCTYPE: the GIL stays held for the few instructions (the io array is the call's own)
        function = _FUNCTIONS[encoding] = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)(code_page(generate))
    spare_of = {spare: name for name, spare in (("rsp", renamed.get(Register.RSP)),) if spare}
    names = tuple(spare_of.get(r, GPRS[_SLOT[r]]) for r in order)
    return _Twin(function, names, memory_size)


# every general register's part of each size: (full register, bytes) -> register
_PART = {(RegisterExt.full_register(r), RegisterExt.size(r)): r
         for r in range(Register.AL, Register.R15 + 1)
         if RegisterExt.is_gpr(r) and r not in (Register.AH, Register.CH, Register.DH, Register.BH)}


def _encode(ins) -> bytes | None:
    encoder = Encoder(64)
    try:
        encoder.encode(ins, 0)
    except ValueError:
        return None
    return encoder.take_buffer()


def _frame(body: Instruction, order: tuple, base) -> list[Instruction]:
    """rdi = io: keep the callee-saved registers, load the inputs (io[i] is ``order[i]``, then
    rflags, then the memory operand) and rflags, run the body, store rflags and the registers
    back.  The caller's own rflags come back on return: in-process this runs inside the signal
    handler, whose live ID and NT sigreturn leaves to the interrupted thread (DF stays clear, as
    the ABI wants)."""
    R, C = Register, Code
    saved = (R.RBX, R.RBP, R.R12, R.R13, R.R14, R.R15)
    io = R.RDI
    slot = {register: 8 * i for i, register in enumerate(order)}
    flags_at, memory_at = 8 * len(order), 8 * len(order) + 8
    others = [r for r in order if r != io]
    out = [Instruction.create(C.PUSHFQ)] + [Instruction.create_reg(C.PUSH_R64, r) for r in saved]
    out.append(Instruction.create_reg(C.PUSH_R64, io))
    out.append(Instruction.create_mem(C.PUSH_RM64, based(io, flags_at)))
    out.extend(Instruction.create_reg_mem(C.MOV_R64_RM64, r, based(io, slot[r])) for r in others)
    if base is not None:
        out.append(Instruction.create_reg_mem(C.LEA_R64_M, base, based(io, memory_at)))
    if io in slot:        # rdi last: it held io until now (never the base then)
        out.append(Instruction.create_reg_mem(C.MOV_R64_RM64, io, based(io, slot[io])))
    out += [Instruction.create(C.POPFQ), body, Instruction.create(C.PUSHFQ), Instruction.create(C.CLD),
            Instruction.create_reg(C.PUSH_R64, io),
            Instruction.create_reg_mem(C.MOV_R64_RM64, io, based(R.RSP, 16))]
    if io in slot:
        out.append(Instruction.create_mem(C.POP_RM64, based(io, slot[io])))
    else:
        out.append(Instruction.create_reg_i32(C.ADD_RM64_IMM8, R.RSP, 8))
    out.append(Instruction.create_mem(C.POP_RM64, based(io, flags_at)))
    out.extend(Instruction.create_mem_reg(C.MOV_RM64_R64, based(io, slot[r]), r) for r in others)
    out.append(Instruction.create_reg_i32(C.ADD_RM64_IMM8, R.RSP, 8))
    out.extend(Instruction.create_reg(C.POP_R64, r) for r in reversed(saved))
    out += [Instruction.create(C.POPFQ), Instruction.create(C.RETNQ)]
    return out


def same_answers(memory_form: bytes, register_form: bytes, register: str, lo: int, width: int) -> bool:
    """Whether the host gives the same flags and result for `memory_form` (an instruction whose
    memory operand is general register `register`'s `width` bits from `lo` up) and for
    `register_form` (the same instruction naming the register) on `PROBES` inputs drawn from
    the bytes: the check hot-site translation makes before it swaps one for the other where
    the SDM leaves a flag undefined (an Intel CPU computes OF of ``rol m64, imm8`` beyond one
    bit, and leaves it alone for ``rol r64, imm8``).  A divide is probed only with inputs it
    takes without #DE (too few such inputs: False).  True where no machine code runs."""
    if not available():
        return True
    import random
    from iced_x86 import Decoder, Mnemonic
    rng = random.Random(memory_form + register_form)
    old, new = _Code(memory_form), _Code(register_form)
    ins = Decoder(64, memory_form).decode()
    divide = ins.mnemonic in (Mnemonic.DIV, Mnemonic.IDIV)
    compared = 0
    for _ in range(4 * PROBES):
        inputs = {name: rng.choice((0, _MASK64, 1 << 63, rng.getrandbits(6), rng.getrandbits(64)))
                  for name in GPRS}
        inputs["rflags"] = rng.getrandbits(12) & flags.STATUS
        if divide:
            inputs["rdx"], inputs["rax"] = 0, rng.getrandbits(6)
            if not _divides(ins.mnemonic == Mnemonic.IDIV, width, inputs, inputs[register] >> lo):
                continue
        first = answer(_Inputs(inputs), old, inputs[register] >> lo)
        second = answer(_Inputs(inputs), new)
        if first is None or second is None:
            return False
        if first.rflags != second.rflags:
            return False
        field = (1 << width) - 1
        if register in second.names and first.memory & field != second.register(register) >> lo & field:
            return False
        compared += 1
        if compared == PROBES:
            return True
    return False


def _divides(signed: bool, width: int, inputs: dict[str, int], divisor: int) -> bool:
    """Whether a ``div``/``idiv`` of `width` bits by `divisor` runs without #DE on `inputs`."""
    field = (1 << width) - 1
    low = inputs["rax"] & (0xFFFF if width == 8 else field)
    dividend = low if width == 8 else (inputs["rdx"] & field) << width | low
    divisor &= field
    if not divisor:
        return False
    if not signed:
        return dividend // divisor <= field
    total = 16 if width == 8 else 2 * width
    dividend -= (dividend >> (total - 1) & 1) << total
    divisor -= (divisor >> (width - 1) & 1) << width
    quotient = abs(dividend) // abs(divisor)
    return quotient < 1 << (width - 1)
