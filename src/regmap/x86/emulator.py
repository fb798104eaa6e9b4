"""The emulator: fetch, decode once per site, check the window, execute, commit."""
from __future__ import annotations

import functools
import operator
from typing import NamedTuple

import iced_x86
from iced_x86 import DecoderError, EncodingKind, Mnemonic, OpCodeInfo, OpKind

from regmap import clock
from regmap.errors import (DecodeError, LayoutError, NotWindowAccess, RegisterAddressed,
                           RegisterNotWritable, RegmapError, UnsupportedInstruction, WindowHole)
from regmap.layout import Layout, load_layout
from regmap.x86.compiler import Declined, compile_form
from regmap.x86.cpu import Access, Cpu
from regmap.x86.flags import CONDITIONS
from regmap.x86.native import family as native_family
from regmap.x86.native.unsupported import form_refusal
from regmap.x86.operands import MemoryOperand, OperandFactory, stack_slots
from regmap.x86.semantics import EVEX_READY, SEMANTICS, STRING_SEMANTICS

_FORMATTER = iced_x86.Formatter(iced_x86.FormatterSyntax.INTEL)
_FORMATTER.branch_leading_zeros = False     # a relative branch shows `jne 400000h`
_FORMATTER.show_branch_size = False
_MNEMONIC_NAMES = {value: name.lower() for name, value in vars(Mnemonic).items()
                   if isinstance(value, int) and not name.startswith("_")}
_ACCUMULATORS = {8: "al", 16: "ax", 32: "eax", 64: "rax"}
_INFO = iced_x86.InstructionInfoFactory()


class Form:
    """A decoded instruction with its operands bound: what a semantic function sees."""

    __slots__ = ("address", "code", "instruction", "mnemonic", "ops", "memory", "next_ip",
                 "condition_code", "disassembly", "execute", "_factory", "__weakref__",
                 "repeat", "op_mask", "zeroing", "fast", "result", "native", "hits", "constant")

    def __init__(self, address: int, code: bytes, instruction, factory: OperandFactory):
        self.address, self.code, self.instruction = address, code, instruction
        self.hits = 0
        self.constant = constant_address(instruction)
        self.mnemonic = instruction.mnemonic
        self.next_ip = instruction.next_ip & 0xFFFF_FFFF_FFFF_FFFF   # rip wraps at 64 bits
        self.condition_code = instruction.condition_code
        self.disassembly = _FORMATTER.format(instruction)
        # the unsupported table overrides Python semantics too (a far jmp is a jmp to them)
        self.execute = None if form_refusal(instruction.code) else _semantics_of(
            instruction.is_string_instruction, self.mnemonic, instruction.encoding)
        self._factory = factory
        self.native = None          # the native engine's plan, for a form without Python semantics
        # REP/REPE/REPNE of a string instruction (F3 on others is an opcode prefix, not a repeat)
        self.repeat = ("repne" if instruction.has_repne_prefix else "rep" if instruction.has_rep_prefix
                       else None) if instruction.is_string_instruction else None
        self.op_mask = factory.register(instruction.op_mask) if instruction.op_mask else None
        self.zeroing = instruction.zeroing_masking
        try:
            self.ops = factory.operands(instruction, instruction.encoding != EncodingKind.LEGACY)
        except KeyError as unknown:
            self.ops, self.execute = (), None
            self.fast, self.result = None, None
            if not native_family.prepare(self, instruction, factory):
                self.memory = self._explicit_memory(instruction, factory)
                self.disassembly += f"  [{unknown.args[0]}]"
            self.result = Step(address, self.code, self.mnemonic_name, self.disassembly, None)
            return
        self.memory = tuple(op for op in self.ops if op.is_memory)
        if self.execute is not None and (instruction.stack_pointer_increment
                                         or self.mnemonic == Mnemonic.LEAVE):
            self.memory += stack_slots(instruction, _INFO)      # rsp may be in the window
        if self.execute is None and native_family.prepare(self, instruction, factory):
            self.result = Step(address, self.code, self.mnemonic_name, self.disassembly, None)
            return
        self.fast = compile_form(self, factory.layout) if self.execute is not None else None
        self.result = Step(address, self.code, self.mnemonic_name, self.disassembly, None)

    def placed(self, address: int) -> Form:
        """This form at `address`: the same bytes, operands and compiled function (shared, not
        copied); only what names the instruction's own address differs.  For a form whose
        meaning does not depend on where it is (`_position_independent`)."""
        form = Form.__new__(Form)
        for name, value in zip(_SHARED_SLOTS, _shared_values(self)):
            setattr(form, name, value)
        form.address, form.hits = address, 0
        form.next_ip = (address + len(self.code)) & 0xFFFF_FFFF_FFFF_FFFF
        form.result = None if self.result is None else Step(address, *self.result[1:])
        return form

    @staticmethod
    def _explicit_memory(instruction, factory):
        if any(instruction.op_kind(i) == OpKind.MEMORY for i in range(instruction.op_count)):
            return (factory.memory(instruction),)
        return ()

    # helpers for semantic functions
    def register(self, name: str):
        return self._factory.named(name)

    def accumulator(self, width: int):
        return self._factory.named(_ACCUMULATORS[width])

    def condition(self, cpu) -> bool:
        return CONDITIONS[self.condition_code](cpu.rflags())

    # implicit memory (the stack of push/pop/call): the window or real memory, by address
    read_memory = staticmethod(MemoryOperand.read_at)
    write_memory = staticmethod(MemoryOperand.write_at)

    @property
    def mnemonic_name(self) -> str:
        return _MNEMONIC_NAMES.get(self.mnemonic, "?")


