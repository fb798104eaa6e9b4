"""Gathers, scatters and masked moves: masked-off elements never fault, and elements in the window
and in real memory mix, element by element, against the host CPU.

The CPU's side runs the same instruction natively over a real mapping of three pages: the window
image (page 0 of the emulator), real memory (page 1) and an unmapped page (page 2); the base
register is moved by the mapping's address, so every element lands where the emulator has it.
"""
from __future__ import annotations

import ctypes
import mmap

import pytest
from iced_x86 import Code, Encoder, Instruction, MemoryOperand, Register

import native_cpu as N
from regmap.errors import MemoryFault, WindowHole
from regmap.layout import load_layout
from regmap.pure import PureMachine, emulator_for
from regmap.x86.native import engine
from regmap.x86.native.state import NativeState

pytestmark = pytest.mark.skipif(N.host.platform_problem() is not None, reason="needs the native engine")
PAGE = 4096
LAYOUT = load_layout()
HOLE = 0x300           # the default layout's registers end at 0x300: a hole to the window's end
GPRS = {"rcx": 0x1111_2222_3333_4444, "rdx": 0x5555_6666_7777_8888, "rbx": 0x99AA_BBCC_DDEE_FF00,
        "rsi": 0x0123_4567_89AB_CDEF}


def encode(instruction: Instruction, at: int = 0x400000) -> bytes:
    encoder = Encoder(64)
    encoder.encode(instruction, at)
    return encoder.take_buffer()


def lanes(values, bits: int) -> int:
    return sum((v & ((1 << bits) - 1)) << bits * i for i, v in enumerate(values))


class Pages:
    """Three pages for the CPU: the window image, real memory, nothing."""

    def __init__(self, window: bytes, memory: bytes):
        self.map = mmap.mmap(-1, 3 * PAGE)
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        self.map[:PAGE], self.map[PAGE:2 * PAGE] = window, memory
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        assert libc.mprotect(self.address + 2 * PAGE, PAGE, 0) == 0


def on_cpu(instruction: Instruction, regs: dict, pages: Pages, base: str = "rax"):
    """Run natively with the base register moved onto ``pages``: the state after, or the fault."""
    r = N.region()
    state = NativeState()
    for name in GPRS:
        state.gpr[name] = GPRS[name]
    state.gpr[base] = (regs.get(base, 0) + pages.address) & (2**64 - 1)
    for name, value in regs.items():
        if name.startswith("zmm"):
            state.zmm[int(name[3:])] = value
        elif name.startswith("k"):
            state.k[int(name[1:])] = value
    try:
        return engine.execute(encode(instruction, r.insn), state, watchdog=N.WATCHDOG_SECONDS), None
    except engine.NativeFault as fault:
        return None, fault


def emulator_machine(regs: dict, memory: bytes) -> PureMachine:
    values = {"rip": 0x400000, "rflags": 2, "mxcsr": 0x1F80, "fcw": 0x37F, **GPRS, **regs}
    return PureMachine(values, {PAGE: memory})


def step(machine: PureMachine, instruction: Instruction, anywhere: bool = False) -> None:
    machine.regions[0x400000] = bytearray(encode(instruction))
    emulator_for(LAYOUT).step(machine, False, anywhere)


def window_of(regs: dict) -> bytes:
    return LAYOUT.image({**GPRS, **regs})


def gather_dd(dest=1, index=2, mask=3) -> Instruction:
    """vpgatherdd xmm1, [rax + xmm2*4], xmm3 (VEX: the mask is xmm3's lanes' top bits)."""
    return Instruction.create_reg_mem_reg(Code.VEX_VPGATHERDD_XMM_VM32X_XMM, Register.XMM0 + dest,
                                          MemoryOperand(Register.RAX, Register.XMM0 + index, 4), Register.XMM0 + mask)


def gather_evex() -> Instruction:
    """vpgatherdd xmm1{k1}, [rax + xmm2*4]."""
    ins = Instruction.create_reg_mem(Code.EVEX_VPGATHERDD_XMM_K1_VM32X, Register.XMM1,
                                     MemoryOperand(Register.RAX, Register.XMM2, 4))
    ins.op_mask = Register.K1
    return ins


