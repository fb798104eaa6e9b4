"""FOP, FIP and FDP, the x87 last-instruction pointers, behave as without regmap.

After a window x87 instruction the thread's FOP, FIP and FDP are what the host CPU leaves when
the same instruction runs at the same address with its operand in real memory: FIP the
instruction's address, FDP (where this CPU updates it) the operand's address, which for a window
operand is its window address, FOP the instruction's opcode.  The CPU is the judge of *when*
each is updated (Intel's FDP_EXCPTN_ONLY, AMD's rules), so every case is run natively first,
here, and its answer translated: the real operand's address becomes the window's.  And an x87
state save into the window (fxsave, fnstenv, fnsave) stores the thread's real values.

Each case is one generated function: ``fninit``, the case's control word, ``fld1``, a load of
``prior`` from real memory (which sets FDP and FOP where it raises an unmasked exception),
``fnclex``, then the instruction under test over ``[rsi]`` (the operand: a real 8-byte buffer,
or window address 0x100, which the default layout gives to ymm0, loaded with the same bytes
from ``[rcx]``), with FXSAVE64 images of the state before and after it.
"""
from __future__ import annotations

import ctypes
import mmap
import platform
import struct
import sys

import pytest
from iced_x86 import BlockEncoder, Code, Decoder, Instruction, MemoryOperand, Register

import regmap

pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                                reason="runs x87 code on the host CPU (Linux on x86-64)")

WINDOW = 0x100                  # the operand's window address: ymm0 in the default layout
ONE, SNAN, ZERO, TWO = 0x3FF0000000000000, 0x7FF0000000000001, 0, 0x4000000000000000
MASKED, INVALID, DIVIDE = 0x37F, 0x37E, 0x37B      # control words: all masked, IM or ZM unmasked

# the forms under test, each over a memory operand [rsi]
FORMS = {
    "fld m64": Code.FLD_M64FP, "fadd m64": Code.FADD_M64FP, "fdiv m64": Code.FDIV_M64FP,
    "fcomp m64": Code.FCOMP_M64FP, "fmul m32": Code.FMUL_M32FP, "fild m32": Code.FILD_M32INT,
    "fidiv m16": Code.FIDIV_M16INT, "fist m32": Code.FIST_M32INT, "fstp m64": Code.FSTP_M64FP,
    "fisttp m64": Code.FISTTP_M64INT, "fldcw": Code.FLDCW_M2BYTE, "fnstsw": Code.FNSTSW_M2BYTE,
}
# (control word, the operand's bytes, the prior load's value)
STATES = {"masked": (MASKED, ONE, TWO), "masked-prior-snan": (MASKED, ZERO, SNAN),
          "invalid-unmasked": (INVALID, SNAN, TWO), "invalid-prior-too": (INVALID, SNAN, SNAN),
          "divide-unmasked": (DIVIDE, ZERO, TWO)}


def _mem(base=Register.RSI, displ=0) -> MemoryOperand:
    return MemoryOperand(base, displ=displ)


class Function:
    """One generated function ``f(images, operand, control, value, prior)``: the prologue above,
    FXSAVE64 to ``images`` before and to ``images + 512`` after ``tested``, which is then at
    `address`."""

    def __init__(self, tested: Instruction, after: list[Instruction] = ()):
        body = [Instruction.create(Code.FNINIT), Instruction.create_mem(Code.FLDCW_M2BYTE, _mem(Register.RDX)),
                Instruction.create(Code.FLD1), Instruction.create_mem(Code.FLD_M64FP, _mem(Register.R8)),
                Instruction.create(Code.FNCLEX),
                Instruction.create_reg_mem(Code.MOVQ_XMM_RM64, Register.XMM0, _mem(Register.RCX)),
                Instruction.create_mem(Code.FXSAVE64_M512BYTE, _mem(Register.RDI)),
                tested, Instruction.create_mem(Code.FXSAVE64_M512BYTE, _mem(Register.RDI, 512)), *after,
                Instruction.create(Code.FNINIT), Instruction.create(Code.RETNQ)]
        self.page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.page))
        encoder = BlockEncoder(64)
        encoder.add_many(body)
        code = encoder.encode(base)
        self.page.write(code)
        decoded = list(Decoder(64, code, ip=base))
        self.address = decoded[7].ip
        self.code = code[self.address - base:decoded[8].ip - base]
        self.call = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 5)(base)
        self.cells = (ctypes.c_uint64 * 3)()     # the operand, the prior value, the control word:
        self.real = ctypes.addressof(self.cells)  # at the same addresses in every run

    def enter(self, images: int, operand: int, control: int, value: int, prior: int) -> None:
        self.cells[:] = [value, prior, control]
        self.call(images, operand, self.real + 16, self.real, self.real + 8)

    def run(self, operand: int, control: int, value: int, prior: int) -> tuple[bytes, bytes, int]:
        """The FXSAVE64 images before and after the instruction, and the real operand's address."""
        images = (ctypes.c_char * (2048 + 16))()    # (a saving function stores after 1024)
        at = -ctypes.addressof(images) % 16
        self.enter(ctypes.addressof(images) + at, self.real if operand is None else operand, control, value, prior)
        data = bytes(images)[at:at + 1024]
        return data[:512], data[512:], self.real


