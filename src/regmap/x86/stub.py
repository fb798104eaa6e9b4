"""Register-addressed sites: a stub that decides at run time whether the operand is in the window.

``mov rax, [rdi + 8]`` touches the window only while rdi is near 0; the same
instruction usually runs against real memory too.  Its trampoline
(`regmap.x86.trampoline.plan` with ``at=``) is right for one window address
only, so the site cannot simply jump there.  With translation on, a hot
register-addressed site of five bytes or more becomes ``jmp rel32`` to this
stub instead, placed (as a trampoline is) within reach of the site:

1. ``lea rsp, [rsp - FRAME]``: below the red zone (leaf code's 128 bytes under
   rsp), where a signal's frame never reaches;
2. rcx saved at ``[rsp]``, then ``lea rcx, [<the operand's own address> - A]``
   (A the window address the site was hot with; under an address-size prefix
   ``lea ecx``, whose 32-bit sum zero-extends as the operand's address does):
   the original registers, since rcx is only read before it is written;
3. ``jrcxz window``: rcx is zero exactly when the operand's address is A.  No
   flag is touched anywhere (``lea``, ``mov``, ``jrcxz``);
4. otherwise rcx and rsp back, the ORIGINAL instruction copied verbatim (a
   register-addressed operand without rip is position-independent), and ``jmp``
   to the site's next instruction;
5. ``window:`` rcx and rsp back and ``jmp`` to the trampoline for A, placed
   right after the stub.

The copy in step 4 faults where the instruction would have: at another
window address (emulated, as the site's own fault would be), at a hole, an
unmapped page, a #GP...  Its address is `Stub.copy`; the runtime maps such a
fault back onto the site (rip the site, nothing else differs: rsp and rcx
are the program's again) and handles it with the site's original bytes.

An asynchronous signal delivered inside the stub shows the stub's rip; between
steps 1 and 4 (or 5) also rsp lowered by `FRAME` and, after the ``lea``, rcx
holding the address minus A.  The program's handler may look and return (the
stub finishes); one that longjmps away from there leaves rcx changed, as a
trampoline leaves its base register.  At the copy everything but rip is the
site's.

Short sites.  ``mov rax, [rdi]`` is 3 bytes: a ``jmp rel32`` covers the first bytes of the
instruction F after it too.  F moves into the stub as well (after the copy, and where the
window trampoline returns), and the site's jump is punned: the stub's address is chosen so that
the rel32 byte that falls on F's first byte is 0xCC, int3.  Whatever reaches F's old address
-- a jump to it, a thread that was there when the site was written -- traps, and the runtime
sends it to F's copy in the stub (`Stub.follower` for `Stub.boundary`); nothing ever executes
the middle of the jump.  F must fall through (no branch: a relocated call would push the
stub's address), reach past the jump's five bytes on its own, and touch no memory but the
stack's or rip-relative (so it can never be a window access: its faults are genuine, mapped
back to its old address).

Declined (`Declined`, with the reason): a short site whose next instruction cannot move, a constant
address (`regmap.x86.trampoline` takes those), rip-relative, rsp in the
address (it moves), a vector index (vsib), a segment override (fs:/gs: add a
base lea does not see), an instruction that writes a register of its own
address (the copy would be fine, but the window address would be worked out
from changed registers), and whatever the window trampoline declines (bit
offsets, string forms, branches, ...).
"""
from __future__ import annotations

from typing import NamedTuple

from iced_x86 import (Code, Decoder, FlowControl, Instruction, MemoryOperand, OpKind, Register,
                      RegisterExt)

from regmap.x86.machine_code import based
from regmap.x86.trampoline import (_FORMATTER, _INFO, INT3, JMP_REL32, JUMP_LENGTH, RED_ZONE,
                                   Declined, _Code, operand_address)
from regmap.x86.translate import WRITES

FRAME = RED_ZONE + 8       # rsp moved below the red zone; rcx saved at the new [rsp]
ALIGN = 16                 # the window trampoline starts on this boundary after the stub


class Stub(NamedTuple):
    """A register-addressed site's stub: `code` placed at `address`, and what the site becomes."""
    site: int
    old: bytes             # the site's instruction (and the one after it, for a short site)
    jump: bytes            # the site's new bytes: jmp rel32 to `address`, int3 to the old length
    address: int
    code: bytes
    copy: int              # address of the copied instruction, the only one that can fault
    window: int            # the window address the stub sends to `trampoline`
    trampoline: int
    old_text: str
    new_text: str
    boundary: int = 0      # a short site's next instruction's old address (an int3 now) ...
    follower: int = 0      # ... and that instruction's copy in the stub


class Copy(NamedTuple):
    """A stub's copy of its site's instruction, as the runtimes' fault tables hold it: when it
    faults, rsp and every register are the site's already."""
    site: int
    old: bytes
    instruction: int       # the copy's address