_NO_REGISTER = frozenset({iced_x86.Register.NONE, iced_x86.Register.RIP, iced_x86.Register.EIP})


def constant_address(instruction) -> bool:
    """Whether the instruction's address is a constant in it: an explicit memory operand with
    no base or index register (``[0x38]``; rip-relative is fixed per site too).  ``[rbx+8]``, a
    string instruction's [rsi], a push's [rsp-8] take theirs from registers: at rbx = 0 that is
    a NULL-pointer access, which strict addressing leaves a genuine fault."""
    return (instruction.memory_base in _NO_REGISTER and instruction.memory_index == iced_x86.Register.NONE
            and any(instruction.op_kind(i) == OpKind.MEMORY for i in range(instruction.op_count)))


_SHARED_SLOTS = tuple(name for name in Form.__slots__
                      if name not in ("address", "next_ip", "result", "hits", "__weakref__"))
_shared_values = operator.attrgetter(*_SHARED_SLOTS)
_BRANCH_KINDS = frozenset({OpKind.NEAR_BRANCH16, OpKind.NEAR_BRANCH32, OpKind.NEAR_BRANCH64,
                           OpKind.FAR_BRANCH16, OpKind.FAR_BRANCH32})


def _position_independent(instruction) -> bool:
    """Whether a form of `instruction` is the same wherever it is, but for its own address and
    the next one: no RIP-relative operand, no branch target, and not a string instruction
    (its compiled `rep movs` and restarts name the address)."""
    return not (instruction.is_ip_rel_memory_operand or instruction.is_string_instruction
                or any(instruction.op_kind(i) in _BRANCH_KINDS
                       for i in range(instruction.op_count)))


class _RegisterAttributes:
    """A register namespace for a machine that has none: attribute access through its methods."""
    __slots__ = ("_machine",)

    def __init__(self, machine):
        object.__setattr__(self, "_machine", machine)

    def __getattr__(self, basis: str) -> int:
        return self._machine.read_register(basis)

    def __setattr__(self, basis: str, value: int) -> None:
        self._machine.write_register(basis, value)


