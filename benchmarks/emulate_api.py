"""Cost of one `regmap.emulate` call, against `Emulator.step` on a ready machine (its floor).

    .venv/bin/python benchmarks/emulate_api.py [--rounds R] [--calls N]

`emulate` copies the registers given, builds a `PureMachine`, runs the code and
returns an `Emulation`; the floor is the step alone, decode cached, on a machine
built once.  Reading one register from the result (`.regs["rax"]`) is part of
each call, as a user's first read would be.  With ``trace=True`` (the default)
the run takes the same compiled path and the window accesses are worked out
when the trace is first read: one row reads it (``.steps[0].accesses``), and
the traced step alone shows what that read costs per step.

The rows take turns within each round, so load from other work
hits them alike, and are timed in the thread's CPU time (``time.thread_time``:
time spent waiting for a CPU on a loaded machine is left out; a busy sibling
hyperthread still slows everything).  Reported: median and spread (min..max)
over the rounds, in microseconds, and the median of the per-round ratios to
the floor.
"""
from __future__ import annotations

import argparse
import statistics
import time

import regmap
from regmap.pure import PureMachine
from regmap.x86 import Emulator

CODE = bytes.fromhex("48 03 04 25 08 00 00 00")          # add rax, [8]
ADDRESS = 0x400000


def cases() -> dict[str, object]:
    emulator = Emulator()
    machine = PureMachine({"rip": ADDRESS, "rax": 1, "rcx": 2, "rflags": 2}, {ADDRESS: CODE})
    registers = machine.registers

    def step(trace: bool):
        def once():
            registers["rip"] = ADDRESS
            emulator.step(machine, trace=trace)
        return once

    return {
        "Emulator.step (the floor)": step(False),
        "regmap.emulate, trace=False": lambda: regmap.emulate(
            CODE, {"rax": 1, "rcx": 2}, trace=False).regs["rax"],
        "regmap.emulate (trace=True, default)": lambda: regmap.emulate(
            CODE, {"rax": 1, "rcx": 2}).regs["rax"],
        "  ... and reading its trace": lambda: regmap.emulate(
            CODE, {"rax": 1, "rcx": 2}).steps[0].accesses,
        "Emulator.step, trace=True": step(True),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000, help="calls per row per round")
    args = parser.parse_args(argv)
    rows = cases()
    for run in rows.values():        # decode, compile and warm every path once
        for _ in range(200):
            run()
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, run in rows.items():
            start = time.thread_time()
            for _ in range(args.calls):
                run()
            samples[name].append((time.thread_time() - start) / args.calls * 1e6)
    floor = samples["Emulator.step (the floor)"]
    for name, values in samples.items():
        ratio = statistics.median(v / f for v, f in zip(values, floor))
        print(f"{name:<40} {statistics.median(values):6.1f} us  ({min(values):.1f}..{max(values):.1f})"
              f"  {ratio:5.1f}x the step")


if __name__ == "__main__":
    main()
