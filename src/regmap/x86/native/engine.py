"""Run one instruction on the host CPU against the shadow page: placing it, running it, its faults.

An instruction whose memory operand is in the window cannot run as written
(page 0 is not mapped), so it is re-encoded with iced-x86 with that operand
moved onto the shadow page, which holds the window's bytes.  Two placements:

- `place`: the operand keeps its base and index and its displacement gains
  the shadow page's address (what the oracle's tests use: the registers
  keep their window values, and VSIB elements move with their base);
- `place_at`: the operand becomes the absolute ``[shadow + address]``, its
  segment prefix dropped, for an address the emulator has computed (base,
  index, segment base and address-size wrap already applied).
"""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
from functools import lru_cache

from iced_x86 import Code, Decoder, Encoder, Instruction, InstructionInfoFactory, OpKind, Register, RegisterExt

from regmap.errors import InstructionFault, UnsupportedInstruction
from regmap.x86.native import region as _region
from regmap.x86.native.state import NativeState, read_state, write_state

M64 = (1 << 64) - 1
LOCK = threading.Lock()     # one region per process: one instruction at a time
RUN_ON = _region.HOST_STACK     # where a form run for the emulator runs: the host's stack (no sigaltstack)
_OWNER: list = [None]       # the thread holding LOCK
_get_ident = threading.get_ident
_info_factory = InstructionInfoFactory()


def _after_fork_in_child() -> None:
    # the child has only the thread that forked: LOCK, if another thread held it, never frees
    global LOCK
    LOCK = threading.Lock()
    _OWNER[0] = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class NativeFault(Exception):
    """The instruction (or the stub around it) raised an exception on the host CPU."""

    def __init__(self, signo: int, si_code: int, address: int, rip: int, insn: str, in_instruction: bool):
        self.signo, self.si_code, self.address, self.rip = signo, si_code, address, rip
        self.in_instruction = in_instruction
        self.signal_name = signal.Signals(signo).name if signo in signal.Signals._value2member_map_ else str(signo)
        super().__init__(f"{insn}: {self.signal_name} (si_code {si_code}, si_addr {address:#x}, rip {rip:#x})")


def decode(code: bytes, address: int) -> Instruction:
    instr = Decoder(64, code, ip=address).decode()
    if instr.code == Code.INVALID:
        raise ValueError(f"cannot decode {code.hex(' ')}")
    return instr


def memory_operand_index(instr: Instruction) -> int | None:
    for i in range(instr.op_count):
        if instr.op_kind(i) == OpKind.MEMORY:
            return i
    return None


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


def encode(instr: Instruction, at: int) -> bytes:
    encoder = Encoder(64)
    encoder.encode(instr, at)
    return encoder.take_buffer()


def _placed(code: bytes, native: bytes, insn: int) -> Placed:
    after = insn + len(native)
    emulator_rip = after - len(code)
    return Placed(code, native, insn, after, emulator_rip, decode(code, emulator_rip))


@lru_cache(maxsize=4096)
def place(code: bytes) -> Placed:
    """Re-encode ``code`` to run at the instruction slot with its explicit memory operand's
    displacement moved by the shadow page's address (base and index kept).  An instruction
    without an explicit memory operand is placed unchanged."""
    r = _region.ensure()
    code = bytes(code)
    instr = decode(code, r.insn)
    code = code[:instr.len]
    if instr.is_ip_rel_memory_operand:
        raise ValueError(f"{instr}: RIP-relative operands are not placed on the shadow page")
    if memory_operand_index(instr) is None:
        return _placed(code, code, r.insn)
    moved = instr.copy()
    registers = instr.memory_base or instr.memory_index
    a32 = RegisterExt.size(registers) == 4 if registers else instr.memory_displ_size == 4
    moved.memory_displacement = (instr.memory_displacement + r.shadow) & (0xFFFFFFFF if a32 else M64)
    if moved.memory_displ_size == 0:
        moved.memory_displ_size = 1             # [rcx] gains a displacement: the encoder widens it
    if not registers and instr.memory_displacement >= 2**31 and instr.memory_displ_size == 8:
        raise ValueError(f"{instr}: absolute address outside the window")
    return _placed(code, encode(moved, r.insn), r.insn)


@lru_cache(maxsize=4096)
def place_at(code: bytes, address: int) -> bytes:
    """``code`` re-encoded with its explicit memory operand the absolute shadow address of
    window address ``address``."""
    r = _region.ensure()
    moved = decode(code, r.insn)
    moved.memory_base = Register.NONE
    moved.memory_index = Register.NONE
    moved.memory_index_scale = 1
    moved.segment_prefix = Register.NONE
    moved.memory_displacement = r.shadow + address
    moved.memory_displ_size = 4
    return encode(moved, r.insn)


@lru_cache(maxsize=4096)
def place_vsib(code: bytes, origin: int) -> bytes:
    """A gather or scatter re-encoded with no base register and displacement ``origin`` (its base's
    value plus its displacement plus the shadow page's address): each element is then
    ``shadow + base + disp + index * scale`` whatever register the base was."""
    r = _region.ensure()
    moved = decode(code, r.insn)
    moved.memory_base = Register.NONE
    moved.segment_prefix = Register.NONE
    moved.memory_displacement = origin & M64
    moved.memory_displ_size = 4
    return encode(moved, r.insn)


