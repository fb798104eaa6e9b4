"""Cost of one emulated page-0 fault, against the kernel's floor, in one run.

Measured, interleaved repeat by repeat so that machine noise hits every row alike:

- regmap: a tight loop of ``add rax, [8]`` (one SIGSEGV per iteration) under
  ``regmap.map_registers()``, called through ctypes;
- floor: the same loop in a C program whose SIGSEGV handler does the same work
  in C (``rax += rcx; rip += 8`` in the ucontext): signal delivery and sigreturn;
- python floor: the same loop with a minimal ctypes callback as the handler
  (the same two updates, from Python): what any Python handler pays;
- native: the loop with ``add rax, rcx``.

It then breaks regmap's cost down: the handler's Python body (called directly
on a synthetic frame, no signal), and within it the emulator's fast function.

Times are the faulting thread's CPU time (user + system, ``CLOCK_THREAD_CPUTIME_ID``), so
other processes competing for the CPUs do not inflate them; the handler body is timed the
same way (``time.thread_time``).

Needs gcc and Linux x86-64.  Usage: python benchmarks/fault_cost.py [--faults N] [--repeats R]
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
import timeit
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOOP_SOURCE = HERE / "fault_cost_loop_inprocess.s"
FLOOR_SOURCE = HERE / "fault_cost_floor.c"

PYTHON_FLOOR = r"""
import ctypes, sys, time
lib = ctypes.CDLL(sys.argv[1])
lib.fault_loop.restype = ctypes.c_long
lib.fault_loop.argtypes = [ctypes.c_long, ctypes.c_long]
class Sigaction(ctypes.Structure):
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_uint64 * 16),
                ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]
GREGS = ctypes.c_int64 * 23
def on_segv(signo, info, ctx):
    gregs = GREGS.from_address(ctx + 40)
    gregs[13] += gregs[14]
    gregs[16] += 8
callback = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(on_segv)
action = Sigaction()
action.handler = ctypes.cast(callback, ctypes.c_void_p).value
action.flags = 4  # SA_SIGINFO
assert ctypes.CDLL(None).sigaction(11, ctypes.byref(action), None) == 0
n = int(sys.argv[2])
t = time.thread_time()
assert lib.fault_loop(n, 3) == 3 * n
print((time.thread_time() - t) / n * 1e9)
"""


def build(directory: Path) -> tuple[Path, Path]:
    gcc = shutil.which("gcc")
    if gcc is None:
        sys.exit("fault_cost: gcc is needed to build the loops and the C floor")
    library = directory / "libfaultcost.so"
    floor = directory / "fault_cost_floor"
    subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-o", library, LOOP_SOURCE], check=True)
    subprocess.run([gcc, "-O2", "-o", floor, FLOOR_SOURCE, LOOP_SOURCE], check=True)
    return library, floor


def handler_body_cost(library, count: int = 20000) -> tuple[float, float]:
    """The handler's Python body and the emulator's fast function, on a synthetic frame (ns)."""
    from regmap.runtime import frame as frames
    from regmap.runtime import handler
    add = ctypes.cast(library.fault_loop, ctypes.c_void_p).value
    code = ctypes.string_at(add, 64)   # the loop starts on a 32-byte boundary
    add += code.index(bytes.fromhex("48 03 04 25 08 00 00 00"))
    buffer = ctypes.create_string_buffer(1024)
    ctx = (ctypes.addressof(buffer) + 63) & ~63
    fake = frames.Frame.from_address(ctx)
    fake.si_code, fake.trapno, fake.err, fake.cr2, fake.rcx = 1, 14, 4, 8, 3

    def one():
        fake.rip = add
        handler.on_signal(11, ctx + frames.SIGINFO_OFFSET, ctx)

    def reset_only():
        fake.rip = add

    one()
    one()
    body = min(timeit.repeat(one, number=count, repeat=5, timer=time.thread_time)) / count
    overhead = min(timeit.repeat(reset_only, number=count, repeat=5, timer=time.thread_time)) / count
    site = frames.CODE_SITES.get(add)
    fast = site.fast if site is not None else None
    machine = handler.FRAMES.get(ctx)
    fast_cost = float("nan")
    if fast is not None and machine is not None:
        def run_fast():
            fake.rip = add
            fast(machine.namespace)
        fast_cost = (min(timeit.repeat(run_fast, number=count, repeat=5, timer=time.thread_time))
                     / count - overhead) * 1e9
    return (body - overhead) * 1e9, fast_cost


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=20000, help="faults per timed loop")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        sys.exit("fault_cost: needs Linux on x86-64")
    import regmap

    with tempfile.TemporaryDirectory(prefix="regmap-bench-") as tmp:
        library_path, floor = build(Path(tmp))
        library = ctypes.CDLL(str(library_path))
        for name in ("fault_loop", "native_loop"):
            getattr(library, name).restype = ctypes.c_long
            getattr(library, name).argtypes = [ctypes.c_long, ctypes.c_long]
        n = args.faults
        rows: dict[str, list[float]] = {"regmap": [], "floor": [], "python floor": [], "native": []}
        regmap.map_registers()
        try:
            library.fault_loop(100, 3)  # decode and compile the site once
            for _ in range(args.repeats):
                out = subprocess.run([floor, str(n), "1"], check=True, capture_output=True, text=True)
                rows["floor"].append(float(out.stdout.split()[0]))
                start = time.thread_time()
                result = library.fault_loop(n, 3)
                rows["regmap"].append((time.thread_time() - start) / n * 1e9)
                assert result == 3 * n, result
                out = subprocess.run([sys.executable, "-c", PYTHON_FLOOR, str(library_path), str(n)],
                                     check=True, capture_output=True, text=True)
                rows["python floor"].append(float(out.stdout.split()[0]))
                iterations = 2_000_000
                start = time.thread_time()
                library.native_loop(iterations, 3)
                rows["native"].append((time.thread_time() - start) / iterations * 1e9)
            body, fast = handler_body_cost(library)
        finally:
            regmap.unmap_registers()

    median = {name: statistics.median(values) for name, values in rows.items()}
    report = {
        "faults_per_loop": n, "repeats": args.repeats,
        "ns_per_fault": median,
        "regmap_over_floor": median["regmap"] / median["floor"],
        "python_floor_over_floor": median["python floor"] / median["floor"],
        "regmap_over_native": median["regmap"] / median["native"],
        "breakdown_ns": {
            "kernel (floor)": median["floor"],
            "ctypes callback entry/exit": median["python floor"] - median["floor"],
            "handler body (Python)": body,
            "  of which emulator fast function": fast,
            "unaccounted": median["regmap"] - median["python floor"] - body,
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"one fault, median of {args.repeats} loops of {n} faults (ns per iteration):")
    for name in ("native", "floor", "python floor", "regmap"):
        spread = f"(min {min(rows[name]):.1f}, max {max(rows[name]):.1f})"
        print(f"  {name:14s} {median[name]:10.1f}  {spread}")
    print(f"regmap / floor (bare C handler): {report['regmap_over_floor']:.2f}x   (target: 2x)")
    print(f"python floor / floor:            {report['python_floor_over_floor']:.2f}x")
    print(f"regmap / native add rax, rcx:    {report['regmap_over_native']:.0f}x")
    print("where regmap's time goes (ns):")
    for name, value in report["breakdown_ns"].items():
        print(f"  {name:36s} {value:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
