"""Cost of one `regmap.emulate` call, against `Emulator.step` on a ready machine (its floor).

    .venv/bin/python benchmarks/emulate_api.py

`emulate` copies the registers given, builds a `PureMachine`, runs the code and
returns an `Emulation`; the floor is the step alone, decode cached, on a machine
built once.  Reported: median and spread (min..max) of the rounds, in
microseconds, and the median ratio.  Reading one register from the result
(`.regs["rax"]`) is part of each call, as a user's first read would be.
"""
from __future__ import annotations

import statistics
import time

import regmap
from regmap.pure import PureMachine
from regmap.x86 import Emulator

CODE = bytes.fromhex("48 03 04 25 08 00 00 00")          # add rax, [8]
ADDRESS = 0x400000
ROUNDS, PER_ROUND = 9, 2000


def rounds_us(run_once) -> list[float]:
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(PER_ROUND):
            run_once()
        samples.append((time.perf_counter() - start) / PER_ROUND * 1e6)
    return samples


def floor(trace: bool) -> list[float]:
    emulator = Emulator()
    machine = PureMachine({"rip": ADDRESS, "rax": 1, "rcx": 2, "rflags": 2}, {ADDRESS: CODE})

    def once():
        machine.registers["rip"] = ADDRESS
        emulator.step(machine, trace=trace)
    return rounds_us(once)


def emulate(trace: bool) -> list[float]:
    return rounds_us(lambda: regmap.emulate(CODE, {"rax": 1, "rcx": 2}, trace=trace).regs["rax"])


def show(name: str, samples: list[float], base: list[float]) -> None:
    median = statistics.median(samples)
    print(f"{name:<34} {median:7.1f} us  ({min(samples):.1f}..{max(samples):.1f})  "
          f"{median / statistics.median(base):5.1f}x the step")


def main() -> None:
    for trace in (False, True):
        base = floor(trace)
        label = "trace=True (default)" if trace else "trace=False"
        show(f"Emulator.step, {label}", base, base)
        show(f"regmap.emulate, {label}", emulate(trace), base)


if __name__ == "__main__":
    main()