PUN = INT3                 # the jump's byte on a short site's next instruction
PUN_TRAPS = 16             # traps on it before the site gets its bytes back (the runtimes')
CS = 0x2E                  # a prefix the jump ignores: a 4-byte site's jump starts with one


class Pun(NamedTuple):
    """A short site's jump: where it ends (rel32 counts from there), and which byte of its rel32
    (0 = lowest) falls on the next instruction and must be `PUN`."""
    end: int
    byte: int


def pun(site: int, code: bytes) -> Pun | None:
    """The site's pun, or None for a site of a jump's length or more.  A 4-byte site's jump is
    ``cs jmp rel32``: the pun falls on its rel32's byte 2, not its top byte (one range of 16 MiB,
    832 MiB away, which a crowded address space may have filled), as a 3-byte site's does."""
    length = Decoder(64, code, ip=site).decode().len
    if not 0 < length < JUMP_LENGTH:
        return None
    prefixed = length == JUMP_LENGTH - 1
    return Pun(site + JUMP_LENGTH + prefixed, length - 1 - prefixed)


def punned_from(pun: Pun, start: int, align: int) -> int:
    """The first `align`-ed address from `start` that the jump reaches with its `pun.byte`
    `PUN` (addresses that far from the site: the caller's to check)."""
    base, shift = pun.end, 8 * pun.byte
    at = -(-start // align) * align
    rel = (at - base) & 0xFFFFFFFF
    if rel >> shift & 0xFF == PUN:
        return at
    want = rel & ~((1 << (shift + 8)) - 1) | PUN << shift
    if want < rel:
        want += 1 << (shift + 8)
    return -(-(at + want - rel) // align) * align


def pun_windows(pun: Pun, reach: int, step: int, most: int = 256) -> list[int]:
    """Addresses the jump reaches with its `pun.byte` `PUN`, within `reach` of it, nearest
    range first, and `step` apart within a range (at most `most`): the ranges are 256 bytes
    every 64 KiB for a 2-byte site, 64 KiB every 16 MiB for 3 and 4 bytes."""
    base, shift = pun.end, 8 * pun.byte
    starts = []
    for high in range(1 << (24 - shift)):
        rel = (high << (shift + 8) | PUN << shift) & 0xFFFFFFFF
        rel -= (rel >> 31) << 32
        if abs(rel) < reach and base + rel > 0:
            starts.append(rel)
    found = []
    for rel in sorted(starts, key=abs):
        for offset in range(0, 1 << shift, step):
            if len(found) == most:
                return found
            if abs(rel + offset) < reach:
                found.append(base + rel + offset)
    return found


def copies(placed: Stub) -> list[Copy]:
    """The stub's copies of instructions, as the fault tables hold them: the site's, and for a
    short site the one after it (its faults are that instruction's, at its old address)."""
    length = placed.boundary - placed.site if placed.boundary else len(placed.old)
    entries = [Copy(placed.site, placed.old[:length], placed.copy)]
    if placed.boundary:
        entries.append(Copy(placed.boundary, placed.old[length:], placed.follower))
    return entries


def follower(site: int, code: bytes, ins: Instruction) -> Instruction | None:
    """The instruction after a short site, which moves into its stub (see the module's text);
    None for a site of a jump's length or more.  Raises `Declined` if it cannot move."""
    if ins.len >= JUMP_LENGTH:
        return None
    after = Decoder(64, bytes(code[ins.len:]), ip=site + ins.len).decode()
    if after.is_invalid:
        raise Declined("shorter than a jmp rel32, and what follows is not all in view")
    if ins.len + after.len < JUMP_LENGTH:
        raise Declined("shorter than a jmp rel32 with the instruction after it")
    if after.flow_control != FlowControl.NEXT:
        raise Declined("shorter than a jmp rel32, and followed by a branch")
    for used in _INFO.info(after).used_memory():
        if used.segment not in (Register.DS, Register.SS, Register.ES) \
                or used.base not in (Register.RSP, Register.RIP) or used.index != Register.NONE:
            raise Declined("shorter than a jmp rel32, and followed by an access that may be "
                           "the window's")
    return after


def decode(site: int, code: bytes) -> Instruction:
    """The instruction at `site`, if it can get a stub (raises `Declined` otherwise)."""
    ins = Decoder(64, code, ip=site).decode()
    if ins.is_invalid:
        raise Declined("not a valid instruction")
    memory = [i for i in range(ins.op_count) if ins.op_kind(i) == OpKind.MEMORY]
    if len(memory) != 1:
        raise Declined("no explicit [address] operand")
    if ins.memory_base == Register.NONE == ins.memory_index:
        raise Declined("a constant address (a trampoline of its own)")
    if ins.is_ip_rel_memory_operand:
        raise Declined("a rip-relative address")
    if ins.memory_index != Register.NONE and not RegisterExt.is_gpr(ins.memory_index):
        raise Declined("a vector index (vsib)")
    if RegisterExt.full_register(ins.memory_base) == Register.RSP \
            or RegisterExt.full_register(ins.memory_index) == Register.RSP:
        raise Declined("rsp in the address (the stub moves it)")
    if ins.segment_prefix != Register.NONE:
        raise Declined("a segment override")
    written = {RegisterExt.full_register(u.register) for u in _INFO.info(ins).used_registers()
               if u.access in WRITES}
    if any(RegisterExt.full_register(r) in written
           for r in (ins.memory_base, ins.memory_index) if r != Register.NONE):
        raise Declined("writes a register of its own address")
    return ins


def window_address(site: int, code: bytes, read) -> int | None:
    """The operand's address with the registers `read(name)` gives, or None if the instruction
    gets no stub."""
    try:
        decode(site, code)
        return operand_address(site, code).value(read)
    except Declined:
        return None


def size(site: int, code: bytes, window: int) -> int:
    """How many bytes the stub takes, the trampoline's alignment included (the same anywhere:
    its jumps are rel32)."""
    return -(-len(build(site, code, window, site, site, pun=False).code) // ALIGN) * ALIGN


def build(site: int, code: bytes, window: int, address: int, trampoline: int,
          pun: bool = True) -> Stub:
    """The stub of the instruction `code` at `site`, placed at `address`, that sends window
    address `window` to `trampoline` (within ±2 GiB of the stub and the site).  A short site's
    stub must be where its jump puns (`pun`): `Declined` if not, unless `pun` is False
    (a stub built only to be measured; its `follower` is where the trampoline must return)."""
    ins = decode(site, code)
    after = follower(site, code, ins)
    old = bytes(code[:ins.len])
    a32 = RegisterExt.is_gpr32(ins.memory_base) or RegisterExt.is_gpr32(ins.memory_index)
    bits = 32 if a32 else 64       # (iced gives the displacement as an unsigned sum's)
    displacement = (ins.memory_displacement - window) & ((1 << bits) - 1)
    displacement -= (displacement >> (bits - 1)) << bits
    if not -(1 << 31) <= displacement < 1 << 31:
        raise Declined("the displacement minus the window address needs more than 32 bits")
    rcx, rsp = Register.RCX, Register.RSP
    difference = MemoryOperand(ins.memory_base, ins.memory_index, ins.memory_index_scale,
                               displacement, 1 if displacement else 0)
    out = _Code(address)
    out.add(Instruction.create_reg_mem(Code.LEA_R64_M, rsp, based(rsp, -FRAME)))
    out.add(Instruction.create_mem_reg(Code.MOV_RM64_R64, based(rsp), rcx))
    out.add(Instruction.create_reg_mem(Code.LEA_R32_M if a32 else Code.LEA_R64_M,
                                       Register.ECX if a32 else rcx, difference))
    # (its target, the window label, is known once the copy is in: its rel8 is set below)
    jrcxz = out.add(Instruction.create_branch(Code.JRCXZ_REL8_64, address))
    restore = [Instruction.create_reg_mem(Code.MOV_R64_RM64, rcx, based(rsp)),
               Instruction.create_reg_mem(Code.LEA_R64_M, rsp, based(rsp, FRAME))]
    for restoring in restore:
        out.add(restoring)
    copy = address + len(out.data)
    out.data += old
    moved = 0
    if after is not None:
        moved = out.add(after)
        out.add(Instruction.create_branch(Code.JMP_REL32_64, after.next_ip))
    else:
        out.add(Instruction.create_branch(Code.JMP_REL32_64, ins.next_ip))
    window_label = address + len(out.data)
    offset = window_label - (jrcxz + 2)
    if not 0 <= offset < 128:
        raise Declined("the stub's window branch is out of reach")   # never: the copy is 15 bytes
    out.data[jrcxz - address + 1] = offset
    for restoring in restore:
        out.add(restoring)
    out.add(Instruction.create_branch(Code.JMP_REL32_64, trampoline))
    prefix = b"" if after is None or ins.len != JUMP_LENGTH - 1 else bytes([CS])
    displacement = address - (site + len(prefix) + JUMP_LENGTH)
    if not -(1 << 31) <= displacement < 1 << 31:
        raise Declined("the stub is beyond a rel32 jump from the site")
    covered = old if after is None else old + bytes(code[ins.len:ins.len + after.len])
    jump = prefix + bytes([JMP_REL32]) + (displacement & 0xFFFFFFFF).to_bytes(4, "little")
    if len(jump) > len(covered):
        raise Declined("shorter than a cs jmp rel32 with the instruction after it")
    jump += bytes([INT3]) * (len(covered) - len(jump))
    if pun and after is not None and jump[ins.len] != PUN:
        raise Declined("the stub's address does not pun the jump onto the next instruction")
    text = f"jmp {address:#x} (the window trampoline at address {window:#x}, else the instruction"
    text += ")" if after is None else f"; then {_FORMATTER.format(after)}, moved)"
    return Stub(site, covered, jump, address, bytes(out.data), copy, window, trampoline,
                _FORMATTER.format(ins), text, after.ip if after is not None else 0, moved)