def execute(native: bytes, state: NativeState, describe=lambda: "", watchdog: float = 0.0,
            vectors=None, x87: bool = True) -> NativeState:
    """Run ``native`` (already placed) from ``state``; the state after it, or `NativeFault`.
    ``vectors`` and ``x87`` say which of the vector and x87 state to load and save (see
    `write_state`)."""
    r = _region.ensure()
    body = native + r.jump_to_epilogue(r.insn + len(native))
    if _OWNER[0] == threading.get_ident():
        raise RuntimeError("the native engine was re-entered by the thread running it")
    with LOCK:
        _OWNER[0] = threading.get_ident()
        try:
            write_state(r, state, vectors, x87)
            fault = r.call(body, watchdog)
        finally:
            _OWNER[0] = None
        if fault is None:
            return read_state(r, state, vectors, x87)
    signo, si_code, si_addr, rip = fault
    in_instruction = r.insn <= rip < r.insn + len(native)
    raise NativeFault(signo, si_code, si_addr, rip, describe(), in_instruction)


@lru_cache(maxsize=4096)
def body(native: bytes) -> bytes:
    """``native`` (placed) followed by its jump to the stub's epilogue: what the slot holds."""
    r = _region.ensure()
    return native + r.jump_to_epilogue(r.insn + len(native))


def run_transfer(r, native: bytes, transfer, values: list[int], signals: int,
                 window: list[tuple[int, bytes]], stored, describe=lambda: "",
                 address: int = 0) -> tuple[list[int], list[bytes]]:
    """Run ``native`` (already placed) in region ``r`` with the registers ``values`` in
    ``transfer``'s order, the shadow page holding ``window`` (``(address, bytes)`` pieces), on
    the host's stack and with the fault signals ``signals`` routed to the stub's handler.
    Returns the registers after it (`Transfer.unload`; an x87 form's FOP, FIP and FDP as had it
    run at ``address``, the instruction's own) and the shadow page's bytes in each
    ``(address, size, ...)`` of ``stored``, or raises `NativeFault`."""
    me = _get_ident()
    if _OWNER[0] == me:
        raise RuntimeError("the native engine was re-entered by the thread running it")
    with LOCK:
        _OWNER[0] = me
        try:
            shadow = r.shadow_view
            for start, data in window:
                shadow[start:start + len(data)] = data
            transfer.load(r.view, values, r.stack_top, signals | RUN_ON)
            fault = r.call(body(native))
        finally:
            _OWNER[0] = None
        if fault is None:
            after = transfer.unload(r.view, values)
            if transfer.fop_at is not None:
                transfer.pointers(after, values, address, r)
            return after, [bytes(shadow[start:start + size]) for start, size, *_ in stored] if stored else []
    signo, si_code, si_addr, rip = fault
    raise NativeFault(signo, si_code, si_addr, rip, describe(), r.insn <= rip < r.insn + len(native))


def run(code: bytes, state: NativeState, *, bias: dict[str, int] | None = None,
        watchdog: float = 0.0) -> NativeState:
    """Execute window instruction ``code`` from ``state`` with its memory operand on the shadow page
    (`place`); the state after it.

    ``state.shadow`` is the window image the memory operand reads and writes; ``state.stack`` is
    the scratch stack's memory (point rsp into it, e.g. at ``stack_top``, for stack instructions).
    ``bias`` adds an amount to registers for the run only and takes it off again afterwards (for
    implicit memory operands such as a string instruction's rsi/rdi: bias them by the shadow
    page's address).  Raises `NativeFault` if the instruction faults.
    """
    placed = place(code)
    instr = placed.instruction
    run_state = state.copy()
    for name, amount in (bias or {}).items():
        run_state.gpr[name] = (run_state.gpr[name] + amount) & M64
    out = execute(placed.native, run_state, lambda: f"{placed.code.hex(' ')} ({instr})", watchdog)
    # a 32-bit address size updates esi/edi as 32-bit registers: the bias comes off modulo 2**32
    mask = 0xFFFFFFFF if bias and address_bits(instr) == 32 else M64
    for name, amount in (bias or {}).items():
        out.gpr[name] = (out.gpr[name] - amount) & mask
    return out


def address_bits(instr: Instruction) -> int:
    for m in _info_factory.info(instr).used_memory():
        return {1: 16, 2: 32, 3: 64}.get(m.address_size, 64)      # iced CodeSize
    return 64


def changed_runs(old: bytes, new: bytes):
    """(start, end) of each run of bytes that differ."""
    i, n = 0, len(old)
    while i < n:
        if old[i] != new[i]:
            j = i
            while j < n and old[j] != new[j]:
                j += 1
            yield i, j
            i = j
        else:
            i += 1


def delivered(fault: NativeFault, form, r) -> Exception:
    """The CPU's exception as the program would see it: at the instruction's own address."""
    if not fault.in_instruction:
        return UnsupportedInstruction(form.address, form.code, form.disassembly,
                                      f"the host CPU refused the thread's state: {fault}")
    address = fault.address
    if r.insn <= address < r.insn + 16:
        address = form.address
    elif r.shadow - 0x1000 <= address < r.shadow + 0x2000:
        address = (address - r.shadow) & M64          # an access that ran off the window
    return InstructionFault(f"{form.disassembly}: {fault.signal_name} (si_code {fault.si_code})",
                            fault.signo, fault.si_code, address)

