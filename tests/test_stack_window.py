"""rsp in page 0: the stack is the window, in every backend (`pop qword [0x130]` with rsp = 0x48
reads r9; `push rax` sets r8).

- The stack instructions' semantics on a real stack (pushf, popf, enter, leave, push of an
  immediate or a 16-bit register) against the host CPU.
- `regmap.emulate` with rsp in the window against the same instruction on a real stack holding
  the register image: the registers after are that run's, with its stack writes landed on the
  registers through the layout (window writes last, the emulator's rule).
- In-process (`map_registers`) and traced (`regmap exec`) runs of the same code against
  `regmap.emulate`: every general register and rflags.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import native_cpu as N  # noqa: E402
import register_probe as P  # noqa: E402
from runtime_build import why_not_native  # noqa: E402

import regmap  # noqa: E402
from regmap.cli.emulate import assemble  # noqa: E402
from regmap.layout import load_layout  # noqa: E402

REASON = why_not_native()
native = pytest.mark.skipif(REASON is not None, reason=REASON or "")
LAYOUT = load_layout()
# flags a popped value may carry into the CPU's run: no TF (it would trap), no AC (#AC)
POPPABLE = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800 | 0x4000 | 0x200000
STACK_CODES = ["pushfq", "popfq", ".byte 0x66, 0x9c", ".byte 0x66, 0x9d", "enter 24, 0", "enter 8, 1",
               "enter 16, 3", "leave", ".byte 0x66, 0xc9", "push -3", "push 0x12345678",
               ".byte 0x66, 0x6a, 0xfd", "push ax", "pop ax", "push rax", "pop rcx", "pop rsp"]
# each code with rsp (and rbp) in the window; call/ret through `call 1f; jmp 2f; 1: ret; 2:`.
# Not enter with a nesting level: it stores stack addresses, which the real stack's run moves.
WINDOW_CODES = [code for code in STACK_CODES if code not in ("enter 8, 1", "enter 16, 3")] + ["push qword ptr [0x130]", "pop qword ptr [0x130]", "call qword ptr [0x8]",
                              "call 1f; jmp 2f; 1: ret; 2:", "ret 8", "push qword ptr [0x40]"]


def _registers(rng: random.Random) -> dict[str, int]:
    values = {name: rng.getrandbits(64) for name in P.GPRS}
    values["rflags"] = 0x202 | (rng.getrandbits(32) & 0x8D5)
    return values


@native
@pytest.mark.parametrize("code", STACK_CODES)
def test_stack_semantics_on_a_real_stack_match_the_cpu(code):
    rng = random.Random(code)
    machine_code = assemble(code)
    for _ in range(8):
        state = N.NativeState()
        state.gpr = _registers(rng)
        state.gpr.pop("rflags")
        state.rflags = 0x202 | (rng.getrandbits(32) & 0x8D5)
        state.gpr["rsp"] = N.STACK_TOP - 8 * rng.randrange(8)
        state.gpr["rbp"] = N.STACK_TOP + 8 * rng.randrange(1, 64)
        words = [rng.getrandbits(64) for _ in range(N.STACK_SIZE // 8)]
        for i in range(len(words)):     # what popf pops: user flags only, never TF or AC
            words[i] = words[i] & POPPABLE | 0x2 if "0x9d" in code or "popf" in code else words[i]
        state.stack = b"".join(word.to_bytes(8, "little") for word in words)
        cpu = N.run_native(machine_code, state)
        emulated = regmap.emulate(machine_code, {**state.gpr, "rflags": state.rflags},
                                  memory={N.STACK_BASE: state.stack}, trace=False)
        stack = bytearray(state.stack)
        for address, data in emulated.memory_writes:
            stack[address - N.STACK_BASE:address - N.STACK_BASE + len(data)] = data
        got = {name: emulated.regs[name] for name in N.GPRS}
        assert (hex(emulated.regs["rflags"]), got) == (hex(cpu.rflags), cpu.gpr), code
        assert bytes(stack) == cpu.stack, code


def _transported(real, base: int, moved: tuple[str, ...]) -> dict[str, int]:
    """A real-stack run seen as if its stack at `base` were the window: its registers, the
    registers that held stack addresses moved back by `base`, then its stack writes landed
    on the registers through the layout."""
    values = {name: real.regs[name] for name in (*P.GPRS, "rflags", "rip")}
    for name in moved:
        values[name] = (values[name] - base) % (1 << 64)
    for address, data in real.memory_writes:
        LAYOUT.write(address - base, len(data), int.from_bytes(data, "little"), values)
    return values


@pytest.mark.parametrize("code", WINDOW_CODES)
def test_emulate_with_rsp_in_the_window_is_a_real_stack_holding_the_registers(code):
    rng = random.Random(code)
    machine_code = assemble(code)
    base = 0x7000_0000
    for _ in range(8):
        regs = _registers(rng)
        regs["rsp"] = 0x40 + 8 * rng.randrange(5)
        regs["rbp"] = 0x50 + 8 * rng.randrange(4)
        regs["r9"] &= POPPABLE                                  # what a popfq pops
        window = regmap.emulate(machine_code, regs, trace=False)
        image = LAYOUT.image(dict(window.before))
        leave = "leave" in code or "0xc9" in code
        on_stack = dict(regs, rsp=regs["rsp"] + base, rbp=regs["rbp"] + (base if leave else 0))
        real = regmap.emulate(machine_code, on_stack, memory={base: image}, trace=False)
        # enter's rbp is the new rsp; a 16-bit leave keeps rbp's upper bits (base's low 16 are 0)
        moved = ("rsp", "rbp") if "enter" in code or "0xc9" in code else ("rsp",)
        if code == "pop rsp":
            moved = ()                                  # rsp is the popped value
        expected = _transported(real, base, moved)
        got = {name: window.regs[name] for name in expected}
        assert got == expected, code


# the in-process and traced runs: rsp (and rbp) in the window, every register compared
RUNTIME_CODES = ["push rax", "pop rcx", "pop qword ptr [0x130]; mov rax, [0x130]", "push qword ptr [0x130]",
                 "pushfq", "popfq", "enter 16, 0", "enter 8, 2", "leave", "push -3",
                 "call 1f; jmp 2f; 1: ret; 2:", "call qword ptr [0x58]; 1:"]


def _inputs(rng: random.Random, code: str) -> dict[str, int]:
    regs = _registers(rng)
    regs.update(rsp=0x48, rbp=0x60, r9=regs["r9"] & POPPABLE | 0x2)
    return regs


def _normalised(result: dict[str, int], code: str) -> dict[str, int]:
    """A pushed return address is code-relative; `call [0x58]` jumps to r11, which the test
    points just past the call in each backend."""
    out = dict(result)
    if "call" in code:
        out["r8"] = (out["r8"] - out["code"]) % (1 << 64)
    out.pop("code")
    return out


def _call_target(code: str, inputs: dict[str, int], at: int) -> dict[str, int]:
    if "[0x58]" in code:      # r11: the instruction after the 7-byte call
        return dict(inputs, r11=at + 7)
    return inputs


@native
def test_in_process_matches_emulate(tmp_path):
    rng = random.Random(16)
    for i, code in enumerate(RUNTIME_CODES):
        probe = P.InProcess(tmp_path, code, f"stack{i}")
        at = P.code_address(probe)
        for _ in range(3):
            inputs = _inputs(rng, code)
            expected = _normalised(P.emulated(code, _call_target(code, inputs, P.EMULATED_AT)), code)
            got = _normalised(probe.run(_call_target(code, inputs, at)), code)
            got.pop("r11"), expected.pop("r11")
            assert {k: hex(v) for k, v in got.items()} == {k: hex(v) for k, v in expected.items()}, code


@native
def test_traced_matches_emulate(tmp_path):
    rng = random.Random(17)
    for i, code in enumerate(RUNTIME_CODES):
        if "[0x58]" in code:
            continue          # the program's address is not known before it runs
        inputs = _inputs(rng, code)
        expected = _normalised(P.emulated(code, inputs), code)
        got = _normalised(P.traced(tmp_path, code, inputs, f"stack{i}"), code)
        assert {k: hex(v) for k, v in got.items()} == {k: hex(v) for k, v in expected.items()}, code
