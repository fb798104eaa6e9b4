"""How the native engine runs one form: where its window bytes are, how it is placed, or why not.

A `Plan` is made once per decoded form (`plan_for`).  Per execution, `locate`
gives the window ranges the instruction reads (each must be a register, not a
hole) and writes (committed through the layout afterwards), and the machine
code to run: the form re-encoded with its operand at the shadow page.
"""
from __future__ import annotations

import signal

from iced_x86 import (Code, CpuidFeature, EncodingKind, FlowControl, InstructionInfoFactory, MemorySizeExt,
                      Mnemonic, OpAccess, OpCodeInfo, OpKind, Register, RegisterExt)

from regmap.errors import LayoutError, UnsupportedInstruction
from regmap.x86 import host
from regmap.x86.native import engine, footprint, masked
from regmap.x86.native.transfer import Transfer
from regmap.x86.native.unsupported import form_refusal

M64 = (1 << 64) - 1
_info_factory = InstructionInfoFactory()
_ALWAYS = {OpAccess.WRITE, OpAccess.READ_WRITE}
_WRITES = {OpAccess.WRITE, OpAccess.READ_WRITE, OpAccess.COND_WRITE, OpAccess.READ_COND_WRITE}
_MAYBE = {OpAccess.COND_WRITE, OpAccess.READ_COND_WRITE}
# the kinds that read: a pure store (WRITE, COND_WRITE) reads nothing, and a trace says so
_READS = {OpAccess.READ, OpAccess.COND_READ, OpAccess.READ_WRITE, OpAccess.READ_COND_WRITE}
# iced-x86 calls their store conditional, but the SDM has them write the destination back when the
# comparison fails: the window bytes land whole, after the register writes
_STORE_ALWAYS = {Mnemonic.CMPXCHG, Mnemonic.CMPXCHG8B, Mnemonic.CMPXCHG16B}
_BIT_TESTS = {Mnemonic.BT, Mnemonic.BTS, Mnemonic.BTR, Mnemonic.BTC}
_STACK_POINTERS = {Register.RSP, Register.ESP, Register.SP, Register.SPL}
_SEGMENTS = {Register.ES, Register.CS, Register.SS, Register.DS, Register.FS, Register.GS}
# implicit memory operands addressed by one register: the engine biases it onto the shadow page
_POINTER_KINDS = {OpKind.MEMORY_SEG_RDI: Register.RDI, OpKind.MEMORY_SEG_EDI: Register.EDI,
                  OpKind.MEMORY_SEG_DI: Register.DI}
_STRING_KINDS = {OpKind.MEMORY_SEG_RSI, OpKind.MEMORY_SEG_ESI, OpKind.MEMORY_SEG_SI, OpKind.MEMORY_ESRDI,
                 OpKind.MEMORY_ESEDI, OpKind.MEMORY_ESDI}
# the XSAVE family takes its requested-feature bitmap from edx:eax; its PKRU component (bit 9) is
# the protection-key rights of the thread running the engine, which the stub does not swap
_RFBM_FORMS = {Mnemonic.XSAVE, Mnemonic.XSAVE64, Mnemonic.XSAVEOPT, Mnemonic.XSAVEOPT64,
               Mnemonic.XSAVEC, Mnemonic.XSAVEC64, Mnemonic.XRSTOR, Mnemonic.XRSTOR64}
PKRU_COMPONENT = 1 << 9
# AMX: TILECFG and TILEDATA (XCR0 bits 17, 18) are not in the engine's state either
AMX_COMPONENTS = (1 << 17) | (1 << 18)
# The fault signals a run routes to the stub's handler (`Plan.signals`), a bit per signal number.
# Architecturally: SIGSEGV (#GP, #PF) any instruction may raise; SIGILL (#UD) depends on the
# encoding and the CPU only, so a plan that ran once cannot raise it (but for the shadow-stack
# forms, whose #UD is the thread's CET state); SIGFPE needs an x87 or MMX form (#MF), a divide
# (#DE) or an unmasked MXCSR exception (#XM); SIGBUS needs AC set (#AC) or a bus lock (split-lock
# detection, as SIGTRAP's bus-lock #DB).  A signal not routed goes where it goes without the engine.
_SEGV, _BUS, _FPE, _ILL, _TRAP = (1 << s for s in (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL,
                                                  signal.SIGTRAP))
