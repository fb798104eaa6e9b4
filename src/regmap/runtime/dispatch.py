"""Faults served by machine code: a known site's fault sent to its trampoline, with no Python.

Every window access faults, and the kernel's signal round trip is the floor
of its cost.  What the Python handler adds on top of it (the GIL, a thread
state, the emulator) is what this module takes away for sites Python has
already seen: the installed handler is a few dozen instructions, generated
here, in front of the Python entry (`regmap.runtime.threadstate`).  For a
fault raised by the CPU at an address it knows, with the same instruction
bytes there and the same window address, it sets the frame's rip to the
site's trampoline (`regmap.x86.trampoline`: the instruction moved onto a
copy of its window bytes on the thread's stack) and returns.  ``sigreturn``
resumes the thread in the trampoline, which does what the instruction would
have done and jumps to the site's next instruction.  Anything else (an
unknown site, other bytes, another address, a fetch fault, a signal a
process sent) goes to Python exactly as before.

So the machine code never emulates anything: its only decisions are "is this
fault one Python planned?" and "which trampoline?", and the trampoline is the
same code that a patched site jumps to.  A fault inside a trampoline (#GP,
#AC, #DE, ...) reaches Python like any other and is mapped back onto the
site there (`trampolines.map_back`).  The handler makes no call, takes no
lock, touches no memory but the table, the frame and the faulting
instruction's bytes (readable: the CPU just fetched them; sites whose bytes
are not readable in place are never planned), so it is async-signal-safe and
runs on any thread, including those Python never saw.

The table: `SLOTS` pairs (site address, chain) probed linearly from a
Fibonacci hash of rip, at most `PROBES` apart.  A chain is a list of records
for one instruction's bytes, one per window address it was seen with (a
constant-address site has one; ``mov rax, [rdi]`` one per rdi it faulted with,
at most `MAX_ADDRESSES`).  A record (`RECORD` bytes, never freed) holds the
trampoline, the bytes, and how to compute the address from the frame's
general registers (base and index offsets in the frame, scale, displacement,
a 32-bit mask under an address-size prefix); its counter, in the record's
second cache line, is incremented with ``lock inc`` and read by `counts`.

Python writes under the GIL (and `_LOCK`) while other threads read without
it: a record is complete before it is linked (x86 keeps stores in order), a
chain's head replaces the old one with one aligned 8-byte store, and a slot
gets its chain before its key.  Keys are removed only by `forget`, which
empties the whole table; a reader that raced with it sends one more fault to
its trampoline, which is still correct (trampolines are never freed either).
"""
from __future__ import annotations

import ctypes
import os
import threading
from functools import partial

from iced_x86 import Code, Instruction, MemoryOperand, Register

from regmap.runtime import trampolines
from regmap.runtime.onward import call_then_go_on
from regmap.runtime.frame import GREG_INDEX, W_ERR, W_RIP, W_TRAPNO
from regmap.x86.machine_code import Labels, assemble, code_page, locked
from regmap.x86.trampoline import Declined, OperandAddress, operand_address

W_RSP = GREG_INDEX["rsp"]
BITS = 14                 # 16 384 slots, 256 KiB
SLOTS = 1 << BITS
PROBES = 16
MAX_ADDRESSES = 8         # window addresses remembered per register-addressed site
GOLDEN = 0x9E3779B97F4A7C15
M64 = (1 << 64) - 1
# a record: read-only once linked (first cache line), then the counter (second line)
R_TRAMPOLINE, R_EXPECTED, R_DISP, R_MASK = 0, 8, 16, 24
R_BASE, R_INDEX, R_SCALE, R_LENGTH = 32, 34, 36, 37     # u16 frame offsets (0: none), u8, u8
R_NEXT, R_BYTES, R_COUNT = 40, 48, 64
RECORD = 128
POOL = 256                # records per allocation
CODE_SIZE = 0x200
# rsp below this (a program running its stack in the window) is served by Python: the
# trampoline moves rsp down past the red zone and a scratch of up to ~1 KiB, into page 0
LOWEST_STACK = 0x2000

