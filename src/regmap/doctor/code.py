"""The self-test's machine code, assembled with iced-x86: one instruction between a load and a
store of every register, called from Python (ctypes) or run as a tiny static program.

A case's code, for slot i of the `Block`:

    mov rsp, IN;  mov eax, MASK;  xor edx, edx;  xrstor64 [IN_XSAVE]
    popfq;  pop r15 .. pop rax;  mov rsp, [rsp]            ; every register, flags, x87..AVX-512
    <the instruction, its own bytes>
    mov [OUT_RSP], rsp;  mov rsp, OUT_END;  pushfq;  push rax .. push r15
    mov eax, MASK;  xor edx, edx;  xsave64 [OUT_XSAVE]

Every address is an absolute 32-bit one (the block is below 2 GiB), so nothing but the block
and the code is needed.  Called from Python, a case is wrapped in a function that keeps the
caller's callee-saved registers, flags and extended state; the traced program runs every case
in turn, writes the block to its standard output and exits.
"""
from __future__ import annotations

import ctypes
import struct

from iced_x86 import Code, Instruction, MemoryOperand, Register

from regmap.doctor import image
from regmap.x86.machine_code import PAGE, Labels, assemble, code_page, label_addresses

_REG = {name: getattr(Register, name.upper()) for name in image.GPRS}
EAX, EDX, EDI, ESI = Register.EAX, Register.EDX, Register.EDI, Register.ESI


def absolute(address: int) -> MemoryOperand:
    if not 0 <= address < 0x8000_0000:
        raise ValueError(f"{address:#x} is not an absolute 32-bit address")
    return MemoryOperand(Register.NONE, Register.NONE, 1, address, 8)


def _mask_to_edx_eax(mask: int) -> list[Instruction]:
    return [Instruction.create_reg_u32(Code.MOV_R32_IMM32, EAX, mask & 0xFFFF_FFFF),
            Instruction.create_reg_u32(Code.MOV_R32_IMM32, EDX, mask >> 32)]


def case_code(block: image.Block, index: int, code: bytes) -> list[Instruction]:
    """Load slot ``index``'s state, run ``code`` (one instruction, its bytes as they are), store."""
    slot = block.slot(index)
    ins = [Instruction.create_reg_i32(Code.MOV_RM64_IMM32, Register.RSP, slot + image.IN_GPR),
           *_mask_to_edx_eax(block.mask),
           Instruction.create_mem(Code.XRSTOR64_MEM, absolute(block.in_xsave(index))),
           Instruction.create(Code.POPFQ),
           *(Instruction.create_reg(Code.POP_R64, _REG[name]) for name in image.POP_ORDER),
           Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RSP,
                                      MemoryOperand(Register.RSP)),
           Instruction.create_declare_byte(code),
           Instruction.create_mem_reg(Code.MOV_RM64_R64, absolute(slot + image.OUT_RSP), Register.RSP),
           Instruction.create_reg_i32(Code.MOV_RM64_IMM32, Register.RSP, slot + image.OUT_GPR + 128),
           Instruction.create(Code.PUSHFQ),
           *(Instruction.create_reg(Code.PUSH_R64, _REG[name]) for name in reversed(image.POP_ORDER)),
           *_mask_to_edx_eax(block.mask),
           Instruction.create_mem(Code.XSAVE64_MEM, absolute(block.out_xsave(index)))]
    return ins


_CALLEE_SAVED = (Register.RBX, Register.RBP, Register.R12, Register.R13, Register.R14, Register.R15)


def wrapped(block: image.Block, index: int, code: bytes) -> list[Instruction]:
    """`case_code` as a C function ``void f(void)``: the caller's registers, flags, stack and
    x87/SSE/AVX state are as they were when it returns."""
    host_rsp = absolute(block.base + image.HOST_RSP)
    host_xsave = absolute(block.base + image.HOST_XSAVE)
    return [Instruction.create(Code.PUSHFQ),
            *(Instruction.create_reg(Code.PUSH_R64, reg) for reg in _CALLEE_SAVED),
            Instruction.create_mem_reg(Code.MOV_RM64_R64, host_rsp, Register.RSP),
            *_mask_to_edx_eax(block.mask),
            Instruction.create_mem(Code.XSAVE64_MEM, host_xsave),
            *case_code(block, index, code),
            *_mask_to_edx_eax(block.mask),
            Instruction.create_mem(Code.XRSTOR64_MEM, host_xsave),
            Instruction.create_reg_mem(Code.MOV_R64_RM64, Register.RSP, host_rsp),
            *(Instruction.create_reg(Code.POP_R64, reg) for reg in reversed(_CALLEE_SAVED)),
            Instruction.create(Code.POPFQ),
            Instruction.create(Code.RETNQ)]


