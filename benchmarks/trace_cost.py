"""The cost of one traced, emulated page-0 fault beside a bare ptrace tracer written in C.

A C program times N executions of ``add rax, [8]`` (rax += rcx through the
window), each one individually with clock_gettime, and prints the median and
the mean in nanoseconds.  It runs twice, in this one process:

- bare: under ``bare_tracer.c``, a tracer written in C (built here with the
  system compiler) that does what any tracer must do per fault and nothing
  else -- wait for the stop, PTRACE_GETREGS, the add (rax += rcx, with the
  flags), rip += 8, PTRACE_SETREGS, PTRACE_CONT;
- regmap: under ``regmap.trace.run_traced`` with the real emulator (GETSIGINFO,
  GETREGS and the read of the code at rip in one batch, the site cache's check,
  the compiled emulation, SETREGS and CONT in a second batch).

The ratio regmap / bare is the price of regmap's work on top of ptrace's.  Runs of
the two kinds alternate; each figure is the median over runs of the per-run median.
By default the tracer and the program share one CPU (``--cpu``, inherited through
fork), so every fault is a plain switch between the two and the figures do not
depend on cross-CPU wake-ups, which on a small busy VM vary by a factor of two.

    .venv/bin/python benchmarks/trace_cost.py [N] [--repeat R] [--cpu C|all] [--unpinned]

``--unpinned`` adds regmap's runs as users run them (``regmap exec`` with no taskset: the
tracer and the program on any CPU, so a fault may cost cross-CPU wake-ups), interleaved
with the pinned ones, and their ratio (issue 17's target: at most 1.3x); and the bare C
tracer's runs unpinned, the floor of that placement.
"""
from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int compare(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000;
    long *cost = malloc(n * sizeof *cost);
    unsigned long rax = 0, rcx = 1;
    long total = 0;
    for (long i = 0; i < n; i++) {
        long start = now();
        __asm__ volatile ("add 8, %0" : "+a" (rax) : "c" (rcx) : "cc");
        cost[i] = now() - start;
        total += cost[i];
    }
    qsort(cost, n, sizeof *cost, compare);
    /* median ns, mean ns, rax (n under regmap, 0 under the bare loop) */
    printf("%ld %.1f %lu\n", cost[n / 2], (double)total / n, rax);
    return 0;
}
"""


def bare_round_trips(tracer: str, executable: str, n: int) -> str:
    """Run the program under the bare C tracer (bare_tracer.c); return its output line."""
    return subprocess.run([tracer, executable, str(n)], check=True, capture_output=True,
                          text=True).stdout


def regmap_faults(executable: str, n: int) -> str:
    from regmap.trace import run_traced
    read_fd, write_fd = os.pipe()
    saved = os.dup(1)
    os.dup2(write_fd, 1)
    os.close(write_fd)
    try:
        status = run_traced([executable, str(n)])
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    if status != 0:
        raise SystemExit(f"the benchmark program failed under regmap (status {status})")
    with os.fdopen(read_fd) as output:
        return output.read()


def timed(run, name: str, n: int, into: list) -> None:
    """One run (its output line: median ns, mean ns, rax) checked and kept in `into`."""
    median, mean, rax = run().split()
    if int(rax) != n:
        raise SystemExit(f"wrong result under {name}: rax = {rax}, expected {n}")
    into.append((float(median), float(mean)))


def medians(runs: list) -> tuple[float, float]:
    """The median over runs of the per-run median and of the per-run mean, in microseconds."""
    return (statistics.median(m for m, _ in runs) / 1000,
            statistics.median(m for _, m in runs) / 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=20000, help="faults per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each kind (alternating)")
    parser.add_argument("--cpu", default=None,
                        help="CPU for the tracer and the program (default: the last allowed one; "
                             "'all' to leave affinity alone)")
    parser.add_argument("--unpinned", action="store_true",
                        help="also run regmap with the tracer and the program free to run on any "
                             "allowed CPU, as users run it, interleaved with the pinned runs")
    options = parser.parse_args()
    allowed = sorted(os.sched_getaffinity(0))
    if options.cpu != "all":
        cpu = allowed[-1] if options.cpu is None else int(options.cpu)
        os.sched_setaffinity(0, {cpu})
        placement = f"both on CPU {cpu}"
    else:
        placement = f"CPUs {allowed}"
    pinned_to = os.sched_getaffinity(0)
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        print("trace_cost: needs a C compiler", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as directory:
        source = os.path.join(directory, "faults.c")
        executable = os.path.join(directory, "faults")
        with open(source, "w") as file:
            file.write(PROGRAM)
        subprocess.run([compiler, "-O2", "-o", executable, source], check=True)
        tracer = os.path.join(directory, "bare_tracer")
        subprocess.run([compiler, "-O2", "-o", tracer,
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "bare_tracer.c")],
                       check=True)
        bare, emulated, unpinned, bare_unpinned = [], [], [], []
        regmap_run = functools.partial(regmap_faults, executable, options.n)
        bare_run = functools.partial(bare_round_trips, tracer, executable, options.n)
        for _ in range(options.repeat):
            if options.unpinned:
                os.sched_setaffinity(0, set(allowed))     # the program inherits it
                timed(regmap_run, "regmap", options.n, unpinned)
                timed(bare_run, "the bare tracer", options.n, bare_unpinned)
                os.sched_setaffinity(0, pinned_to)
            timed(bare_run, "the bare tracer", options.n, bare)
            timed(regmap_run, "regmap", options.n, emulated)
    bare_median, bare_mean = medians(bare)
    emulated_median, emulated_mean = medians(emulated)
    print(f"faults per run: {options.n}, runs of each: {options.repeat}, {placement}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"bare C tracer (stop, GETREGS, add, SETREGS, CONT):     "
          f"median {bare_median:7.2f} us  (mean {bare_mean:.2f})")
    print(f"regmap traced fault (add rax,[8] emulated):          "
          f"median {emulated_median:7.2f} us  (mean {emulated_mean:.2f})")
    print(f"ratio regmap / bare: {emulated_median / bare_median:.2f}")
    if unpinned:
        free_median, free_mean = medians(unpinned)
        print(f"regmap traced fault, unpinned (CPUs {allowed}):      "
              f"median {free_median:7.2f} us  (mean {free_mean:.2f}; per run "
              + ", ".join(f"{m / 1000:.1f}" for m, _ in unpinned) + ")")
        print(f"unpinned / pinned: median {free_median / emulated_median:.2f}x, mean "
              f"{free_mean / emulated_mean:.2f}x (target <= 1.3x)")
        floor_median, floor_mean = medians(bare_unpinned)
        print(f"bare C tracer, unpinned:                              "
              f"median {floor_median:7.2f} us  (mean {floor_mean:.2f}; per run "
              + ", ".join(f"{m / 1000:.1f}/{a / 1000:.1f}" for m, a in bare_unpinned)
              + " median/mean)")
        print(f"its unpinned / pinned: median {floor_median / bare_median:.2f}x, mean "
              f"{floor_mean / bare_mean:.2f}x")
        print(f"regmap / bare C tracer, both unpinned: median {free_median / floor_median:.2f}x, "
              f"mean {free_mean / floor_mean:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