TABLE = (ctypes.c_uint64 * (2 * SLOTS))()     # slot i: [2i] site address, [2i + 1] chain head
AFTER = [16]              # faults at a site (through Python) before it is planned; 0: never
_POOLS: list = []         # every record ever made stays: a thread may be reading it
_FREE: list[int] = []
_PAGE: list[int] = []         # the handler's code (never unmapped: a thread may be in it)
PYTHON = ctypes.c_uint64(0)   # where it goes on to: the Python entry (`threadstate.entry`)
_LOCK = threading.Lock()


class Known:
    """A site's instruction bytes as planned: how its window address is computed, its records."""

    def __init__(self, site: int, code: bytes, mnemonic: str | None):
        self.site, self.code, self.mnemonic = site, code, mnemonic
        self.records: dict[int, int] = {}     # window address -> record (0: that one declined)
        self.head = 0
        self.declined: str | None = None
        try:
            self.operand = operand_address(site, code)
        except Declined as reason:
            self.declined = str(reason)
            self.operand = OperandAddress(None, None, 0, 0, M64)
        self.registers = bool(self.operand.base or self.operand.index)
        # the base and index as offsets of their words in the frame (0: none), for the handler
        self.base, self.index = (8 * GREG_INDEX[name] if name else 0
                                 for name in (self.operand.base, self.operand.index))

    def address(self, frame) -> int:
        """The operand's address with the frame's registers, as the handler computes it."""
        return self.operand.value(partial(getattr, frame))


PLANS: dict[tuple[int, bytes], Known] = {}
# planned before the last `forget`: (site, mnemonic) -> faults served, never sent to again
_RETIRED: dict[tuple[int, str | None], int] = {}
_RECORDS: dict[tuple, int] = {}     # (site, bytes, address, trampoline) -> its record, made once
_TRAMPOLINES: dict[tuple, tuple] = {}   # (site, bytes, at, id(layout)) -> (trampoline, layout kept)


def learn(site, frame, layout) -> None:
    """A fault at `site` was just served in Python, with the registers of `frame` (none of
    those its address uses changed): give it a trampoline for this window address and send
    its next faults there, if it has faulted `AFTER` times and gets one."""
    if not AFTER[0] or site.count < AFTER[0] or not site.in_place or not _LOCK.acquire(False):
        return
    try:
        key = (site.address, site.code)
        known = PLANS.get(key)
        if known is None:
            if len(PLANS) >= SLOTS:
                return
            known = PLANS[key] = Known(site.address, site.code, site.mnemonic)
        if known.declined:
            return
        address = known.address(frame)
        record = known.records.get(address)
        if record is None:
            if len(known.records) >= MAX_ADDRESSES:
                return
            trampoline = _trampoline(known, address if known.registers else None, layout)
            record = known.records[address] = trampoline and _record(known, address, trampoline)
            if not record:
                if not known.registers:
                    known.declined = "no trampoline"
                return
            known.head = record
        _publish(site.address, known.head)
    finally:
        _LOCK.release()


def _trampoline(known: Known, at: int | None, layout) -> int:
    """The address of `known`'s trampoline (for window address `at` if register-addressed), 0
    if it gets none; placed once per layout (planned again after `forget`, a site takes the
    same: trampolines are never freed)."""
    key = (known.site, known.code, at, id(layout))
    placed = _TRAMPOLINES.get(key)
    if placed is None:
        trampoline = trampolines.place(known.site, known.code, layout, at)
        placed = _TRAMPOLINES[key] = (trampoline.address if trampoline else 0, layout)
    return placed[0]


