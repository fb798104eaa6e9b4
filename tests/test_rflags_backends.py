"""rflags ends the same under `regmap.emulate`, `map_registers()` and `regmap exec`, ID (bit 21)
and NT (bit 14) included, and as the host CPU leaves it.

Each window form is paired with what the CPU runs for it without the window: the register form
(`add rax, rcx` for `add rax, [8]`), or for a write of the rflags slot a POPFQ of the value.
The CPU's rflags after the pair (run in-process, nothing mapped) is the oracle for all three.
Inputs: every combination of NT and ID set and clear before, and in the value written.
Covered: native-engine forms (its stub used to leave ID cleared in-process), Python forms,
writes of the rflags slot (sigreturn and ptrace cannot set NT or ID from a frame or SETREGS)
and a `popfq` with rsp in the window.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import register_probe as P  # noqa: E402
from runtime_build import why_not_native  # noqa: E402

REASON = why_not_native()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
NT, ID = 1 << 14, 1 << 21
# (window form, what the CPU runs instead, whether rsp is in the window)
PAIRS = [
    ("addps xmm0, [0x100]", "addps xmm0, xmm0", False),               # the native engine
    ("mulsd xmm1, [0x120]", "mulsd xmm1, xmm1", False),
    ("add rax, [8]", "add rax, rcx", False),                            # a compiled Python form
    ("adc al, [9]", "adc al, ch", False),
    ("mov qword ptr [0x88], r9", "push r9; popfq", False),              # the rflags slot
    ("or qword ptr [0x88], r9", "pushfq; or [rsp], r9; popfq", False),
    ("popfq", "push r9; popfq", True),                                  # popfq from the window
]
BEFORE = [0x202 | extra for extra in (0, NT, ID, NT | ID)]
WRITTEN = [0x2D7 | extra for extra in (0, NT, ID, NT | ID)]      # CF PF ZF SF OF, no TF or AC


def _inputs(flags: int, written: int, window_stack: bool) -> dict[str, int]:
    regs = {"rax": 0x8000_0000_0000_0001, "rcx": 0x7FFF_FFFF_FFFF_FFFF, "r9": written,
            "rflags": flags}
    if window_stack:
        regs["rsp"] = 0x48          # [0x48] is r9
    return regs


@pytest.mark.parametrize("window, register, window_stack", PAIRS, ids=[pair[0] for pair in PAIRS])
def test_rflags_after_agree_with_the_cpu_in_every_backend(tmp_path, window, register, window_stack):
    mapped = P.InProcess(tmp_path, window, "window")
    cpu = P.InProcess(tmp_path, register, "register")
    results = {}
    for flags in BEFORE:
        for written in WRITTEN:
            if "0x88" not in window and "popfq" not in window and written != WRITTEN[0]:
                continue          # the value written matters only to the rflags forms
            inputs = _inputs(flags, written, window_stack)
            oracle = cpu.run(dict(inputs, rsp=0), mapped=False)["rflags"]
            got = {"emulate": P.emulated(window, inputs)["rflags"], "in-process": mapped.run(inputs)["rflags"]}
            results[flags, written] = (oracle, got)
            assert {name: hex(value) for name, value in got.items()} == \
                {name: hex(oracle) for name in got}, (window, hex(flags), hex(written))
    # the traced run, one program per input: the combinations that change NT or ID, and one that does not
    for (flags, written), (oracle, _) in results.items():
        if (flags ^ oracle) & (NT | ID) or (flags, written) == (BEFORE[0], WRITTEN[0]):
            traced = P.traced(tmp_path, window, _inputs(flags, written, window_stack), "traced")
            assert hex(traced["rflags"]) == hex(oracle), (window, hex(flags), hex(written))


def test_the_pairs_exercise_nt_and_id_both_ways(tmp_path):
    """The slot writes set and clear NT and ID on the CPU (else the test above proves nothing)."""
    cpu = P.InProcess(tmp_path, "push r9; popfq", "register")
    seen = set()
    for flags in BEFORE:
        for written in WRITTEN:
            after = cpu.run(_inputs(flags, written, False), mapped=False)["rflags"]
            seen |= {(bit, bool(flags & bit), bool(after & bit)) for bit in (NT, ID)}
    assert {(bit, before, not before) for bit in (NT, ID) for before in (False, True)} <= seen
