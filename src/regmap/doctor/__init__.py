"""``regmap doctor``: does regmap work on this machine?

`examine()` gathers the host's facts (`facts`: the CPU as `regmap.x86.host` measures it, the
kernel settings, ptrace, the native engine) and runs the self-test: a sample of window forms
of every family (`cases`), each from a drawn starting state, on the host CPU itself with a real
memory operand (the oracle) and through every backend regmap has here: pure (`regmap.emulate`),
in-process (`regmap.map_registers()` and a generated function called with ctypes) and traced
(a generated static program under ``regmap exec``).  Every general register, the user flags,
mxcsr, the x87 registers, control and tag words, the vector and opmask registers the host has
and the case's scratch stack must agree with the CPU's.

The report is a dict, the ``--json`` document (its schema: docs/doctor.md).  A backend whose
facility the host does not allow (ptrace forbidden) is skipped and said so; a form whose
instruction set the CPU lacks is skipped; anything else that does not agree is a failure.

A layer above the backends: only the CLI imports it (never ``regmap exec``'s start-up).
"""
from __future__ import annotations

import time

SCHEMA = 1
BACKENDS = ("pure", "in-process", "fast faults", "traced")
DEFAULT_SEED = 2024


def examine(seed: int = DEFAULT_SEED, backends=BACKENDS) -> dict:
    """The doctor's report (see docs/doctor.md); ``report["ok"]`` is the verdict."""
    from regmap import __version__
    from regmap.doctor import facts
    from regmap.x86 import host
    started = time.monotonic()
    profile = host.current()
    report = {
        "schema": SCHEMA, "regmap": __version__, "ok": False,
        "cpu": facts.cpu(profile), "kernel": facts.kernel(),
        "ptrace": {"available": False, "ptrace_scope": None, "detail": "not tried"},
        "native_engine": {"available": False, "detail": "not tried"},
        "seed": seed, "backends": {}, "cases": [], "disagreements": [], "problems": [],
        "seconds": 0.0,
    }
    problem = host.platform_problem()
    if problem:
        report["problems"].append(f"the self-test runs instructions on the CPU: {problem}")
    else:
        report["ptrace"] = facts.ptrace()
        report["native_engine"] = facts.native_engine()
        if not report["native_engine"]["available"]:
            report["problems"].append(f"the native engine {report['native_engine']['detail']}")
        try:
            _self_test(report, profile, seed, backends)
        except OSError as error:         # no code page, no block below 2 GiB
            report["problems"].append(f"the self-test cannot run here: {error}")
    report["ok"] = not report["problems"] and not report["disagreements"] and any(
        entry["status"] == "ok" for entry in report["backends"].values())
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


def _self_test(report: dict, profile, seed: int, chosen) -> None:
    from regmap.doctor import backends, cases, image
    from regmap.layout import load_layout
    from regmap.pure import emulator_for
    layout = load_layout(None)
    emulator = emulator_for(layout)
    sample = cases.sample()
    block = image.Block(len(sample), profile)
    runnable = {}
    for index, case in enumerate(sample):
        entry = {"form": case.text, "code": case.code.hex(), "family": case.family,
                 "engine": _engine(emulator, case.code), "undefined_flags": case.undefined_flags,
                 "status": "ok", "skipped": None, "backends": {}}
        if case.needs:
            entry["status"], entry["skipped"] = "skipped", "the CPU lacks " + ", ".join(case.needs)
        else:
            runnable[index] = case
        report["cases"].append(entry)
    image.map_block(block)
    try:
        states = {i: cases.starting_state(case, block, i, seed) for i, case in runnable.items()}
        expected = backends.run_oracle(block, runnable, states, layout)
        runners = {"pure": backends.run_pure, "in-process": backends.run_in_process,
                   "fast faults": backends.run_fast_faults, "traced": backends.run_traced}
        for name in BACKENDS:
            why_not = _unavailable(name, report, chosen)
            if why_not:
                report["backends"][name] = {"status": "skipped", "detail": why_not,
                                            "agree": 0, "disagree": 0}
                continue
            began = time.monotonic()
            got = runners[name](block, runnable, states, layout)
            dispatched = got.pop("dispatched", None)
            agree = 0
            for index, case in runnable.items():
                found = _compare(expected[index], got[index], block)
                entry = report["cases"][index]
                entry["backends"][name] = "failed" if found else "ok"
                if found:
                    entry["status"] = "failed"
                    for register, want, have, error in found:
                        report["disagreements"].append(
                            {"form": case.text, "family": case.family, "engine": entry["engine"],
                             "backend": name, "register": register, "expected": want,
                             "got": have, "error": error})
                else:
                    agree += 1
            detail = f"{time.monotonic() - began:.2f} s"
            if dispatched is not None:
                detail += f", {dispatched} served by machine code"
            report["backends"][name] = {
                "status": "ok" if agree == len(runnable) else "failed",
                "detail": detail, "agree": agree, "disagree": len(runnable) - agree}
    finally:
        image.unmap_block(block)


def _unavailable(name: str, report: dict, chosen) -> str | None:
    if name not in chosen:
        return "not asked for"
    if name == "traced" and not report["ptrace"]["available"]:
        return "ptrace is not allowed here: " + report["ptrace"]["detail"]
    return None


def _engine(emulator, code: bytes) -> str:
    """How regmap runs the form: "python" (its semantics), "native" (the native engine) or
    "unsupported"."""
    try:
        form = emulator.form_at(0x400000, code)
    except Exception:                # noqa: BLE001 - reported as such
        return "unsupported"
    return "native" if form.native is not None else "python" if form.execute else "unsupported"


def _compare(want: dict, have, block) -> list[tuple]:
    """(register, expected, got, error) for each difference; values as hex text."""
    from regmap.doctor import image
    if isinstance(have, str):
        return [(None, None, None, have)]
    widths = {name: block.profile.vector_width for name in block.vector_names()}
    widths.update({name: 64 if block.profile.wide_opmasks else 16 for name in block.opmask_names()})
    found = []
    for name, value in want.items():
        mine = have.get(name, 0)
        if name == "rflags":
            value, mine = value & image.USER_FLAGS, mine & image.USER_FLAGS
        elif name in widths:
            value, mine = (v & ((1 << widths[name]) - 1) for v in (value, mine))
        if value != mine:
            found.append((name, hex(value), hex(mine), None))
    return found


FLAG_NAMES = {0x1: "cf", 0x4: "pf", 0x10: "af", 0x40: "zf", 0x80: "sf", 0x400: "df", 0x800: "of"}


def flag_difference(expected: str, got: str) -> str:
    """The flags two rflags values (hex text) differ in: ``"af of"``."""
    difference = int(expected, 16) ^ int(got, 16)
    return " ".join(name for bit, name in FLAG_NAMES.items() if difference & bit)