AC = 0x40000
MXCSR_MASKS = 0x1F80
_DIVIDES = {Mnemonic.DIV, Mnemonic.IDIV}
_LOCKED = {Mnemonic.XCHG}           # a memory xchg locks without a prefix
_GPR64 = {Register.RAX: "rax", Register.RCX: "rcx", Register.RDX: "rdx", Register.RBX: "rbx",
          Register.RSP: "rsp", Register.RBP: "rbp", Register.RSI: "rsi", Register.RDI: "rdi",
          **{Register.R8 + i: f"r{8 + i}" for i in range(8)}}


def static_refusal(instr) -> str | None:
    """Why the engine cannot run this decoded instruction on a window operand, or None."""
    reason = form_refusal(instr.code)
    if reason:
        return reason
    info = OpCodeInfo(instr.code)
    if info.encoding not in (EncodingKind.LEGACY, EncodingKind.VEX, EncodingKind.EVEX, EncodingKind.XOP,
                             EncodingKind.D3NOW):
        return "an encoding the host's user mode does not run"
    if instr.flow_control not in (FlowControl.NEXT, FlowControl.EXCEPTION):
        return "changes rip (branches keep Python semantics)"
    if info.is_stack_instruction or _implicit_rsp(instr):
        return "implicit stack operand (push/pop forms keep Python semantics)"
    kinds = [instr.op_kind(i) for i in range(instr.op_count)]
    if any(kind in _STRING_KINDS for kind in kinds):
        return "string instruction (string forms keep Python semantics)"
    if instr.is_ip_rel_memory_operand:
        return "RIP-relative operand (no window address is RIP-relative)"
    if instr.mnemonic in _BIT_TESTS and instr.op_count > 1 and instr.op_kind(1) == OpKind.REGISTER:
        return "a register bit offset moves the operand anywhere (bt forms keep Python semantics)"
    for i, kind in enumerate(kinds):
        if kind == OpKind.REGISTER and instr.op_register(i) in _SEGMENTS and i == 0:
            return "loads a segment register"
    return None


def _implicit_rsp(instr) -> bool:
    """Whether the instruction uses rsp other than as an operand or an address register."""
    explicit = {instr.op_register(i) for i in range(instr.op_count) if instr.op_kind(i) == OpKind.REGISTER}
    explicit |= {instr.memory_base, instr.memory_index}
    explicit = {RegisterExt.full_register(r) for r in explicit if r != Register.NONE}
    return any(RegisterExt.full_register(r.register) == Register.RSP and Register.RSP not in explicit
               for r in _info_factory.info(instr).used_registers())