def functions(block: image.Block, codes: dict[int, bytes]) -> dict[int, ctypes._CFuncPtr]:
    """A ctypes function for each slot index -> instruction in ``codes``, on one code mapping."""
    labels = Labels()
    ins: list[Instruction] = []
    marks = {}
    for index, code in codes.items():
        marks[index] = labels.new()
        ins += [labels.at(marks[index]), *wrapped(block, index, code)]
    where: dict[int, int] = {}

    def generate(base: int) -> bytes:
        data = assemble(ins, base)
        where.update(label_addresses(ins, data, base))
        return data

    # a first assembly for the size (the code does not depend on where it is: absolute addresses)
    size = -(-len(assemble(ins, 0)) // PAGE) * PAGE
    code_page(generate, max(size, PAGE))
    prototype = ctypes.CFUNCTYPE(None)
    return {index: prototype(where[mark]) for index, mark in marks.items()}


# -- the traced program ---------------------------------------------------------------------------
TEXT = 0x400000          # where the program's code is loaded
_SYS_WRITE, _SYS_EXIT_GROUP = 1, 231
_ELF_HEADER, _PROGRAM_HEADER = 64, 56


def program(block: image.Block, codes: dict[int, bytes], data: bytes) -> bytes:
    """A static x86-64 ELF executable that runs the cases in ``codes`` (slot index ->
    instruction) in order on a data segment holding ``data`` (the block's bytes) at the block's
    address, writes the whole block to its standard output and exits 0 (3 if the write fails)."""
    if len(data) != block.size:
        raise ValueError("the data segment must be the block")
    labels = Labels()
    again, failed = labels.new(), labels.new()
    R12, R13 = Register.R12, Register.R13
    ins: list[Instruction] = []
    for index, code in codes.items():
        ins += case_code(block, index, code)
    ins += [Instruction.create_reg_i32(Code.MOV_RM64_IMM32, R12, block.base),
            Instruction.create_reg_i32(Code.MOV_RM64_IMM32, R13, block.size),
            labels.at(again),
            Instruction.create_reg_u32(Code.MOV_R32_IMM32, EAX, _SYS_WRITE),
            Instruction.create_reg_u32(Code.MOV_R32_IMM32, EDI, 1),
            Instruction.create_reg_reg(Code.MOV_R64_RM64, Register.RSI, R12),
            Instruction.create_reg_reg(Code.MOV_R64_RM64, Register.RDX, R13),
            Instruction.create(Code.SYSCALL),
            Instruction.create_reg_reg(Code.TEST_RM64_R64, Register.RAX, Register.RAX),
            Instruction.create_branch(Code.JLE_REL32_64, failed),
            Instruction.create_reg_reg(Code.ADD_RM64_R64, R12, Register.RAX),
            Instruction.create_reg_reg(Code.SUB_RM64_R64, R13, Register.RAX),
            Instruction.create_branch(Code.JNE_REL32_64, again),
            Instruction.create_reg_u32(Code.MOV_R32_IMM32, EAX, _SYS_EXIT_GROUP),
            Instruction.create_reg_u32(Code.MOV_R32_IMM32, EDI, 0),
            Instruction.create(Code.SYSCALL),
            labels.at(failed),
            Instruction.create_reg_u32(Code.MOV_R32_IMM32, EAX, _SYS_EXIT_GROUP),
            Instruction.create_reg_u32(Code.MOV_R32_IMM32, EDI, 3),
            Instruction.create(Code.SYSCALL)]
    headers = _ELF_HEADER + 2 * _PROGRAM_HEADER
    entry = TEXT + headers
    text = assemble(ins, entry)
    text_size = headers + len(text)
    data_offset = -(-text_size // PAGE) * PAGE
    if TEXT + data_offset > block.base:
        raise ValueError(f"the program's code ({text_size} bytes at {TEXT:#x}) would reach the "
                         f"block at {block.base:#x}")
    elf = struct.pack("<4sBBBBB7xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0,
                      2, 62, 1, entry, _ELF_HEADER, 0, 0, _ELF_HEADER, _PROGRAM_HEADER, 2, 0, 0, 0)
    pt_load, r, w, x = 1, 4, 2, 1
    elf += struct.pack("<IIQQQQQQ", pt_load, r | x, 0, TEXT, TEXT, text_size, text_size, PAGE)
    elf += struct.pack("<IIQQQQQQ", pt_load, r | w, data_offset, block.base, block.base,
                       len(data), len(data), PAGE)
    return elf + text + bytes(data_offset - text_size) + data
