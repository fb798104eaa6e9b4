"""Cost of one page-0 fault run by the native engine, against the C floor and the Python path.

In one run, interleaved repeat by repeat (the faulting thread's CPU time, as fault_cost.py):

- floor: fault_cost.py's C program, a bare SIGSEGV handler doing `add rax, [8]`'s work;
- native addsd: a loop of ``addsd xmm0, [8]`` under ``map_registers()`` (no Python semantics:
  the native engine runs it, through its fast path over the signal frame);
- native addsd generic: the same loop with the form's fast path taken away (the engine through
  the emulator's `Cpu`: what a trace, a gather or an x87 form pays);
- python paddq: a loop of ``paddq xmm1, [0x100]``, a form with Python semantics (its compiled
  fast path);
- native paddq: the same loop with that form handed to the native engine.

Needs gcc and Linux x86-64.  Usage: python benchmarks/native_cost.py [--faults N] [--repeats R]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fault_cost import build as build_floor  # noqa: E402


def build(directory: Path) -> Path:
    library = directory / "libnativecost.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", library, HERE / "native_cost_loops.s"], check=True)
    return library


def timed(function, n: int) -> float:
    start = time.thread_time()
    function(n, 3)
    return (time.thread_time() - start) / n * 1e9


def emulator_for(library, loop: str, code: str, native: bool, fast: bool):
    """An emulator whose form in ``loop`` (bytes ``code``) runs on the native engine if
    ``native`` (even with Python semantics), with its fast path only if ``fast``."""
    from regmap.x86 import Emulator
    from regmap.x86.native import family
    emulator = Emulator()
    start = ctypes.cast(getattr(library, loop), ctypes.c_void_p).value
    at = start + ctypes.string_at(start, 64).index(bytes.fromhex(code))
    form = emulator.form_at(at, ctypes.string_at(at, 15))
    if native and form.native is None:
        family.prepare(form, form.instruction, emulator._factory)
    if not fast:
        form.fast = None
    return emulator


ADDSD, PADDQ = "f2 0f 58 04 25 08 00 00 00", "66 0f d4 0c 25 00 01 00 00"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=5000, help="faults per timed loop")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import regmap
    with tempfile.TemporaryDirectory(prefix="regmap-bench-") as tmp:
        _, floor = build_floor(Path(tmp))
        library = ctypes.CDLL(str(build(Path(tmp))))
        for name in ("addsd_loop", "paddq_loop"):
            getattr(library, name).restype = ctypes.c_long
            getattr(library, name).argtypes = [ctypes.c_long, ctypes.c_long]
        loops = {"native addsd": ("addsd_loop", None),
                 "native addsd generic": ("addsd_loop", emulator_for(library, "addsd_loop", ADDSD, True, False)),
                 "python paddq": ("paddq_loop", None),
                 "native paddq": ("paddq_loop", emulator_for(library, "paddq_loop", PADDQ, True, True))}
        n = args.faults
        rows: dict[str, list[float]] = {"floor": [], **{name: [] for name in loops}}
        for _ in range(args.repeats):
            out = subprocess.run([floor, str(n), "1"], check=True, capture_output=True, text=True)
            rows["floor"].append(float(out.stdout.split()[0]))
            for name, (loop, emulator) in loops.items():
                regmap.map_registers(emulator=emulator)
                try:
                    rows[name].append(timed(getattr(library, loop), n))
                finally:
                    regmap.unmap_registers()
    median = {name: statistics.median(values) for name, values in rows.items()}
    report = {"faults_per_loop": n, "repeats": args.repeats, "ns_per_fault": median,
              "spread_ns": {name: [min(v), max(v)] for name, v in rows.items()},
              "native_over_floor": median["native addsd"] / median["floor"],
              "generic_over_floor": median["native addsd generic"] / median["floor"],
              "native_over_python_compiled": median["native paddq"] / median["python paddq"]}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"one fault, median of {args.repeats} loops of {n} faults (ns per iteration):")
    for name, values in rows.items():
        print(f"  {name:21s} {median[name]:10.1f}  (min {min(values):.1f}, max {max(values):.1f})")
    print(f"native engine (addsd) / C floor:               {report['native_over_floor']:.1f}x")
    print(f"native engine without its fast path / C floor: {report['generic_over_floor']:.1f}x")
    print(f"native engine / Python compiled path (paddq):  {report['native_over_python_compiled']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