class Plan:
    """The static part: the decoded instruction, its kind, its memory accesses relative to the
    operand's address."""

    __slots__ = ("instruction", "code", "refusal", "kind", "accesses", "pointer", "size", "swap",
                 "vectors", "opmasks", "x87", "whole", "gprs", "zeroed", "routed", "_transfers",
                 "mask", "scatter", "data", "count")

    def __init__(self, instruction, code: bytes):
        self.instruction, self.code = instruction, code
        self.refusal = static_refusal(instruction)
        kinds = [instruction.op_kind(i) for i in range(instruction.op_count)]
        pointer = next((_POINTER_KINDS[k] for k in kinds if k in _POINTER_KINDS), None)
        self.pointer = pointer
        if instruction.code == Code.XLAT_M8:
            self.kind, self.pointer = "bias", Register.RBX
        elif pointer is not None:
            self.kind = "bias"
        elif instruction.is_vsib:
            self.kind = "vsib"
        else:
            self.kind = "explicit"
        self.size = max(MemorySizeExt.size(instruction.memory_size), 1)
        # a masked access touches only its masked-on elements (`masked`)
        self.mask = masked.mask_of(instruction, self.size)
        self.scatter, self.data, self.count = False, None, 0
        if instruction.is_vsib:
            self._vsib_shape(instruction)
        self._registers_used(instruction)
        self.swap = None
        if self.refusal is None:
            self._stand_in_for_rsp()
        # (offset from the operand's address, size or 0 if unknown, read, always written, maybe written)
        accesses = []
        for m in _info_factory.info(instruction).used_memory():
            if m.access == OpAccess.NO_MEM_ACCESS:
                continue
            offset = (m.displacement - instruction.memory_displacement) & M64
            if offset >= 1 << 63:
                offset -= 1 << 64
            always = m.access in _ALWAYS or (m.access in _MAYBE and instruction.mnemonic in _STORE_ALWAYS)
            accesses.append((offset, MemorySizeExt.size(m.memory_size), m.access in _READS, always,
                             m.access in _MAYBE))
        if self.kind == "explicit" and not any(self._explicit(m, instruction)
                                               for m in _info_factory.info(instruction).used_memory()):
            accesses = accesses[:1]
        self.accesses = tuple(accesses)
        self.routed = self._routed(instruction)
        self._transfers = {}

    def _routed(self, instr) -> int:
        """The fault signals every run routes to the handler until this plan has run once."""
        routed = _SEGV | _ILL
        if self.x87 or instr.mnemonic in _DIVIDES:
            routed |= _FPE
        if instr.has_lock_prefix or instr.mnemonic in _LOCKED:
            routed |= _BUS | _TRAP
        return routed

    def signals(self, rflags: int, mxcsr: int) -> int:
        """The fault signals this run may raise (a bit per signal number), for `Transfer.load`."""
        routed = self.routed
        if rflags & AC:
            routed |= _BUS
        if mxcsr & MXCSR_MASKS != MXCSR_MASKS:
            routed |= _FPE
        return routed

    def ran(self) -> None:
        """The plan ran to its end once: its encoding does not raise #UD on this CPU."""
        if self.routed & _ILL and CpuidFeature.CET_SS not in self.instruction.cpuid_features():
            self.routed &= ~_ILL

    def transfer(self, x87: bool):
        """The plan's `Transfer` (``x87``: the layout has the x87 registers)."""
        transfer = self._transfers.get(x87)
        if transfer is None:
            transfer = self._transfers[x87] = Transfer(self, x87 and self.x87)
        return transfer

    def _registers_used(self, instr) -> None:
        """Which vector, opmask and x87 state the engine loads and commits: what iced-x86 says the
        instruction uses (implicit registers included), everything for a state save or restore."""
        info = OpCodeInfo(instr.code)
        usage = _info_factory.info(instr).used_registers()
        used = [r.register for r in usage]
        # a VEX or EVEX write zeroes the destination up to the architecture's width (512 bits),
        # the bits this CPU lacks included (the Python semantics' model too)
        self.zeroed = frozenset(
            RegisterExt.number(r.register) for r in usage
            if RegisterExt.is_vector_register(r.register) and r.access in _WRITES
            and info.encoding in (EncodingKind.VEX, EncodingKind.EVEX))
        if instr.op_mask != Register.NONE:
            used.append(instr.op_mask)
        self.whole = info.is_save_restore or instr.is_vsib
        everything = info.is_save_restore
        full = {RegisterExt.full_register(r) for r in used}
        self.gprs = tuple(name for reg, name in _GPR64.items() if everything or reg in full)
        self.vectors = tuple(range(32)) if everything else tuple(sorted(
            {RegisterExt.number(r) for r in used if RegisterExt.is_vector_register(r)}))
        self.opmasks = tuple(range(8)) if everything else tuple(sorted(
            {r - Register.K0 for r in used if Register.K0 <= r <= Register.K7}))
        x87_escape = info.encoding == EncodingKind.LEGACY and info.table == 0 and 0xD8 <= info.op_code <= 0xDF
        self.x87 = everything or x87_escape or any(RegisterExt.is_st(r) or RegisterExt.is_mm(r) for r in used)

    def _stand_in_for_rsp(self) -> None:
        """The engine runs on its own stack: an rsp (esp, sp, spl) operand becomes a register the
        instruction does not use, loaded with rsp's value (``swap``: that register's name)."""
        instr = self.instruction
        operands = [i for i in range(instr.op_count)
                    if instr.op_kind(i) == OpKind.REGISTER and instr.op_register(i) in _STACK_POINTERS]
        if not operands:
            return
        used = {RegisterExt.full_register(r.register) for r in _info_factory.info(instr).used_registers()}
        stand_in = next(r for r in (Register.R15, Register.R14, Register.R13, Register.R12, Register.R11)
                        if r not in used)
        moved = instr.copy()
        for i in operands:
            size = RegisterExt.size(instr.op_register(i))
            moved.set_op_register(i, {8: stand_in, 4: stand_in + (Register.R15D - Register.R15),
                                      2: stand_in + (Register.R15W - Register.R15),
                                      1: stand_in + (Register.R15L - Register.R15)}[size])
        self.code = engine.encode(moved, instr.ip)
        self.instruction = engine.decode(self.code, instr.ip)
        self.swap = _GPR64[stand_in]
        self.gprs = tuple(dict.fromkeys(self.gprs + ("rsp", self.swap)))

    def _vsib_shape(self, instr) -> None:
        """A gather's or scatter's data register (number), element count, and whether it stores."""
        data = [instr.op_register(i) for i in range(instr.op_count)
                if instr.op_kind(i) == OpKind.REGISTER and RegisterExt.is_vector_register(instr.op_register(i))]
        index_bits = 32 if instr.is_vsib32 else 64
        if not data or instr.memory_index == Register.NONE:
            return                    # a bare `Instruction.create(code)` (coverage's): no shape
        self.data = RegisterExt.number(data[0])
        self.count = min(RegisterExt.size(data[0]) * 8 // (self.size * 8),
                         RegisterExt.size(instr.memory_index) * 8 // index_bits)
        self.scatter = any(m.access in _WRITES for m in _info_factory.info(instr).used_memory())

    @staticmethod
    def _explicit(m, instruction) -> bool:
        return m.base == instruction.memory_base and m.index == instruction.memory_index

    # -- per execution ---------------------------------------------------------------------------
    def address(self, cpu, operand) -> int:
        """The window address the instruction's memory operand starts at (VSIB: its first element)."""
        if self.kind == "explicit":
            return operand.address(cpu)
        if self.kind == "bias":
            return self._pointer_address(cpu)
        return min(self.elements(cpu))

    def in_window(self, cpu, operand) -> bool:
        if self.kind == "vsib":       # a masked-off element is not accessed
            window = cpu.layout.size
            elements = self.elements(cpu)
            return any(elements[i] < window for i in self.active(cpu))
        return cpu.layout.contains(self.address(cpu, operand), self.size)

    def active(self, cpu) -> list[int]:
        """The masked-on elements of a gather or scatter, in element order."""
        bits = self.mask.bits(cpu, self.count)
        return [i for i in range(self.count) if bits >> i & 1]

    def origin(self, cpu, r) -> int | None:
        """The displacement that puts a gather's or scatter's elements on the shadow page with
        its base register dropped (base + disp + shadow), None if no disp32 reaches it."""
        instr = self.instruction
        base = 0
        if instr.memory_base != Register.NONE:
            base = cpu.reg(_GPR64[RegisterExt.full_register(instr.memory_base)])
        origin = (base + instr.memory_displacement + r.shadow) & M64
        if engine.address_bits(instr) == 32:
            return origin & 0xFFFFFFFF        # 67h: the CPU's sum wraps at 32 bits, any disp32 reaches
        if origin >= 1 << 63:
            origin -= 1 << 64
        return origin if -2**31 <= origin < 2**31 else None

    def element_wise(self, cpu, active: list[int], r) -> bool:
        """Whether a gather or scatter must run element by element (`elements`): a masked-on
        element outside the window, across its end, or on a hole, or a base too far for the
        placed displacement."""
        if self.origin(cpu, r) is None:
            return True
        layout, elements = cpu.layout, self.elements(cpu)
        try:
            for i in active:
                if not layout.contains(elements[i], self.size):
                    return True
                layout.resolve(elements[i], self.size)
        except LayoutError:
            return True
        return False

    def _pointer_address(self, cpu) -> int:
        full = _GPR64[RegisterExt.full_register(self.pointer)]
        bits = RegisterExt.size(self.pointer) * 8
        address = cpu.reg(full) & ((1 << bits) - 1)
        if self.instruction.code == Code.XLAT_M8:
            address = (address + (cpu.reg("rax") & 0xFF)) & ((1 << bits) - 1)
        return address

    def elements(self, cpu) -> list[int]:
        """The address of every element of a gather or scatter (masked-off ones included)."""
        instr = self.instruction
        index_bits = 32 if instr.is_vsib32 else 64
        count = self.count
        vector = cpu.reg(f"zmm{RegisterExt.number(instr.memory_index)}")
        base = 0
        if instr.memory_base != Register.NONE:
            full = _GPR64[RegisterExt.full_register(instr.memory_base)]
            base = cpu.reg(full) & ((1 << RegisterExt.size(instr.memory_base) * 8) - 1)
        # a 67h prefix makes the addresses 32-bit: each wraps there, as the CPU computes it
        wrap = M64 if engine.address_bits(instr) == 64 else 0xFFFFFFFF
        out = []
        for i in range(count):
            index = (vector >> (index_bits * i)) & ((1 << index_bits) - 1)
            if index >> (index_bits - 1):
                index -= 1 << index_bits
            out.append((base + index * instr.memory_index_scale + instr.memory_displacement) & wrap)
        return out

    def locate(self, cpu, operand, r, form):
        """(read ranges, write ranges, machine code, bias) for this execution.  Ranges are
        ``(address, size, always)``: ``always`` writes land whole, others only where bytes changed."""
        window = cpu.layout.size
        if self.instruction.mnemonic in _RFBM_FORMS:
            self._requested(cpu, form)
        if self.kind == "vsib":       # only masked-on elements, all in registers (`element_wise`)
            elements = self.elements(cpu)
            ranges = [(elements[i], self.size, self.scatter) for i in self.active(cpu)]
            # a scatter stores each masked-on element (and reads none), a gather only reads them
            reads, writes = ([], ranges) if self.scatter else (ranges, [])
            origin = self.origin(cpu, r)
            if origin is None:        # `element_wise` says so first
                raise UnsupportedInstruction(form.address, form.code, form.disassembly,
                                             "gather/scatter base and displacement too far from the window")
            return reads, writes, engine.place_vsib(self.code, origin), {}
        address = self.address(cpu, operand)
        located = self.ranges(address, window)
        if located is None:
            raise UnsupportedInstruction(form.address, form.code, form.disassembly,
                                         "memory accesses both in the window and outside it")
        reads, writes = located
        if self.mask is not None:     # a masked-off element is not accessed: a hole there is no fault
            reads = [(at, size, False) for start, length, _ in reads
                     for at, size in masked.pieces(self.mask, cpu, start, length)]
            # nor stored (iced-x86 calls vmaskmov's store unconditional, an AVX-512 masked store
            # conditional): each masked-on element is stored whole, the others are not touched
            writes = [(at, size, True) for start, length, _ in writes
                      for at, size in masked.pieces(self.mask, cpu, start, length)]
        if self.instruction.mnemonic in footprint.FORMS:
            self._footprint(cpu, form, address)
        if self.kind == "bias":
            name = _GPR64[RegisterExt.full_register(self.pointer)]
            return reads, writes, self.code, {name: r.shadow}
        return reads, writes, engine.place_at(self.code, address), {}

    def _requested(self, cpu, form) -> None:
        """Refuse an XSAVE-family RFBM naming state the stub does not swap."""
        if cpu.reg("rax") & PKRU_COMPONENT:
            raise UnsupportedInstruction(form.address, form.code, form.disassembly,
                                         "the PKRU component (edx:eax bit 9): the host CPU would load "
                                         "or store regmap's own protection-key rights")
        requested = (cpu.reg("rdx") << 32 | cpu.reg("rax") & 0xFFFFFFFF) & host.current().xcr0
        if requested & AMX_COMPONENTS:
            raise UnsupportedInstruction(form.address, form.code, form.disassembly,
                                         "the AMX components (edx:eax bits 17, 18): the engine does not "
                                         "swap TILECFG/TILEDATA, the host CPU would load or store "
                                         "regmap's own tile state")

    def _footprint(self, cpu, form, address: int) -> None:
        """Check every byte a state save or restore accesses (`footprint`): a hole faults as
        unmapped memory would (`LayoutError`), bytes past the window are refused."""
        layout, mnemonic = cpu.layout, self.instruction.mnemonic
        rfbm = (cpu.reg("rdx") << 32 | cpu.reg("rax") & 0xFFFFFFFF) & host.current().xcr0
        xcomp = 0
        head = footprint.header_bytes(mnemonic)
        if head is not None:          # XRSTOR reads its header first: which form, which components
            self._check(layout, form, address + head[0], head[1])
            xcomp = cpu._peek_window(address + head[0] + 8, 8)
        for offset, size in footprint.accessed(mnemonic, rfbm, xcomp):
            self._check(layout, form, address + offset, size)

    @staticmethod
    def _check(layout, form, start: int, size: int) -> None:
        if start + size > layout.size:
            raise UnsupportedInstruction(form.address, form.code, form.disassembly,
                                         "memory accesses both in the window and outside it")
        layout.resolve(start, size)

    def ranges(self, address: int, window: int):
        """``(reads, writes)`` of the accesses of an operand at window address ``address`` (not a
        gather's), None if one falls outside the ``window``-byte window."""
        reads, writes = [], []
        for offset, size, read, always, maybe in self.accesses:
            start = address + offset
            if size == 0:                  # variable size (xsave and friends): to the window's end
                if always or maybe:
                    writes.append((start, window - start, False))
                continue
            if not 0 <= start <= window - size:
                return None
            if read:
                reads.append((start, size, always))
            if always or maybe:
                writes.append((start, size, always))
        return reads, writes

    def __repr__(self) -> str:
        return f"Plan({self.kind}, {self.code.hex(' ')}, refusal={self.refusal!r}, swap={self.swap})"


def plan_for(instruction, code: bytes) -> Plan:
    return Plan(instruction, code)
