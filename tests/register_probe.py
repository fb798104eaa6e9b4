"""Run a few instructions from given registers and rflags under each backend; the registers after.

One assembly probe serves the in-process runtime (a shared library, called through ctypes with
the registers mapped) and the tracer (a program for `regmap run` that writes the result to
stdout); `regmap.emulate` runs the same bytes on the pure backend.  The probe loads every
general register (rsp last, so the code may run with rsp in page 0) and rflags (POPFQ: NT and
ID included), runs the code, stores every general register with plain moves, puts its own
stack back and only then takes rflags with PUSHFQ: nothing between the code and the store
touches the flags or the stack.
"""
from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

from regmap.cli.emulate import assemble

import regmap

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import build_library, python_env  # noqa: E402

GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
WORDS = len(GPRS) + 1           # and rflags
ROOT = Path(__file__).resolve().parent.parent
EMULATED_AT = 0x400000


def source(code: str, inputs: dict[str, int] | None = None, program: bool = False) -> str:
    """The probe around `code` (Intel syntax, `;` between instructions).  `program`: a whole
    program whose `probe_in` holds `inputs` and which writes `probe_out` to stdout."""
    values = [inputs.get(name, 0) if inputs else 0 for name in (*GPRS, "rflags")]
    lines = [".intel_syntax noprefix", ".data", ".balign 8", ".globl probe_in, probe_out",
             # global names for ctypes, local ones for RIP-relative access from a shared object
             "probe_in:", "in_:", *(f".quad {value:#x}" for value in values),
             "probe_out:", "out_:", f".zero {8 * WORDS + 8}", "saved_: .quad 0", "rsp_: .quad 0",
             ".text", ".globl probe, probe_code", "probe:",
             "push rbx", "push rbp", "push r12", "push r13", "push r14", "push r15",
             "mov [rip + saved_], rsp",
             # rsp 0 in: the probe's own stack (the code then runs with a real stack)
             f"mov rax, [rip + in_ + {8 * GPRS.index('rsp')}]", "test rax, rax", "jnz 1f",
             "mov rax, rsp", "1:", "mov [rip + rsp_], rax",
             f"push qword ptr [rip + in_ + {8 * len(GPRS)}]", "popfq"]
    lines += [f"mov {name}, [rip + in_ + {8 * i}]" for i, name in enumerate(GPRS) if name != "rsp"]
    lines += ["mov rsp, [rip + rsp_]", "probe_code:", "code_:", *code.split(";")]
    lines += [f"mov [rip + out_ + {8 * i}], {name}" for i, name in enumerate(GPRS)]
    # cld: a popfq under test may leave DF set, and C code (memcpy) must not run with it set
    lines += ["mov rsp, [rip + saved_]", "pushfq", f"pop qword ptr [rip + out_ + {8 * len(GPRS)}]", "cld",
              "lea rax, [rip + code_]", f"mov [rip + out_ + {8 * WORDS}], rax",
              "pop r15", "pop r14", "pop r13", "pop r12", "pop rbp", "pop rbx", "ret"]
    if program:
        lines += [".globl _start", "_start:", "call probe",
                  "mov eax, 1", "mov edi, 1", "lea rsi, [rip + out_]", f"mov edx, {8 * WORDS + 8}",
                  "syscall", "mov eax, 60", "xor edi, edi", "syscall"]
    return "\n".join(lines) + "\n"


def _result(words) -> dict[str, int]:
    """The registers after; "code" is where the code was (a call pushes an address in it)."""
    return {name: words[i] for i, name in enumerate((*GPRS, "rflags", "code"))}


def emulated(code: str, inputs: dict[str, int]) -> dict[str, int]:
    """The pure backend: `regmap.emulate` of the same code."""
    result = regmap.emulate(assemble(code), dict(inputs), rip=EMULATED_AT, trace=False)
    return {**{name: result.regs[name] for name in (*GPRS, "rflags")}, "code": EMULATED_AT}


class InProcess:
    """The probe as a library (built once per code), run with the registers mapped."""

    def __init__(self, directory: Path, code: str, name: str = "probe"):
        path = directory / f"{name}.s"
        path.write_text(source(code))
        self.library = ctypes.CDLL(str(build_library(directory, path, f"lib{name}.so")))
        self.library.probe.argtypes, self.library.probe.restype = [], None
        self.inputs = (ctypes.c_uint64 * WORDS).in_dll(self.library, "probe_in")
        self.outputs = (ctypes.c_uint64 * (WORDS + 1)).in_dll(self.library, "probe_out")

    def run(self, inputs: dict[str, int], mapped: bool = True) -> dict[str, int]:
        for i, name in enumerate((*GPRS, "rflags")):
            self.inputs[i] = inputs.get(name, 0)
        if mapped:
            with regmap.mapped():
                self.library.probe()
        else:
            self.library.probe()
        return _result(list(self.outputs))


def traced(directory: Path, code: str, inputs: dict[str, int], name: str = "probe") -> dict[str, int]:
    """The probe as a program run by `regmap run`; pytest.skip if ptrace is not permitted."""
    import pytest
    path = directory / f"{name}.s"
    path.write_text(source(code, inputs, program=True))
    done = subprocess.run([sys.executable, "-m", "regmap.cli", "run", str(path)], capture_output=True,
                          timeout=120, cwd=ROOT, env=python_env())
    if b"not allowed to trace" in done.stderr:
        pytest.skip("ptrace is not permitted here: " + done.stderr.decode().strip())
    assert done.returncode == 0 and len(done.stdout) == 8 * WORDS + 8, (done.returncode, done.stderr.decode())
    return _result([int.from_bytes(done.stdout[i:i + 8], "little") for i in range(0, 8 * WORDS + 8, 8)])


def code_address(probe: InProcess) -> int:
    """Where the in-process probe's code starts."""
    return ctypes.cast(probe.library.probe_code, ctypes.c_void_p).value