def _record(known: Known, address: int, trampoline: int) -> int:
    """The record sending `known`'s faults at window `address` to `trampoline`, linked in front
    of `known`'s chain (made once: a site planned again after `forget` takes the same)."""
    key = (known.site, known.code, address, trampoline)
    record = _RECORDS.get(key)
    if record is not None:          # (its counter `forget` took, and left at 0)
        ctypes.c_uint64.from_address(record + R_NEXT).value = known.head
        return record
    if not _FREE:
        pool = ctypes.create_string_buffer(RECORD * (POOL + 1))
        _POOLS.append(pool)
        start = -(-ctypes.addressof(pool) // RECORD) * RECORD
        _FREE.extend(start + RECORD * i for i in range(POOL))
    record = _FREE.pop()
    ctypes.memset(record, 0, RECORD)
    u64 = lambda offset, value: setattr(ctypes.c_uint64.from_address(record + offset), "value", value)  # noqa: E731
    u64(R_TRAMPOLINE, trampoline)
    u64(R_EXPECTED, address)
    u64(R_DISP, known.operand.disp)
    u64(R_MASK, known.operand.mask)
    ctypes.c_uint16.from_address(record + R_BASE).value = known.base
    ctypes.c_uint16.from_address(record + R_INDEX).value = known.index
    ctypes.c_uint8.from_address(record + R_SCALE).value = known.operand.shift
    ctypes.c_uint8.from_address(record + R_LENGTH).value = len(known.code)
    ctypes.memmove(record + R_BYTES, known.code, len(known.code))
    u64(R_NEXT, known.head)
    _RECORDS[key] = record
    return record


def _publish(site: int, head: int) -> None:
    slot = ((site * GOLDEN) & M64) >> (64 - BITS)
    for _ in range(PROBES):
        key = TABLE[2 * slot]
        if key in (0, site):
            TABLE[2 * slot + 1] = head       # the chain before the key: never a key without one
            TABLE[2 * slot] = site
            return
        slot = (slot + 1) & (SLOTS - 1)


def forget() -> None:
    """Send every fault to Python again (tracing, another layout or addressing mode, unmapping);
    what was planned is planned afresh."""
    with _LOCK:
        ctypes.memset(TABLE, 0, ctypes.sizeof(TABLE))   # a reader that raced finds no key or no chain
        for site, mnemonic, total in _served(PLANS.values(), take=True):   # they still count
            _RETIRED[site, mnemonic] = _RETIRED.get((site, mnemonic), 0) + total
        PLANS.clear()


def counts() -> list[tuple[int, str | None, int]]:
    """(site, mnemonic, faults served by the machine code) of each instruction planned."""
    served = list(_served(list(PLANS.values())))
    return served + [(site, mnemonic, total) for (site, mnemonic), total in _RETIRED.items()]


def _served(plans, take: bool = False):
    """(site, mnemonic, faults served) of each of `plans` that served any; `take`: the records'
    counters go back to 0 (a record may serve again after `forget`, for a new plan)."""
    for known in plans:
        total = 0
        for record in known.records.values():
            if record:
                counter = ctypes.c_uint64.from_address(record + R_COUNT)
                total += counter.value
                if take:
                    counter.value = 0
        if total:
            yield known.site, known.mnemonic, total


def reset() -> None:
    """Every counter back to 0."""
    _RETIRED.clear()
    for _ in _served(list(PLANS.values()), take=True):
        pass


def _after_fork_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()       # a thread that held it is not in the child


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_after(after: int) -> None:
    AFTER[0] = max(0, int(after))
    if not AFTER[0]:
        forget()


# -- the handler ------------------------------------------------------------------------------------

def entry(python: int) -> int:
    """The address to install as the SIGSEGV/SIGBUS handler in front of the Python entry at
    `python`.  One page for the process, made once: an installation after another only
    changes where it goes on to (every Python entry ever installed serves the same `ACTIVE`
    state, and stays alive), and maps nothing new."""
    PYTHON.value = python
    if not _PAGE:
        _PAGE.append(code_page(_dispatcher, CODE_SIZE))
    return _PAGE[0]


def _dispatcher(at: int) -> bytes:
    labels = Labels()
    fetched, probe, found, chain, compare, no_base, no_index, hit, slow = \
        (labels.new() for _ in range(9))
    RAX, RCX, RDX, RSI, R8, R9, R10, R11 = (Register.RAX, Register.RCX, Register.RDX,
                                             Register.RSI, Register.R8, Register.R9,
                                             Register.R10, Register.R11)
    m = MemoryOperand
    jump = lambda code, label: Instruction.create_branch(code, label)   # noqa: E731
    ins = [
        # raised by the CPU (si_code 1..SI_KERNEL), and not an instruction fetch
        Instruction.create_reg_mem(Code.MOV_R32_RM32, Register.EAX, m(RSI, displ=8, displ_size=1)),
        Instruction.create_reg(Code.DEC_RM32, Register.EAX),
        Instruction.create_reg_u32(Code.CMP_RM32_IMM32, Register.EAX, 0x7F),
        jump(Code.JA_REL32_64, slow),
        Instruction.create_mem_i32(Code.CMP_RM64_IMM8, m(RDX, displ=8 * W_TRAPNO, displ_size=1), 14),
        jump(Code.JNE_REL32_64, fetched),
        Instruction.create_mem_u32(Code.TEST_RM8_IMM8, m(RDX, displ=8 * W_ERR, displ_size=1), 0x10),
        jump(Code.JNE_REL32_64, slow),
        labels.at(fetched),
        # a stack in or just above the window: the trampoline's scratch would land in page 0
        Instruction.create_mem_i32(Code.CMP_RM64_IMM32, m(RDX, displ=8 * W_RSP, displ_size=1),
                                   LOWEST_STACK),
        jump(Code.JB_REL32_64, slow),
        Instruction.create_reg_mem(Code.MOV_R64_RM64, R8, m(RDX, displ=8 * W_RIP, displ_size=1)),
        Instruction.create_reg_u64(Code.MOV_R64_IMM64, RAX, GOLDEN),
        Instruction.create_reg_reg(Code.IMUL_R64_RM64, RAX, R8),
        Instruction.create_reg_u32(Code.SHR_RM64_IMM8, RAX, 64 - BITS),
        Instruction.create_reg_u64(Code.MOV_R64_IMM64, R9, ctypes.addressof(TABLE)),
        Instruction.create_reg_u32(Code.MOV_R32_IMM32, Register.ECX, PROBES),
        labels.at(probe),
        Instruction.create_reg_reg(Code.MOV_R64_RM64, R10, RAX),
        Instruction.create_reg_u32(Code.SHL_RM64_IMM8, R10, 4),
        Instruction.create_mem_reg(Code.CMP_RM64_R64, m(R9, R10), R8),
        jump(Code.JE_REL32_64, found),
        Instruction.create_mem_i32(Code.CMP_RM64_IMM8, m(R9, R10), 0),
        jump(Code.JE_REL32_64, slow),
        Instruction.create_reg(Code.INC_RM32, Register.EAX),
        Instruction.create_reg_u32(Code.AND_RM32_IMM32, Register.EAX, SLOTS - 1),
        Instruction.create_reg(Code.DEC_RM32, Register.ECX),
        jump(Code.JNE_REL32_64, probe),
        jump(Code.JMP_REL32_64, slow),
        labels.at(found),
        Instruction.create_reg_mem(Code.MOV_R64_RM64, R10, m(R9, R10, displ=8, displ_size=1)),
        Instruction.create_reg_reg(Code.TEST_RM64_R64, R10, R10),
        jump(Code.JE_REL32_64, slow),
        # the instruction's bytes, as planned (every record of a chain has the same)
        Instruction.create_reg_mem(Code.MOVZX_R32_RM8, Register.ECX, m(R10, displ=R_LENGTH, displ_size=1)),
        Instruction.create_reg_reg(Code.XOR_R32_RM32, Register.EAX, Register.EAX),
        labels.at(compare),
        Instruction.create_reg_mem(Code.MOVZX_R32_RM8, Register.R11D, m(R8, RAX)),
        Instruction.create_reg_mem(Code.CMP_R8_RM8, Register.R11L,
                                   m(R10, RAX, displ=R_BYTES, displ_size=1)),
        jump(Code.JNE_REL32_64, slow),
        Instruction.create_reg(Code.INC_RM32, Register.EAX),
        Instruction.create_reg_reg(Code.CMP_R32_RM32, Register.EAX, Register.ECX),
        jump(Code.JB_REL32_64, compare),
        # the operand's address from the frame's registers, against each record's
        labels.at(chain),
        Instruction.create_reg_mem(Code.MOV_R64_RM64, RAX, m(R10, displ=R_DISP, displ_size=1)),
        Instruction.create_reg_mem(Code.MOVZX_R32_RM16, Register.ECX, m(R10, displ=R_BASE, displ_size=1)),
        Instruction.create_reg_reg(Code.TEST_RM32_R32, Register.ECX, Register.ECX),
        jump(Code.JE_REL32_64, no_base),
        Instruction.create_reg_mem(Code.ADD_R64_RM64, RAX, m(RDX, RCX)),
        labels.at(no_base),
        Instruction.create_reg_mem(Code.MOVZX_R32_RM16, Register.ECX, m(R10, displ=R_INDEX, displ_size=1)),
        Instruction.create_reg_reg(Code.TEST_RM32_R32, Register.ECX, Register.ECX),
        jump(Code.JE_REL32_64, no_index),
        Instruction.create_reg_mem(Code.MOV_R64_RM64, R11, m(RDX, RCX)),
        Instruction.create_reg_mem(Code.MOV_R8_RM8, Register.CL, m(R10, displ=R_SCALE, displ_size=1)),
        Instruction.create_reg_reg(Code.SHL_RM64_CL, R11, Register.CL),
        Instruction.create_reg_reg(Code.ADD_R64_RM64, RAX, R11),
        labels.at(no_index),
        Instruction.create_reg_mem(Code.AND_R64_RM64, RAX, m(R10, displ=R_MASK, displ_size=1)),
        Instruction.create_reg_mem(Code.CMP_R64_RM64, RAX, m(R10, displ=R_EXPECTED, displ_size=1)),
        jump(Code.JE_REL32_64, hit),
        Instruction.create_reg_mem(Code.MOV_R64_RM64, R10, m(R10, displ=R_NEXT, displ_size=1)),
        Instruction.create_reg_reg(Code.TEST_RM64_R64, R10, R10),
        jump(Code.JNE_REL32_64, chain),
        jump(Code.JMP_REL32_64, slow),
        labels.at(hit),
        locked(Instruction.create_mem(Code.INC_RM64, m(R10, displ=R_COUNT, displ_size=1))),
        Instruction.create_reg_mem(Code.MOV_R64_RM64, RAX, m(R10, displ=R_TRAMPOLINE, displ_size=1)),
        Instruction.create_mem_reg(Code.MOV_RM64_R64, m(RDX, displ=8 * W_RIP, displ_size=1), RAX),
        Instruction.create(Code.RETNQ),
        # Python, then where it says (the program's own handler a signal is forwarded to: jumped
        # to with the same arguments once Python has returned, `genuine.forward`), or back
        labels.at(slow),
        *call_then_go_on(labels, [Instruction.create_reg_u64(Code.MOV_R64_IMM64, RAX,
                                                             ctypes.addressof(PYTHON)),
                                  Instruction.create_mem(Code.CALL_RM64, m(RAX))]),
    ]
    return assemble(ins, at)

