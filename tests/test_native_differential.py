"""Two implementations, one of them the CPU: every form with Python semantics, run both ways.

Each form the emulator has Python semantics for is also run through the native engine (the same
`Emulator`, the form handed to `regmap.x86.native.family`: through the `Cpu` and its commit, and
through the engine's fast path over the register namespace where it takes the form), from the same
random state (edge values where the instruction looks); the two must leave the same registers,
flags (less those the SDM leaves undefined) and real memory, or refuse the instruction the same
way.
"""
from __future__ import annotations

import platform
import random
import signal
import sys

import pytest

if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
    pytest.skip("the native engine runs on an x86-64 Linux host", allow_module_level=True)

import native_cpu as N  # noqa: E402
import oracle  # noqa: E402
from forms import Impossible, code_name, form_info, host_can_run, random_form  # noqa: E402
from test_oracle import random_inputs  # noqa: E402

from regmap.errors import (DivideError, GeneralProtection, InstructionFault, MemoryFault,  # noqa: E402
                           NotWindowAccess, RegmapError)
from regmap.pure import PureMachine  # noqa: E402
from regmap.x86 import Emulator, supported_codes  # noqa: E402
from regmap.x86.native import family  # noqa: E402

PYTHON_FORMS = sorted(supported_codes())
REGISTER_SETS = 2
SI_KERNEL = 0x80
_PYTHON = Emulator()
_NATIVE = {"generic": Emulator(), "fast": Emulator()}
RIP = 0x400000


def native_form(code: bytes, path: str):
    """The form at RIP, handed to the native engine (None if the engine refuses its kind); on
    the ``generic`` path without its fast function."""
    emulator = _NATIVE[path]
    form = emulator.form_at(RIP, code)
    if form.native is None:
        if not family.prepare(form, form.instruction, emulator._factory):
            return None
        if path == "generic":
            form.fast = None
    return None if form.native.refusal else form


def step(emulator, code: bytes, regs: dict[str, int], stack: bytes):
    machine = PureMachine(dict(regs, rip=RIP), {RIP: code, N.STACK_BASE: stack})
    try:
        emulator.step(machine)
    except RegmapError as error:
        return error, None
    return None, machine


def same_refusal(python: Exception, native: Exception) -> bool:
    if isinstance(python, DivideError):
        return isinstance(native, InstructionFault) and native.signo == signal.SIGFPE
    if isinstance(python, GeneralProtection):
        return isinstance(native, InstructionFault) and (native.signo, native.si_code) == (signal.SIGSEGV,
                                                                                           SI_KERNEL)
    return type(python) is type(native) or (isinstance(python, (NotWindowAccess, MemoryFault))
                                            and isinstance(native, (NotWindowAccess, MemoryFault)))


@pytest.mark.parametrize("path", ["generic", "fast"])
@pytest.mark.parametrize("code", PYTHON_FORMS, ids=code_name)
def test_python_semantics_agree_with_the_native_engine(code, path):
    info = form_info(code)
    if not info.drivable or info.string or info.uses_stack or info.is_branch:
        pytest.skip("the native engine does not take this kind of form (string, stack, branch)"
                    if info.drivable else f"generator: {info.reason}")
    ok, why = host_can_run(code, N.cpu_flags())
    if not ok:
        pytest.skip(why)
    rng = random.Random(code)
    compared = 0
    for aligned in (True, False):
        try:
            form = random_form(code, rng, aligned=aligned)
        except Impossible as exc:
            pytest.skip(f"generator: {exc}")
        if native_form(form.bytes, path) is None:
            pytest.skip("the native engine refuses this form")
        for _ in range(REGISTER_SETS):
            regs, stack = random_inputs(form, rng)
            regs["rflags"] = (regs["rflags"] & N.USER_RFLAGS) | 0x202
            regs.setdefault("fcw", 0x37F)
            python_error, python = step(_PYTHON, form.bytes, regs, stack)
            native_error, native = step(_NATIVE[path], form.bytes, regs, stack)
            context = f"{form!r}\n  python: {python_error!r}\n  native: {native_error!r}"
            if python_error or native_error:
                assert python_error and native_error and same_refusal(python_error, native_error), context
                continue
            # every flag and result, those the SDM leaves undefined too: both are the host CPU's
            for name in set(python.registers) | set(native.registers):
                want, got = python.registers.get(name, 0), native.registers.get(name, 0)
                assert want == got, f"{name}: python {want:#x}, native {got:#x}\n{context}"
            assert python.memory_writes == native.memory_writes, context
            compared += 1