def pointers(image: bytes) -> dict[str, int]:
    fcw, fsw, ftw, fop, fip, fdp = struct.unpack_from("<HHBxHQQ", image, 0)
    return {"fcw": fcw, "fsw": fsw, "ftw": ftw, "fop": fop, "fip": fip, "fdp": fdp}


def stack(image: bytes) -> list[int]:
    return [int.from_bytes(image[32 + 16 * i:42 + 16 * i], "little") for i in range(8)]


def _form(name: str) -> Function:
    return Function(Instruction.create_mem(FORMS[name], _mem()))


def _expected(native: bytes, real: int) -> dict[str, int]:
    """The native run's answer as the window run must show it: FDP at the real operand is the
    window operand's address."""
    want = pointers(native)
    if want["fdp"] == real:
        want["fdp"] = WINDOW
    return want


CASES = [(form, state) for form in FORMS for state in STATES]


@pytest.fixture(scope="module")
def functions():
    return {name: _form(name) for name in FORMS}


@pytest.fixture
def mapping():
    regmap.map_registers()
    try:
        yield
    finally:
        regmap.unmap_registers()


@pytest.mark.parametrize("form, state", CASES)
def test_in_process_pointers_are_the_cpus_at_the_instructions_own_address(functions, mapping, form, state):
    function = functions[form]
    _, native, real = function.run(None, *STATES[state])
    assert pointers(native)["fip"] == function.address or form in ("fldcw", "fnstsw")
    _, windowed, _ = function.run(WINDOW, *STATES[state])
    assert pointers(windowed) == _expected(native, real)
    assert stack(windowed) == stack(native)


@pytest.mark.parametrize("form, state", CASES)
def test_pure_pointers_are_the_cpus_at_the_instructions_own_address(functions, form, state):
    function = functions[form]
    before, native, real = function.run(None, *STATES[state])
    control, value, _ = STATES[state]
    regs = {**pointers(before), **{f"st{i}": v for i, v in enumerate(stack(before))},
            "rsi": WINDOW, "ymm0": value}
    after = regmap.emulate(function.code, regs, rip=function.address, max_steps=1).regs
    assert {k: after[k] for k in ("fcw", "fsw", "ftw", "fop", "fip", "fdp")} == _expected(native, real)


# -- state saves into the window store the thread's real pointers -----------------------------------
SAVES = {"fxsave64": (Code.FXSAVE64_M512BYTE, 24), "fnstenv": (Code.FNSTENV_M28BYTE, 28),
         "fnsave": (Code.FNSAVE_M108BYTE, 28)}


def _saving(name: str) -> Function:
    """``fld qword [rcx]`` (real memory), then the save to ``[rsi]`` and, after the images,
    ymm0..ymm3 (where a window save lands) to ``images + 1024``."""
    code, _ = SAVES[name]
    after = [Instruction.create_mem_reg(Code.VEX_VMOVDQU_YMMM256_YMM, _mem(Register.RDI, 1024 + 32 * i),
                                        Register.YMM0 + i) for i in range(4)]
    return Function(Instruction.create_mem(code, _mem()), after)


