"""Faults on threads C created, against a bare C handler on the same threads, in one run.

For each form (``add rax, [8]``: Python semantics; ``addsd xmm0, [8]``: the native engine)
and each row (the main Python thread; 1, 2 and 8 threads made by ``pthread_create`` in the
library, all at once), interleaved repeat by repeat:

- regmap, machine code: the loop under ``regmap.map_registers()`` (fast faults on, the default),
  one fault per iteration, each sent to the site's trampoline by the handler's machine code;
- regmap, Python: the same with ``fast_faults=False``, every fault through the Python handler;
- floor: the same loop on the same kind of threads with a C SIGSEGV handler doing the form's
  work (``form_cost_floor.c``, ``c_threads_floor.c``) swapped in over regmap's.

Per fault: the faulting threads' CPU time (``CLOCK_THREAD_CPUTIME_ID``, user + system) over
the faults.  Throughput: all the threads' faults over the wall-clock time from the first
``pthread_create`` to the last join (so it counts waiting for the GIL; on a machine with fewer
CPUs than threads, the C floor's throughput stops growing at the CPU count).  Every result is
compared with the register twin of the loop run by the CPU.  The loops and the thread runner
are the tests' (tests/snippets/c_threads.c).

Needs gcc and Linux x86-64.
Usage: python benchmarks/c_threads.py [--faults N] [--repeats R] [--path machine|python|both]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = (HERE.parent / "tests" / "snippets" / "c_threads.c", HERE / "form_cost_floor.c",
           HERE / "c_threads_floor.c")
ADD_FLOOR = 0           # form_cost_floor.c's handler for add rax, [8]
THREADS = (1, 2, 8)
ROWS = ("main",) + tuple(f"{n} C" for n in THREADS)
M64 = (1 << 64) - 1


def build(directory: Path) -> ctypes.CDLL:
    if shutil.which("gcc") is None:
        sys.exit("c_threads: gcc is needed to build the loops and the C floors")
    library = directory / "libcthreads.so"
    objects = []
    for source in SOURCES:   # the loops' inline assembly is Intel syntax, the floors' AT&T
        objects.append(directory / (source.stem + ".o"))
        syntax = ["-masm=intel"] if source == SOURCES[0] else []
        subprocess.run(["gcc", *syntax, "-O2", "-fPIC", "-c", "-o", objects[-1], source], check=True)
    subprocess.run(["gcc", "-shared", "-pthread", "-o", library, *objects], check=True)
    lib = ctypes.CDLL(str(library))
    c_long = ctypes.c_long
    for name in ("add_window", "add_register", "addsd_window", "addsd_register"):
        getattr(lib, name).restype, getattr(lib, name).argtypes = c_long, [c_long, c_long]
    lib.at_once.argtypes = [ctypes.c_int, ctypes.c_void_p, c_long, c_long, c_long,
                            ctypes.POINTER(c_long), ctypes.POINTER(ctypes.c_double)]
    return lib


class Form:
    def __init__(self, lib, name: str, rcx: int, install, restore):
        self.window, self.twin = getattr(lib, name + "_window"), getattr(lib, name + "_register")
        self.address = ctypes.cast(self.window, ctypes.c_void_p).value
        self.rcx, self.install, self.restore = rcx, install, restore
        self.lib = lib

    def main(self, n: int) -> tuple[float, float]:
        """(CPU seconds, wall seconds) of n faults on the calling (main) thread."""
        wall, cpu = time.perf_counter(), time.thread_time()
        result = self.window(n, self.rcx)
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        assert result == self.twin(n, self.rcx), (result, self.twin(n, self.rcx))
        return cpu, wall

    def c_threads(self, count: int, n: int) -> tuple[float, float]:
        """(CPU seconds summed over the threads, wall seconds) of `count` C threads at once,
        n faults each."""
        results, seconds = (ctypes.c_long * count)(), (ctypes.c_double * count)()
        wall = time.perf_counter()
        error = self.lib.at_once(count, self.address, n, self.rcx, 1, results, seconds)
        wall = time.perf_counter() - wall
        assert error == 0, os.strerror(error)
        assert list(results) == [self.twin(n, self.rcx + i) & M64 for i in range(count)]
        return sum(seconds), wall

    def run(self, row: str, n: int) -> tuple[float, float]:
        """(ns per fault of CPU, faults per second) for one row."""
        count = 1 if row == "main" else int(row.split()[0])
        cpu, wall = self.main(n) if row == "main" else self.c_threads(count, n)
        return cpu / (count * n) * 1e9, count * n / wall

    def floor(self, row: str, n: int) -> tuple[float, float]:
        assert self.install() == 0
        try:
            return self.run(row, n)
        finally:
            self.restore()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=20000, help="faults per thread per loop")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--path", choices=("machine", "python", "both"), default="both",
                        help="which of regmap's paths to time (default both)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    paths = ("machine", "python") if args.path == "both" else (args.path,)
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        sys.exit("c_threads: needs Linux on x86-64")
    import regmap

    with tempfile.TemporaryDirectory(prefix="regmap-bench-") as tmp:
        lib = build(Path(tmp))
        forms = {"add rax, [8]": Form(lib, "add", 3, lambda: lib.floor_install(ADD_FLOOR),
                                      lib.floor_restore),
                 "addsd xmm0, [8]": Form(lib, "addsd", 0x3ff8000000000000,   # 1.5
                                         lib.addsd_floor_install, lib.addsd_floor_restore)}
        # (form, row, "machine" | "python" | "floor") -> [(ns per fault, faults per second)]
        samples: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
        try:
            for _ in range(args.repeats):
                for path in paths:
                    regmap.map_registers(fast_faults=path == "machine")
                    for form in forms.values():
                        form.main(100)     # decode and compile the site (plan its trampoline)
                    for name, form in forms.items():
                        for row in ROWS:
                            samples.setdefault((name, row, path), []).append(form.run(row, args.faults))
                for name, form in forms.items():
                    for row in ROWS:
                        samples.setdefault((name, row, "floor"), []).append(form.floor(row, args.faults))
        finally:
            regmap.unmap_registers()

    def median(key, index):
        return statistics.median(sample[index] for sample in samples[key])

    def spread(key, index):
        values = [sample[index] for sample in samples[key]]
        return min(values), max(values)

    table = []
    for name in forms:
        for path in paths:
            for row in ROWS:
                regmap_key, floor_key = (name, row, path), (name, row, "floor")
                table.append({
                    "form": name, "path": path, "threads": row,
                    "regmap_ns": median(regmap_key, 0), "regmap_ns_spread": spread(regmap_key, 0),
                    "floor_ns": median(floor_key, 0), "floor_ns_spread": spread(floor_key, 0),
                    "ratio": median(regmap_key, 0) / median(floor_key, 0),
                    "regmap_faults_per_s": median(regmap_key, 1),
                    "floor_faults_per_s": median(floor_key, 1),
                })
    by = {(r["form"], r["path"], r["threads"]): r for r in table}
    targets = {f"{name}, {path}": {
        "c_thread_over_main": by[name, path, "1 C"]["regmap_ns"] / by[name, path, "main"]["regmap_ns"],
        "one_c_thread_over_floor": by[name, path, "1 C"]["ratio"],
        "eight_c_threads_over_floor": by[name, path, "8 C"]["ratio"],
        "throughput_8_over_1": by[name, path, "8 C"]["regmap_faults_per_s"]
        / by[name, path, "1 C"]["regmap_faults_per_s"],
        "floor_throughput_8_over_1": by[name, path, "8 C"]["floor_faults_per_s"]
        / by[name, path, "1 C"]["floor_faults_per_s"]} for name in forms for path in paths}
    if args.json:
        print(json.dumps({"faults_per_thread": args.faults, "repeats": args.repeats,
                          "cpus": os.cpu_count(), "load": os.getloadavg()[0], "table": table,
                          "targets": targets}, indent=2))
        return 0
    print(f"{args.faults} faults per thread per loop, median of {args.repeats} (min-max), "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; ns per fault = CPU time of the "
          "faulting threads")
    print(f"{'form':16s} {'path':8s} {'threads':8s} {'regmap ns/fault':>24s} {'C floor ns/fault':>22s} "
          f"{'ratio':>6s} {'regmap faults/s':>16s} {'floor faults/s':>15s}")
    for r in table:
        print(f"{r['form']:16s} {r['path']:8s} {r['threads']:8s} "
              f"{r['regmap_ns']:8.0f} ({r['regmap_ns_spread'][0]:.0f}-{r['regmap_ns_spread'][1]:.0f})"
              f"{'':>2s} {r['floor_ns']:6.0f} ({r['floor_ns_spread'][0]:.0f}-{r['floor_ns_spread'][1]:.0f})"
              f" {r['ratio']:6.2f} {r['regmap_faults_per_s']:16.0f} {r['floor_faults_per_s']:15.0f}")
    for name, values in targets.items():
        machine = name.endswith("machine")
        print(f"{name}: 1 C thread / main thread {values['c_thread_over_main']:.2f}x (target <= 1.2x); "
              f"1 C thread / C floor {values['one_c_thread_over_floor']:.2f}x"
              + (" (target <= 1.3x)" if machine else "")
              + f"; 8 C threads / C floor {values['eight_c_threads_over_floor']:.2f}x"
              + (" (target <= 2x)" if machine else "")
              + f"; throughput 8 C threads / 1: regmap {values['throughput_8_over_1']:.2f} "
              f"(target >= 1), C floor {values['floor_throughput_8_over_1']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
