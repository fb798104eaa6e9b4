"""Does ``regmap.cli.quick`` pay for itself?  ``regmap exec /bin/true`` start-up with and without it.

Two launchers, alike but for the parser, run interleaved round by round:

- quick: ``regmap.cli.main()`` as the console script calls it (exec's plain command line read
  by the quick parser, argparse never imported);
- argparse: the same call with ``regmap.cli._quick_args`` answering None, so argparse builds
  exec's parser and reads the line (everything else, ``_end_process`` included, unchanged).

Both are ``python -c`` one-liners, so the interpreter's share is the same; the figure is their
difference, wall time per run (median and spread over ``--rounds``), with ``/bin/true`` alone
and ``python -c pass`` as the floor.

    .venv/bin/python benchmarks/quick_parser.py [--rounds N]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

LAUNCH = "import sys; sys.argv = ['regmap', 'exec', '/bin/true']; import regmap.cli as c; {patch}c.main()"
VARIANTS = {
    "quick": [sys.executable, "-c", LAUNCH.format(patch="")],
    "argparse": [sys.executable, "-c", LAUNCH.format(patch="c._quick_args = lambda *a: None; ")],
    "python -c pass": [sys.executable, "-c", "pass"],
    "/bin/true": ["/bin/true"],
}


def _once(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    rounds = parser.parse_args().rounds
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for command in VARIANTS.values():
        _once(command)                                  # warm the page cache
    for _ in range(rounds):
        for name, command in VARIANTS.items():
            times[name].append(_once(command))
    for name, samples in times.items():
        ms = sorted(1000 * t for t in samples)
        print(f"{name:<16} median {statistics.median(ms):6.1f} ms  "
              f"(p10 {ms[len(ms) // 10]:.1f} .. p90 {ms[len(ms) * 9 // 10]:.1f})")
    floor = statistics.median(times["python -c pass"])
    saved = sorted(1000 * (a - q) for a, q in zip(times["argparse"], times["quick"]))
    quick_share = 1000 * (statistics.median(times["quick"]) - floor)
    argparse_share = 1000 * (statistics.median(times["argparse"]) - floor)
    print(f"argparse - quick, per round: median {statistics.median(saved):+.1f} ms "
          f"(p10 {saved[len(saved) // 10]:+.1f} .. p90 {saved[len(saved) * 9 // 10]:+.1f})")
    print(f"over python -c pass: quick +{quick_share:.1f} ms, argparse +{argparse_share:.1f} ms "
          f"({argparse_share / quick_share:.2f}x)")

if __name__ == "__main__":
    main()
