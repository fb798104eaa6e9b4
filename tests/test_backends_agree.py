"""The three backends agree, register for register, on the same instruction from the same full state.

Each case is one instruction with a window operand (backends_cases.CASES: Python-semantics forms,
native-engine forms, the rflags, rip and mxcsr slots, string instructions, a normal stack), run
from a random full state — every GPR, rflags with ID and NT set and clear and random arithmetic
flags and DF (never TF or AC), mxcsr, every vector register at the host's width, k0..k7, the x87
stack with a few values, fcw and fsw — on the pure backend (`regmap.emulate`), in-process (the
runner as a shared library called after `map_registers()`) and traced (the runner under
`regmap exec`).  After the instruction every register, the stack page and a buffer page must be
the same on all three.  Where it means something the plain CPU runs the same instruction with its
window operand on a page holding the window's image, and the result, read back through the
layout, must be the same too.

rflags ID and NT, and the flags the SDM leaves undefined (which follow the host CPU), are tests of
their own, so that a difference there names itself.
"""
from __future__ import annotations

import platform
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import python_env  # noqa: E402

import backends_cases as bc  # noqa: E402

CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = [
    pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                       reason="the in-process and traced backends need Linux on x86-64"),
    pytest.mark.skipif(CC is None or shutil.which("as") is None,
                       reason="needs cc/gcc and as to build the runner and assemble the cases"),
]

SEEDS = [1, 2, 3, 4]
BACKENDS = ("inprocess", "traced")

def _params(select=lambda case: True):
    params = []
    for seed in SEEDS:
        for case in bc.CASES:
            if not select(case):
                continue
            marks = []
            why = bc.available(case)
            if why:
                marks.append(pytest.mark.skip(reason=why))
            params.append(pytest.param(case.name, seed, id=f"{case.name}-{seed}", marks=marks))
    return params


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("backends")
    every = bc.make_runs(SEEDS, directory)
    problems = bc.run_all(every, directory, CC, python_env())
    if any("not allowed to trace" in problem for problem in problems.values()):
        pytest.skip("ptrace is not permitted here: " + problems["traced"])
    return {(run.case.name, run.seed): run for run in every}, problems


def _run(runs, name: str, seed: int, *backends: str) -> bc.Run:
    table, problems = runs
    for backend in backends:
        assert backend not in problems, f"the {backend} run failed: {problems[backend]}"
    return table[(name, seed)]


def differences(before: dict, expected: tuple, actual: tuple, flag_mask: int = 0) -> list[str]:
    """What differs between two (registers, pages) results, one line each, with the value before."""
    (want, want_pages), (got, got_pages) = expected, actual
    lines = []
    for name in want:
        a, b = want[name], got[name]
        if name == "rflags":
            a, b = a & ~flag_mask, b & ~flag_mask
        if a != b:
            lines.append(f"{name}: before {before[name]:#x}, expected {a:#x}, got {b:#x}")
    for label, page, x, y in zip(("stack", "buffer", "image"), bc.PAGES, want_pages, got_pages):
        changed = [i for i in range(bc.PAGE) if x[i] != y[i]]
        if changed:
            lo, hi = changed[0], changed[-1] + 1
            lines.append(f"{label} page bytes {page + lo:#x}..{page + hi:#x}: expected "
                         f"{x[lo:hi].hex()}, got {y[lo:hi].hex()}")
    return lines


def _report(run: bc.Run, backend: str, lines: list[str]) -> str:
    return (f"{run.case.text.format(w=0)} ({run.code.hex()}) at {run.address:#x}, seed {run.seed}: "
            f"{backend} differs from pure:\n  " + "\n  ".join(lines))


@pytest.mark.parametrize("name, seed", _params())
def test_every_register_agrees_across_the_backends(runs, name, seed):
    """Every register but rflags' ID and NT (test_rflags_id_and_nt_agree), and the pages."""
    run = _run(runs, name, seed, *BACKENDS)
    expected = run.after["pure"]
    for backend in BACKENDS:
        lines = differences(run.before, expected, run.after[backend], bc.ID_NT)
        assert not lines, _report(run, backend, lines)


@pytest.mark.parametrize("name, seed", _params())
def test_rflags_id_and_nt_agree(runs, name, seed):
    run = _run(runs, name, seed, *BACKENDS)
    values = {backend: run.after[backend][0]["rflags"] & bc.ID_NT for backend in ("pure", *BACKENDS)}
    report = (f"{run.case.text.format(w=0)} at {run.address:#x}, rflags {run.before['rflags']:#x} "
              "before: ID/NT bits " + ", ".join(f"{b} {v:#x}" for b, v in values.items()))
    assert len(set(values.values())) == 1, report


@pytest.mark.parametrize("name, seed", _params(select=lambda case: case.cpu))
def test_the_window_gives_what_the_cpu_gives_on_memory(runs, name, seed):
    """The plain CPU with the operand on an image of the window, read back through the layout,
    against pure (which the other test holds the in-process and traced backends to)."""
    run = _run(runs, name, seed, "cpu")
    lines = differences(run.before, run.after["cpu"], run.after["pure"], 0)
    assert not lines, _report(run, "pure (expected: the CPU)", lines)


@pytest.mark.parametrize("name, seed", _params(select=lambda case: case.cpu and case.undefined))
def test_undefined_flags_follow_the_cpu(runs, name, seed):
    run = _run(runs, name, seed, "cpu")
    cpu, emulated = (run.after[b][0]["rflags"] & run.case.undefined for b in ("cpu", "pure"))
    assert cpu == emulated, f"{run.case.text.format(w=0)}: undefined flags CPU {cpu:#x}, pure {emulated:#x}"


def test_the_states_are_full_and_varied(runs):
    """The states cover what they should: ID and NT both ways, every vector register and the x87
    stack in use, so that agreement means something."""
    table, _ = runs
    befores = [run.before for run in table.values()]
    for bit in (bc.ID, bc.NT, bc.DF, bc.CF):
        assert {bool(b["rflags"] & bit) for b in befores} == {True, False}
    assert not any(b["rflags"] & (bc.TF | bc.AC) for b in befores)
    assert all(b[f"zmm{bc.VECTORS - 1}"] for b in befores)
    assert {b["ftw"] != 0 for b in befores} == {True, False}
    if bc.K_MASK:
        assert all(any(b[f"k{i}"] for i in range(8)) for b in befores)


def test_the_runner_changes_what_the_instruction_changes(runs):
    """The runner itself is exact: on the plain CPU a register-only effect shows (xadd swaps
    and adds), and what the instruction leaves alone comes back as it went in."""
    run = _run(runs, "xadd", SEEDS[0], "cpu")
    regs, _ = run.after["cpu"]
    mask = (1 << 64) - 1
    assert regs["rax"] == run.before["rcx"]
    assert regs["rcx"] == (run.before["rcx"] + run.before["rax"]) & mask
    for name in ("rbx", "rsp", "r15", "mxcsr", "fcw", "st3", "zmm31" if bc.WIDTH == 512 else "zmm15"):
        assert regs[name] == run.before[name], name