ON = 0x8000_0000


@pytest.mark.parametrize("form", ["vex", "evex"])
@pytest.mark.parametrize("where", [(0x10, PAGE + 0x40, 0x20, PAGE + 0x44), (PAGE + 8, 0x18, PAGE + 0xFF0, 0x28)])
def test_a_gather_mixing_window_and_memory_is_the_cpus(form, where):
    memory = bytes(range(256)) * 16
    regs = {"zmm2": lanes([a // 4 for a in where], 32), "zmm1": lanes([0xAAAA0000 + i for i in range(4)], 32)}
    if form == "vex":
        instruction, regs["zmm3"] = gather_dd(), lanes([ON, ON, 0, ON], 32)
    else:
        instruction, regs["k1"] = gather_evex(), 0b1011
    after, fault = on_cpu(instruction, regs, Pages(window_of(regs), memory))
    assert fault is None
    machine = emulator_machine(regs, memory)
    step(machine, instruction)
    assert machine.registers["zmm1"] == after.zmm[1]
    mask = ("k1", after.k[1]) if form == "evex" else ("zmm3", after.zmm[3])
    assert machine.registers[mask[0]] == mask[1]
    assert machine.registers["rip"] == 0x400000 + len(encode(instruction))


@pytest.mark.parametrize("form", ["vex", "evex"])
def test_a_faulting_element_leaves_the_elements_before_it_done(form):
    # elements: window, memory, unmapped (page 2), window; the fault is the third's
    where = (0x10, PAGE + 0x40, 2 * PAGE + 0x80, 0x20)
    memory = bytes(range(256)) * 16
    regs = {"zmm2": lanes([a // 4 for a in where], 32), "zmm1": lanes([0xAAAA0000 + i for i in range(4)], 32)}
    if form == "vex":
        instruction, regs["zmm3"] = gather_dd(), lanes([ON] * 4, 32)
    else:
        instruction, regs["k1"] = gather_evex(), 0b1111
    pages = Pages(window_of(regs), memory)
    _, fault = on_cpu(instruction, regs, pages)
    assert fault is not None and fault.address - pages.address == where[2]       # the CPU's fault
    machine = emulator_machine(regs, memory)
    step(machine, instruction)          # elements 0 and 1 done, rip kept on the instruction
    assert machine.registers["rip"] == 0x400000
    with pytest.raises(MemoryFault) as raised:
        step(machine, instruction)
    assert raised.value.address == fault.address - pages.address
    if form == "evex":
        assert machine.registers["k1"] == 0b1100
    else:
        assert machine.registers["zmm3"] == lanes([0, 0, ON, ON], 32)
    # that state is one the CPU resumes from: with the page there, it ends where the whole run does
    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    assert libc.mprotect(pages.address + 2 * PAGE, PAGE, 3) == 0
    pages.map[2 * PAGE:3 * PAGE] = bytes(range(255, -1, -1)) * 16
    whole, _ = on_cpu(instruction, regs, pages)
    resumed_regs = {name: machine.registers[name] for name in regs}
    resumed, _ = on_cpu(instruction, resumed_regs, pages)
    assert resumed.zmm[1] == whole.zmm[1]
    assert (resumed.k[1], resumed.zmm[3]) == (whole.k[1], whole.zmm[3])


def test_masked_off_elements_in_a_hole_do_not_fault():
    # the form: vgatherqps xmm5, [ymm12*4-0x338f18], xmm2 (67h: 32-bit addresses)
    instruction = Instruction.create_reg_mem_reg(Code.VEX_VGATHERQPS_XMM_VM64Y_XMM, Register.XMM5,
                                                 MemoryOperand(index=Register.YMM12, scale=4, displ=-0x338F18,
                                                               displ_size=4), Register.XMM2)
    code = encode(instruction)
    where = (0x10, HOLE + 0x100, 0x20, 0x28)
    regs = {"zmm12": lanes([(a + 0x338F18) // 4 for a in where], 64), "zmm5": lanes([7, 7, 7, 7], 32)}
    state = NativeState()
    state.gpr.update(GPRS)
    state.zmm[12], state.zmm[5] = regs["zmm12"], regs["zmm5"]
    state.shadow = window_of(regs)
    for mask in ([ON, 0, ON, ON], [0, 0, 0, 0], [ON, ON, ON, ON]):
        regs["zmm2"] = state.zmm[2] = lanes(mask, 32)
        machine = emulator_machine(regs, b"")
        if mask[1]:      # masked on: element 0 is done, then the hole faults, as a page would
            step(machine, instruction)
            assert machine.registers["rip"] == 0x400000
            with pytest.raises(WindowHole):
                step(machine, instruction)
            continue
        step(machine, instruction, anywhere=not any(mask))     # no element: no window access
        after = N.run_native(code, state)
        assert (machine.registers["zmm5"], machine.registers["zmm2"]) == (after.zmm[5], after.zmm[2])


def test_a_scatter_mixing_window_and_memory_is_the_cpus():
    # vpscatterdd [rax + xmm2*4]{k1}, xmm1; elements 1 and 3 overlap: the later one wins
    instruction = Instruction.create_mem_reg(Code.EVEX_VPSCATTERDD_VM32X_K1_XMM,
                                             MemoryOperand(Register.RAX, Register.XMM2, 4), Register.XMM1)
    instruction.op_mask = Register.K1
    where = (0x10, PAGE + 0x40, 0x1C, PAGE + 0x40)
    memory = bytes(PAGE)
    regs = {"zmm2": lanes([a // 4 for a in where], 32), "zmm1": lanes([0x11111111, 0x22222222, 0x33333333,
                                                                        0x44444444], 32), "k1": 0b1111}
    pages = Pages(window_of(regs), memory)
    after, fault = on_cpu(instruction, regs, pages)
    assert fault is None
    machine = emulator_machine(regs, memory)
    step(machine, instruction)
    assert bytes(machine.regions[PAGE]) == pages.map[PAGE:2 * PAGE]
    image = LAYOUT.image(machine.registers)
    assert [image[a:a + 4] for a in where if a < PAGE] == [pages.map[a:a + 4] for a in where if a < PAGE]
    assert machine.registers["k1"] == after.k[1]


@pytest.mark.parametrize("masked_on", [False, True])
def test_masked_moves_fault_only_on_masked_on_elements(masked_on):
    # vmaskmovps xmm1, xmm2, [0x2f8]: its second dword onwards is in the hole at 0x300
    load = bytes.fromhex("c4e2692c0c25f8020000")
    store = bytes.fromhex("c4e2692e0c25f8020000")       # vmaskmovps [0x2f8], xmm2, xmm1
    mask = lanes([ON, ON, ON if masked_on else 0, 0], 32)
    for code in (load, store):
        machine = emulator_machine({"zmm2": mask, "zmm1": lanes([1, 0, 3, 4], 32)}, b"")
        machine.regions[0x400000] = bytearray(code)
        if masked_on:
            with pytest.raises(WindowHole):
                emulator_for(LAYOUT).step(machine)
        else:
            emulator_for(LAYOUT).step(machine)


@pytest.mark.parametrize("masked_on", [False, True])
def test_avx512_masked_moves_fault_only_on_masked_on_elements(masked_on):
    # vmovdqu32 xmm1{k1}, [0x2f8] and vmovdqu32 [0x2f8]{k1}, xmm1: dwords 2 and 3 in the hole
    for code in (Code.EVEX_VMOVDQU32_XMM_K1Z_XMMM128, Code.EVEX_VMOVDQU32_XMMM128_K1Z_XMM):
        operand = MemoryOperand(displ=0x2F8, displ_size=4)
        ins = (Instruction.create_reg_mem(code, Register.XMM1, operand) if code == Code.EVEX_VMOVDQU32_XMM_K1Z_XMMM128
               else Instruction.create_mem_reg(code, operand, Register.XMM1))
        ins.op_mask = Register.K1
        machine = emulator_machine({"k1": 0b0111 if masked_on else 0b0011, "zmm1": 0}, b"")
        if masked_on:
            with pytest.raises(WindowHole):
                step(machine, ins)
        else:
            step(machine, ins)
