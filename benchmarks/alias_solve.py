"""Time parsing and solving the shipped register files (best of several runs, in ms).

    .venv/bin/python benchmarks/alias_solve.py
"""
import time
from pathlib import Path

from regmap.alias import RegisterFile, Register, SHIPPED
from regmap.alias.language import FILES_DIR, _parse_file, _State

LAYOUT = Path(__file__).resolve().parent.parent / "src" / "regmap" / "layouts" / "default.regs"


def best(fn, runs=20):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1000


def main():
    files = [(name, FILES_DIR / f"{name}.regs") for name in SHIPPED]
    if LAYOUT.is_file():
        files.append(("layout default", LAYOUT))
    print(f"{'file':16} {'registers':>9} {'parse ms':>9} {'solve ms':>9} {'total ms':>9}")
    for name, path in files:
        def parse_only():
            state = _State(())
            _parse_file(path, state)
            return state

        state = parse_only()
        regs = [Register(n, w, a) for n, (w, a) in state.registers.items()]

        def solve_only():
            return RegisterFile.build(regs, state.defs, locations=state.locations)

        p = best(parse_only)
        s = best(solve_only)
        print(f"{name:16} {len(regs):9} {p:9.2f} {s:9.2f} {p + s:9.2f}")


if __name__ == "__main__":
    main()