def register_namespace(machine):
    """The machine's `namespace` (``namespace.rax`` is rax), or an adapter over its methods."""
    namespace = getattr(machine, "namespace", None)
    return namespace if namespace is not None else _RegisterAttributes(machine)


class Step(NamedTuple):
    address: int
    code: bytes
    mnemonic: str
    disassembly: str
    accesses: list[Access] | None


class Emulator:
    """Executes instructions whose memory operands fall in the layout's window."""

    MAX_FORMS = 1 << 16     # the default bound of the form cache

    def __init__(self, layout: Layout | None = None, max_forms: int | None = None,
                 strict: bool = False):
        self.layout = layout if layout is not None else load_layout()
        # Strict addressing: only constant addresses reach the window (`constant_address`).
        self.strict = strict
        # Permissive: called as ``watch(machine, form)`` after each register-addressed window
        # access the emulator runs (a site cache's fast path runs later ones without it).
        self.watch = None
        self.registers = self.layout.registers
        self._factory = OperandFactory(self.registers, self.layout)
        self._forms: dict[int, Form] = {}
        self._shared: dict[bytes, Form] = {}    # a position-independent form by its bytes
        self.max_forms = max_forms or self.MAX_FORMS

    def form_at(self, address: int, code: bytes) -> Form:
        """The decoded form of the instruction at `address`, cached per (address, bytes).

        The cache holds at most `max_forms` forms, with CLOCK eviction (`_evict`).  The same
        bytes at another address share one decoded form (`Form.placed`) unless the instruction
        names its own address; those shared forms are bounded by `max_forms` too.
        """
        form = self._forms.get(address)
        if form is not None and code.startswith(form.code):
            form.hits += 1
            return form
        if len(self._forms) >= self.max_forms:
            self._evict(self._forms)
        decoder = iced_x86.Decoder(64, code, ip=address)
        instruction = decoder.decode()
        if instruction.is_invalid:
            raise DecodeError(address, code, decoder.last_error == DecoderError.NO_MORE_BYTES)
        code = code[:instruction.len]
        if not _position_independent(instruction):
            form = Form(address, code, instruction, self._factory)
        else:
            # The same bytes elsewhere: one decoded form, placed at each address it runs at.
            shared = self._shared.get(code)
            if shared is None:
                if len(self._shared) >= self.max_forms:
                    self._evict(self._shared)
                shared = self._shared[code] = Form(address, code, instruction, self._factory)
            shared.hits += 1
            form = shared.placed(address)
        self._forms[address] = form
        return form

    def _evict(self, forms: dict) -> None:
        """Forget an eighth of the forms: the oldest not used since the last sweep (the used
        ones get a second chance at the back)."""
        clock.evict(forms, self.max_forms - max(1, self.max_forms // 8), _used_since_sweep)

    def step(self, machine, trace: bool = False, anywhere: bool = False) -> Step:
        """Execute the instruction at rip.  It must access the window (else `NotWindowAccess`)
        unless `anywhere`: then any instruction with semantics runs (the pure backend's snippets)."""
        rip = machine.read_register("rip")
        form = self.form_at(rip, machine.fetch(rip))
        if self.strict and not form.constant and not anywhere:
            raise RegisterAddressed(f"{form.disassembly} at {rip:#x} takes its page-0 address "
                                    "from registers: under strict addressing a genuine fault")
        if form.fast is not None and not trace:
            try:
                form.fast(register_namespace(machine), machine)
                if self.watch is not None and not form.constant:
                    self.watch(machine, form)
                return form.result
            except Declined:
                pass  # not an address its compiled code covers: the generic path decides
        cpu = Cpu(machine, self.layout, form.next_ip, trace)
        if not anywhere and not any(op.in_window(cpu) for op in form.memory):
            raise NotWindowAccess(f"{form.disassembly} at {rip:#x} does not access the window")
        if form.execute is None:
            raise UnsupportedInstruction(rip, form.code, form.disassembly)
        try:
            form.execute(cpu, form)
        except LayoutError as hole:  # no register there: the access faults as on the CPU
            raise WindowHole(f"{form.disassembly} at {rip:#x}: {hole}", str(hole),
                             form.disassembly) from None
        except RegmapError:
            raise
        except Exception as error:  # a semantic function met an operand shape it does not know
            raise UnsupportedInstruction(rip, form.code, form.disassembly, f"{type(error).__name__}: {error}") from error
        try:
            cpu.commit()
        except RegisterNotWritable as refusal:
            raise UnsupportedInstruction(rip, form.code, form.disassembly, str(refusal)) from None
        if self.watch is not None and not form.constant and not anywhere:
            self.watch(machine, form)
        return Step(rip, form.code, form.mnemonic_name, form.disassembly, cpu.accesses)


def _used_since_sweep(form: Form) -> bool:
    used, form.hits = form.hits != 0, 0
    return used


def _semantics_of(string: bool, mnemonic: int, encoding: int):
    if encoding not in (EncodingKind.LEGACY, EncodingKind.VEX, EncodingKind.EVEX):
        return None
    if encoding == EncodingKind.EVEX and mnemonic not in EVEX_READY:
        return None
    return (STRING_SEMANTICS if string else SEMANTICS).get(mnemonic)


@functools.lru_cache(maxsize=None)
def supported_codes() -> frozenset[int]:
    """Every iced-x86 `Code` with a memory operand, valid in 64-bit mode, that has semantics."""
    codes = set()
    for name, code in vars(iced_x86.Code).items():
        if not isinstance(code, int) or name.startswith("_"):
            continue
        info = OpCodeInfo(code)
        if (_semantics_of(_is_string(info), info.mnemonic, info.encoding) and info.mode64
                and not form_refusal(code) and info.mnemonic != Mnemonic.NOP
                and _emulated_operands(info)):
            codes.add(code)
    return frozenset(codes)


_K = iced_x86.OpCodeOperandKind
# Operand kinds that can be a plain [base + index*scale + disp] memory operand.
_STRING_KINDS = frozenset({_K.SEG_RSI, _K.ES_RDI})
_MEMORY_KINDS = frozenset({_K.MEM, _K.MEM_OFFS, _K.R8_OR_MEM, _K.R16_OR_MEM, _K.R32_OR_MEM,
                           _K.R64_OR_MEM, _K.XMM_OR_MEM, _K.YMM_OR_MEM, _K.ZMM_OR_MEM}) | _STRING_KINDS
# Kinds regmap does not emulate: segment registers, MMX, MPX, vector-index addressing.
_EXCLUDED_KINDS = frozenset({_K.SEG_REG, _K.MM_OR_MEM, _K.MM_REG, _K.MEM_MPX, _K.MEM_MIB,
                             _K.MEM_VSIB32X, _K.MEM_VSIB64X, _K.MEM_VSIB32Y, _K.MEM_VSIB64Y,
                             _K.MEM_VSIB32Z, _K.MEM_VSIB64Z, _K.SIBMEM})


@functools.lru_cache(maxsize=None)
def has_python_semantics(code: int) -> bool:
    """Whether a decoded form of ``code`` runs on Python semantics (as `Form` decides): it has a
    semantic function and operands the factory builds.  A superset of `supported_codes`, which
    also leaves out the segment-register operands the oracle cannot drive."""
    info = OpCodeInfo(code)
    kinds = set(info.op_kinds())
    return (info.mode64 and not form_refusal(code)
            and _semantics_of(_is_string(info), info.mnemonic, info.encoding) is not None
            and not kinds & (_EXCLUDED_KINDS - {_K.SEG_REG}))


def _is_string(info) -> bool:
    return bool(set(info.op_kinds()) & _STRING_KINDS)


def _emulated_operands(info) -> bool:
    kinds = set(info.op_kinds())
    return bool(kinds & _MEMORY_KINDS) and not kinds & _EXCLUDED_KINDS
