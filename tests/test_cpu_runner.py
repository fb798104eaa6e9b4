"""The oracle's independent CPU runner (cpu_runner.py, programs/cpu_runner.c), and the native
engine's stub checked against it directly.

The oracle takes the runner's answers as the CPU's (oracle.reference_run), so the runner itself is
checked first: a nop gives back every register it was given, and faults come back as the signal
the CPU raised.  Then the engine's own stub (native_cpu.run_native, which loads and saves the
machine for every native form regmap runs) must give the same whole state as the runner for a
sample of the native forms: a register the stub forgets to load or save back, an x87 field it
mangles, shows here even where no emulator path is involved.
"""
from __future__ import annotations

import random
import signal

import pytest

import cpu_runner

pytestmark = pytest.mark.skipif(cpu_runner.why_not() is not None, reason=cpu_runner.why_not() or "")

SI_KERNEL = 0x80
# the flags a state loads (cpu_runner.LOADED): CF PF AF ZF SF DF OF, bit 1, IF
USER = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800


def random_state(rng: random.Random):
    import native_cpu as N
    from test_native_forms import x87_state
    state = N.NativeState()
    state.gpr = {name: rng.getrandbits(64) for name in N.GPRS}
    state.rflags = rng.getrandbits(12) & USER | 0x202
    state.zmm = [rng.getrandbits(512) for _ in range(32)]
    state.k = [rng.getrandbits(64) for _ in range(8)]
    state.mxcsr = 0x1F80 | rng.randrange(4) << 13 | rng.getrandbits(6)
    x87 = x87_state(rng)
    state.fcw, state.fsw, state.ftw = x87["fcw"], x87["fsw"], x87["ftw"]
    state.st = [x87[f"st{i}"] for i in range(8)]
    state.shadow = rng.randbytes(N.SHADOW_SIZE)
    state.stack = rng.randbytes(N.STACK_SIZE)
    return state


def _fields(state, width: int) -> dict:
    """What a state holds that the host has: vectors cut to its width, opmasks only with AVX-512."""
    count = 32 if width == 512 else 16
    wide_k = "avx512bw" in cpu_runner._cpu_flags()
    return {"gpr": state.gpr, "rflags": state.rflags, "mxcsr": state.mxcsr,
            "zmm": [z & ((1 << width) - 1) for z in state.zmm[:count]],
            "k": [k & ((1 << (64 if wide_k else 16)) - 1) for k in state.k] if width == 512 else [],
            "x87": (state.fcw, state.fsw, state.ftw, state.st), "shadow": state.shadow, "stack": state.stack}


@pytest.mark.parametrize("seed", range(5))
def test_a_nop_gives_back_the_machine_it_was_given(seed):
    state = random_state(random.Random(seed))
    out = cpu_runner.run(b"\x90", state)
    width = cpu_runner.width()
    want = _fields(state, width)
    # FXSAVE reads FCW's reserved bit 6 as 1; the tag byte of an x87 register whose contents
    # are unchanged is what was loaded
    want["x87"] = (state.fcw | 0x40, state.fsw, state.ftw, state.st)
    got = _fields(out, width)
    assert got == want, [name for name in want if got[name] != want[name]]


@pytest.mark.parametrize("code, signo, si_code", [
    ("0f0b", signal.SIGILL, 2),                      # ud2: #UD, ILL_ILLOPN
    ("48f7342508000000", signal.SIGFPE, 1),          # div qword [8] by zero: #DE, FPE_INTDIV
    ("660f6f042508000000", signal.SIGSEGV, SI_KERNEL),  # movdqa xmm0, [8]: misaligned, #GP
], ids=("ud2", "div", "movdqa"))
def test_faults_come_back_as_the_signal_a_process_gets(code, signo, si_code):
    import native_cpu as N
    state = N.NativeState()
    with pytest.raises(N.NativeFault) as fault:
        cpu_runner.run(bytes.fromhex(code), state)
    assert (fault.value.signo, fault.value.si_code, fault.value.in_instruction) == (signo, si_code, True)
    # the same instruction in a process with no handler at all dies of that signal
    assert N.run_in_child(bytes.fromhex(code), state) == signo


def _native_sample(count: int) -> list[int]:
    from regmap.x86.support import coverage
    native = sorted(entry.code for entry in coverage().entries if entry.status == "native")
    return random.Random(7).sample(native, min(count, len(native)))


@pytest.mark.parametrize("chunk", range(4))
def test_the_engines_stub_saves_what_the_cpu_did(chunk):
    """The engine's stub and the runner, each from the same whole state (every register random, an
    x87 stack of any depth), must leave the same whole state or raise the same fault."""
    import native_cpu as N
    from forms import Impossible, form_info, random_form
    from test_oracle import random_inputs
    codes = _native_sample(400)[chunk::4]
    rng = random.Random(chunk)
    width, compared = cpu_runner.width(), 0
    for code in codes:
        if not form_info(code).drivable:
            continue
        try:
            form = random_form(code, rng, aligned=rng.random() < 0.7)
        except Impossible:
            continue
        regs, stack = random_inputs(form, rng)
        state = random_state(rng)
        state.gpr.update({n: regs[n] for n in N.GPRS})
        state.rflags = regs["rflags"] & USER | 0x202
        state.stack = stack
        outcomes = []
        for run in (N.run_native, cpu_runner.run):
            try:
                outcomes.append(_fields(run(form.bytes, state, bias=form.bias), width))
            except N.NativeFault as fault:
                outcomes.append(("fault", fault.signo, fault.si_code, fault.in_instruction))
        stub, cpu = outcomes
        if isinstance(stub, dict) and isinstance(cpu, dict):
            assert stub == cpu, (form, [name for name in cpu if stub[name] != cpu[name]])
            compared += 1
        else:
            assert stub == cpu, form
    assert compared > len(codes) // 3, (compared, len(codes))