@pytest.mark.parametrize("name", SAVES)
@pytest.mark.parametrize("state", ["masked-prior-snan", "invalid-prior-too"])
def test_a_window_save_stores_the_threads_real_pointers(mapping, name, state):
    function = _saving(name)
    _, size = SAVES[name]
    control, value, prior = STATES[state]
    natively = (ctypes.c_char * (512 + 16))()
    aligned = -ctypes.addressof(natively) % 16          # FXSAVE64 needs 16-byte alignment
    function.run(ctypes.addressof(natively) + aligned, control, value, prior)
    images = (ctypes.c_char * (2048 + 16))()
    # the same function with the save at window 0x100, ymm0..3 then copied out after the images
    at = -ctypes.addressof(images) % 16
    function.enter(ctypes.addressof(images) + at, WINDOW, control, value, prior)
    saved = bytes(images)[at + 1024:at + 1024 + size]
    native = bytes(natively)[aligned:aligned + size]
    assert saved == native
    fip = struct.unpack_from("<Q" if name == "fxsave64" else "<I", native, 8 if name == "fxsave64" else 12)[0]
    assert fip != 0                    # the prior fld1 or fld's address: a real value, not 0


# -- traced: the same cases in a program under `regmap exec` ------------------------------------------
def _program(cases) -> str:
    """A static program running every case in turn, its operand ``[r12]``: real memory, or with
    an argument window address 0x100 (r12 is set before any case, so every instruction is at the
    same address in both runs); writes r12, then an FXSAVE64 image after each case, to stdout."""
    lines = [".intel_syntax noprefix", ".data", ".balign 16", f"images: .zero {512 * len(cases)}",
             "operand: .quad 0", "where: .quad 0", ".text", ".globl _start", "_start:",
             "mov rbx, [rsp]", "lea r12, [rip + operand]", f"mov r13, {WINDOW}", "cmp rbx, 1",
             "cmovne r12, r13", "mov [rip + where], r12", "lea rdi, [rip + images]"]
    for k, (form, state) in enumerate(cases):
        control, value, prior = STATES[state]
        text = str(Instruction.create_mem(FORMS[form], _mem(Register.R12)))      # Intel syntax
        lines += [".section .rodata", f"cw{k}: .quad {control}", f"value{k}: .quad {value:#x}",
                  f"prior{k}: .quad {prior:#x}", ".text", "fninit", f"fldcw [rip + cw{k}]", "fld1",
                  f"fld qword ptr [rip + prior{k}]", "fnclex", f"movq xmm0, [rip + value{k}]",
                  "movq [rip + operand], xmm0", text, "fxsave64 [rdi]", "add rdi, 512"]
    lines += ["fninit", "mov eax, 1", "mov edi, 1", "lea rsi, [rip + where]", "mov edx, 8", "syscall",
              "mov eax, 1", "mov edi, 1", "lea rsi, [rip + images]", f"mov edx, {512 * len(cases)}", "syscall",
              "mov eax, 60", "xor edi, edi", "syscall"]
    return "\n".join(lines) + "\n"


def test_traced_pointers_are_the_cpus_at_the_instructions_own_address(tmp_path):
    import shutil
    import subprocess
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc/gcc) on PATH to build the program")
    source = tmp_path / "x87.s"
    source.write_text(_program(CASES))
    executable = tmp_path / "x87"
    subprocess.run([cc, "-nostdlib", "-static", "-o", executable, source], check=True)
    native = subprocess.run([executable], capture_output=True, timeout=60, check=True).stdout
    traced = subprocess.run([sys.executable, "-m", "regmap.cli", "exec", executable, "window"],
                            capture_output=True, timeout=300)
    if b"not allowed to trace" in traced.stderr:
        pytest.skip("ptrace is not permitted here: " + traced.stderr.decode().strip())
    assert traced.returncode == 0, traced.stderr.decode()
    real, window = (int.from_bytes(out[:8], "little") for out in (native, traced.stdout))
    assert window == WINDOW and real != WINDOW
    for k, case in enumerate(CASES):
        image = slice(8 + 512 * k, 8 + 512 * k + 512)
        assert pointers(traced.stdout[image]) == _expected(native[image], real), case
        assert stack(traced.stdout[image]) == stack(native[image]), case
