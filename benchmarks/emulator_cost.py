"""Cost of one emulated instruction in the pure emulator, beside unicorn single-stepping it.

    .venv/bin/pip install -e '.[bench]' && .venv/bin/python benchmarks/emulator_cost.py

Both engines run the same instruction bytes from a warm state (regmap's
per-site decode cache is hot; unicorn's translation cache likewise) and the
report is the median of several rounds, in microseconds, with the ratio.
Unicorn is also shown running a batch of 1000 copies of the instruction in one
``emu_start``: its cost per instruction once the per-call overhead is shared
(regmap has no batch: each fault is one instruction).
"""
from __future__ import annotations

import statistics
import sys
import time

from regmap.pure import PureMachine
from regmap.x86 import Emulator

CASES = {
    "add rax, [8]": "48 03 04 25 08 00 00 00",
    "mov al, [1]": "8a 04 25 01 00 00 00",
    "mov qword [0x38], 1": "48 c7 04 25 38 00 00 00 01 00 00 00",
    "mov rdx, [4] (unaligned)": "48 8b 14 25 04 00 00 00",
    "xadd [8], rcx": "48 0f c1 0c 25 08 00 00 00",
    "movdqu xmm0, [0]": "f3 0f 6f 04 25 00 00 00 00",
}
CODE_ADDRESS = 0x400000
ROUNDS, PER_ROUND = 7, 3000


def median_us(run_once, per_round: int = PER_ROUND) -> float:
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(per_round):
            run_once()
        samples.append((time.perf_counter() - start) / per_round * 1e6)
    return statistics.median(samples)


def regmap_cost(code: bytes) -> float:
    emulator = Emulator()
    machine = PureMachine({"rip": CODE_ADDRESS, "rax": 1, "rcx": 2, "rflags": 2}, {CODE_ADDRESS: code})
    registers = machine.registers

    def once():
        registers["rip"] = CODE_ADDRESS
        emulator.step(machine)
    return median_us(once)


def unicorn_cost(code: bytes, batch: int = 1) -> float | None:
    """Unicorn's cost per instruction: `batch` copies of the instruction run by one emu_start
    (batch 1: one instruction per call, as regmap's step is)."""
    try:
        import unicorn
        from unicorn import x86_const
    except ImportError:
        return None
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 0x1000)                      # page 0 as plain memory holding the register image
    size = (len(code) * batch + 0xFFF) & ~0xFFF
    uc.mem_map(CODE_ADDRESS, size)
    uc.mem_write(CODE_ADDRESS, code * batch)
    uc.reg_write(x86_const.UC_X86_REG_RAX, 1)
    end = CODE_ADDRESS + len(code) * batch

    def once():
        uc.emu_start(CODE_ADDRESS, end, count=batch)
    return median_us(once, PER_ROUND // batch or 1) / batch


BATCH = 1000


def main() -> int:
    print(f"{'instruction':28} {'regmap us':>10} {'unicorn us':>11} {'ratio':>7} "
          f"{f'unicorn, {BATCH} per emu_start':>28}")
    for name, text in CASES.items():
        code = bytes.fromhex(text)
        ours, theirs = regmap_cost(code), unicorn_cost(code)
        if theirs is None:
            print(f"{name:28} {ours:10.2f} {'(no unicorn)':>11}")
        else:
            batched = unicorn_cost(code, BATCH)
            print(f"{name:28} {ours:10.2f} {theirs:11.2f} {ours / theirs:7.2f} "
                  f"{batched:16.3f} us/instr")
    if unicorn_cost(b"\x90") is None:
        print("unicorn is not installed: pip install -e '.[bench]' to compare", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
