"""Cost of one emulated instruction in the pure emulator, beside unicorn single-stepping it.

    .venv/bin/pip install -e '.[bench]' && .venv/bin/python benchmarks/emulator_cost.py

Both engines run the same instruction bytes from a warm state (regmap's
per-site decode cache is hot; unicorn's translation cache likewise) and the
report is the median of several rounds, in microseconds, with the ratio.
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


def median_us(run_once) -> float:
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(PER_ROUND):
            run_once()
        samples.append((time.perf_counter() - start) / PER_ROUND * 1e6)
    return statistics.median(samples)


def regmap_cost(code: bytes) -> float:
    emulator = Emulator()
    machine = PureMachine({"rip": CODE_ADDRESS, "rax": 1, "rcx": 2, "rflags": 2}, {CODE_ADDRESS: code})
    registers = machine.registers

    def once():
        registers["rip"] = CODE_ADDRESS
        emulator.step(machine)
    return median_us(once)


def unicorn_cost(code: bytes) -> float | None:
    try:
        import unicorn
        from unicorn import x86_const
    except ImportError:
        return None
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 0x1000)                      # page 0 as plain memory holding the register image
    uc.mem_map(CODE_ADDRESS, 0x1000)
    uc.mem_write(CODE_ADDRESS, code)
    uc.reg_write(x86_const.UC_X86_REG_RAX, 1)
    end = CODE_ADDRESS + len(code)

    def once():
        uc.emu_start(CODE_ADDRESS, end, count=1)
    return median_us(once)


def main() -> int:
    print(f"{'instruction':28} {'regmap us':>10} {'unicorn us':>11} {'ratio':>7}")
    for name, text in CASES.items():
        code = bytes.fromhex(text)
        ours, theirs = regmap_cost(code), unicorn_cost(code)
        if theirs is None:
            print(f"{name:28} {ours:10.2f} {'(no unicorn)':>11}")
        else:
            print(f"{name:28} {ours:10.2f} {theirs:11.2f} {ours / theirs:7.2f}")
    if unicorn_cost(b"\x90") is None:
        print("unicorn is not installed: pip install -e '.[bench]' to compare", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
