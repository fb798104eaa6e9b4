"""issue 10's table, form by form: each row a ratio to a floor measured in the same run.

In-process rows (``form_cost_loops.s``): a loop runs one form that faults into
the window per iteration, under ``regmap.map_registers()`` and under a C
SIGSEGV handler that does that form's work on the ucontext and nothing else
(``form_cost_floor.c``), in this process, on the same alternate stack (the C
handler is swapped in over regmap's with SA_ONSTACK and swapped out again).
Both are timed with the thread's CPU time; the two alternate form by form and
round by round, so machine noise hits both alike.  Each loop's result is
checked to be the same under both.

Other rows:

- traced: ``add rax, [8]`` under ``regmap.trace.run_traced`` (what ``regmap
  exec`` runs) against ``bare_tracer.c``, a C tracer doing GETREGS, the add,
  SETREGS, CONT; the program times each fault (trace_cost.py's program);
  tracer and program are pinned to one CPU;
- start-up: wall (and CPU) time of ``regmap exec /bin/true`` minus that of
  ``/bin/true`` in the same round, for the console script users run (the
  ``regmap`` beside sys.executable: pip's generated script), for ``python -m
  regmap`` and, for scale, for ``python -c pass`` (the interpreter alone), after
  one run of each that leaves the bytecode cache a normal install has; with
  valgrind, also the instructions one run of each executes (callgrind), which
  the load does not move;
- sites: warm cost per fault with N distinct sites (N copies of ``add rax,
  [8]`` in generated code, run once cold, then timed, each pass at least
  200,000 faults) as a ratio to the warm cost at 1,000 sites, and the growth
  of the resident set; each N in a fresh process.

The machine this was written on has 2 CPUs shared with other work: figures move by tens of
per cent between runs.  Every row is the median over rounds with the spread (min .. max of
the per-round ratios).  Needs gcc and Linux x86-64.

    .venv/bin/python benchmarks/form_cost.py [--rounds R] [--faults N] [--sites 1000,200000,1000000]
"""
from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ADD_RAX_8 = bytes.fromhex("48 03 04 25 08 00 00 00")

# name in the table, loop symbol, floor handler index, faults per iteration, faults per loop
# (scaled down for the slow rows), target ratio
FORMS = (
    ("add rax, [8]", "loop_add_const", 0, 1, 1.0, 2),
    ("add rax, [rdi] (rdi = 8)", "loop_add_reg", 1, 1, 1.0, 3),
    ("xadd [8], rax", "loop_xadd", 2, 1, 1.0, 3),
    ("movdqu xmm0, [0x100]", "loop_movdqu", 3, 1, 1.0, 3),
    ("paddd xmm1, [0]", "loop_paddd", 4, 1, 1.0, 3),
    ("push qword [8] / pop qword [0x10]", "loop_push_pop", 5, 2, 1.0, 3),
    ("rep movsb, 64 bytes from the window", "loop_rep_movsb", 6, 1, 0.05, 15),
)
CALLBACK_FLOOR = 7      # form_cost_floor.c: an empty ctypes callback under a C handler


def build(directory: Path) -> dict[str, Path]:
    gcc = shutil.which("gcc")
    if gcc is None:
        sys.exit("form_cost: gcc is needed to build the loops and the C floors")
    out = {"library": directory / "libformcost.so", "tracer": directory / "bare_tracer",
           "program": directory / "faults"}
    subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-o", out["library"],
                    HERE / "form_cost_floor.c", HERE / "form_cost_loops.s"], check=True)
    subprocess.run([gcc, "-O2", "-o", out["tracer"], HERE / "bare_tracer.c"], check=True)
    sys.path.insert(0, str(HERE))
    from trace_cost import PROGRAM
    source = directory / "faults.c"
    source.write_text(PROGRAM)
    subprocess.run([gcc, "-O2", "-o", out["program"], source], check=True)
    return out


def ratios_summary(ratios: list[float]) -> tuple[float, float, float]:
    return statistics.median(ratios), min(ratios), max(ratios)


# -- in-process forms -------------------------------------------------------------------------

def timed(loop, n: int, arg: int) -> tuple[float, int]:
    start = time.thread_time()
    result = loop(n, arg)
    return time.thread_time() - start, result


def in_process(library, rounds: int, faults: int) -> dict[str, list[tuple[float, float]]]:
    """Per form, per round: (regmap ns per fault, floor ns per fault)."""
    import regmap
    buffer = ctypes.create_string_buffer(4096)
    arg_of = {"loop_rep_movsb": ctypes.addressof(buffer)}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in FORMS}
    regmap.map_registers()
    try:
        for name, symbol, _, per, _, _ in FORMS:
            getattr(library, symbol)(50, arg_of.get(symbol, 3))     # decode and compile once
        for _ in range(rounds):
            for name, symbol, floor, per, scale, _ in FORMS:
                loop, arg = getattr(library, symbol), arg_of.get(symbol, 3)
                n = max(10, int(faults * scale))
                if library.floor_install(floor):
                    sys.exit("form_cost: sigaction failed")
                try:
                    floor_time, floor_result = timed(loop, n, arg)
                finally:
                    library.floor_restore()
                regmap_time, regmap_result = timed(loop, n, arg)
                if symbol not in ("loop_movdqu", "loop_paddd", "loop_rep_movsb") \
                        and floor_result != regmap_result:
                    sys.exit(f"form_cost: {name}: {regmap_result:#x} under regmap, "
                             f"{floor_result:#x} under the C floor")
                scale_ns = 1e9 / (n * per)
                samples[name].append((regmap_time * scale_ns, floor_time * scale_ns))
    finally:
        regmap.unmap_registers()
    return samples


def callback_cost(library, rounds: int, faults: int) -> list[tuple[float, float]]:
    """An empty ctypes callback under a C handler, against the C handler alone (ns per fault)."""
    callback = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(
        lambda signo, info, ctx: None)
    library.floor_set_callback(callback)
    out = []
    for _ in range(rounds):
        times = []
        for floor in (CALLBACK_FLOOR, 0):
            library.floor_install(floor)
            try:
                times.append(timed(library.loop_add_const, faults, 3)[0] * 1e9 / faults)
            finally:
                library.floor_restore()
        out.append(tuple(times))
    return out


# -- traced -------------------------------------------------------------------------------------

def traced(paths: dict[str, Path], rounds: int, faults: int) -> list[tuple[float, float]]:
    """(regmap exec, bare C tracer) median ns per fault, per round, both pinned to one CPU."""
    sys.path.insert(0, str(HERE))
    from trace_cost import regmap_faults
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {max(allowed)})
    out = []
    try:
        for _ in range(rounds):
            bare = subprocess.run([paths["tracer"], paths["program"], str(faults)], check=True,
                                  capture_output=True, text=True).stdout.split()
            emulated = regmap_faults(str(paths["program"]), faults).split()
            if int(bare[2]) != faults or int(emulated[2]) != faults:
                sys.exit(f"form_cost: traced results differ: {bare} {emulated}")
            out.append((float(emulated[0]), float(bare[0])))
    finally:
        os.sched_setaffinity(0, allowed)
    return out


# the start-up rows, each timed against /bin/true: name, what the row says, target.  The
# console script is how users run regmap (pip's generated script: `import re`, then `from
# regmap.cli import main`); `-m` adds runpy; `python -c pass` is the interpreter's own start.
STARTUP_RUNS = (
    ("console script", "regmap exec /bin/true (console script)", "<= +40 ms"),
    ("python -m regmap", "python -m regmap exec /bin/true", ""),
    ("python -c pass", "python -c pass (the interpreter alone)", ""),
)


def startup_commands() -> tuple[dict[str, list[str]], dict]:
    """The STARTUP_RUNS commands there are here (the console script is the `regmap` beside
    sys.executable), and their environment, with the bytecode cache a normal install has:
    regmap's compiled into its __pycache__ directories (as pip does), whatever
    PYTHONDONTWRITEBYTECODE says here; each is run once, so the standard library's is warm."""
    import regmap
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    package = Path(regmap.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    script = Path(sys.executable).parent / "regmap"
    commands = {"console script": [str(script), "exec", "/bin/true"] if script.exists() else None,
                "python -m regmap": [sys.executable, "-m", "regmap", "exec", "/bin/true"],
                "python -c pass": [sys.executable, "-c", "pass"]}
    commands = {name: argv for name, argv in commands.items() if argv is not None}
    for argv in commands.values():
        subprocess.run(argv, check=True, env=env)
    return commands, env


def startup(rounds: int, commands: dict[str, list[str]], env: dict) -> dict[str, list[tuple[float, float]]]:
    """Per command, per round: (wall, CPU) seconds over those of /bin/true in the same round."""
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(rounds):
        bare_wall, bare_cpu = timed_run(["/bin/true"], env)
        for name, argv in commands.items():
            wall, cpu = timed_run(argv, env)
            out[name].append((wall - bare_wall, cpu - bare_cpu))
    return out


def instructions(argv: list[str], env: dict) -> int | None:
    """User-space instructions one run of ``argv`` executes in its own process (valgrind's
    callgrind; the program a traced run execs is not counted): unlike time, the same under
    any load.  None without valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    done = subprocess.run([valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
                          env=env, capture_output=True, text=True, check=True)
    first = re.search(r"^==(\d+)==", done.stderr, re.MULTILINE)
    counts = dict(re.findall(r"^==(\d+)== Collected : (\d+)", done.stderr, re.MULTILINE))
    return int(counts[first.group(1)]) if first and first.group(1) in counts else None


def timed_run(argv: list[str], env: dict) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``argv``."""
    start, used = time.perf_counter(), children_cpu()
    subprocess.run(argv, check=True, env=env)
    return time.perf_counter() - start, children_cpu() - used


def children_cpu() -> float:
    """User + system CPU seconds of the waited-for children so far (the load does not inflate
    it as it does the wall time)."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- many sites ---------------------------------------------------------------------------------

WARM_FAULTS = 200_000    # at least this many faults per timed warm pass (1 000 sites: 200 runs)


def sites_child(count: int, passes: int) -> None:
    """In a fresh process: `count` distinct sites, cold once, then timed warm; prints
    ``ns-per-warm-fault rss-growth-bytes``."""
    import regmap
    size = count * len(ADD_RAX_8) + 1
    region = mmap.mmap(-1, size, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    region.write(ADD_RAX_8 * count + b"\xc3")
    address = ctypes.addressof(ctypes.c_char.from_buffer(region))
    run = ctypes.CFUNCTYPE(ctypes.c_long)(address)
    regmap.map_registers()
    try:
        rss_before = resident()
        run()                                           # cold: every site decoded once
        rss_after = resident()
        warm = []
        repeat = max(1, WARM_FAULTS // count)     # a small count's pass runs the loop again
        for _ in range(passes):
            start = time.thread_time()
            for _ in range(repeat):
                run()
            warm.append((time.thread_time() - start) / (count * repeat) * 1e9)
    finally:
        regmap.unmap_registers()
    print(statistics.median(warm), rss_after - rss_before)


def resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * mmap.PAGESIZE


def sites(counts: list[int], rounds: int, passes: int) -> dict[int, list[tuple[float, int]]]:
    out: dict[int, list[tuple[float, int]]] = {count: [] for count in counts}
    for _ in range(rounds):
        for count in counts:
            line = subprocess.run([sys.executable, __file__, "--sites-child", str(count),
                                   "--site-passes", str(passes)],
                                  check=True, capture_output=True, text=True).stdout.split()
            out[count].append((float(line[0]), int(line[1])))
    return out


# -- report -------------------------------------------------------------------------------------

def row(name: str, ratios: list[float], target: str, unit: str = "x") -> str:
    median, low, high = ratios_summary(ratios)
    return f"  {name:42s} {median:8.2f}{unit} ({low:.2f} .. {high:.2f})   target {target}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--faults", type=int, default=4000, help="faults per in-process loop")
    parser.add_argument("--traced-faults", type=int, default=5000)
    parser.add_argument("--sites", default="1000,200000,1000000", help="distinct-site counts")
    parser.add_argument("--site-rounds", type=int, default=2)
    parser.add_argument("--site-passes", type=int, default=2, help="warm passes timed per count")
    parser.add_argument("--only", default="forms,callback,traced,startup,sites")
    parser.add_argument("--sites-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sites_child:
        sites_child(args.sites_child, args.site_passes)
        return 0
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        sys.exit("form_cost: needs Linux on x86-64")
    only = set(args.only.split(","))
    print(f"rounds {args.rounds}, load average {os.getloadavg()[0]:.2f} "
          f"(2 shared CPUs: expect tens of per cent between runs); median (min .. max)")
    with tempfile.TemporaryDirectory(prefix="regmap-forms-") as tmp:
        paths = build(Path(tmp))
        library = ctypes.CDLL(str(paths["library"]))
        for _, symbol, *_ in FORMS:
            getattr(library, symbol).restype = ctypes.c_long
            getattr(library, symbol).argtypes = [ctypes.c_long, ctypes.c_long]
        library.floor_set_callback.argtypes = [ctypes.c_void_p]
        if "forms" in only:
            samples = in_process(library, args.rounds, args.faults)
            print("in-process, regmap / C handler for the same form (ns per fault regmap, floor):")
            for name, _, _, _, _, target in FORMS:
                pairs = samples[name]
                print(row(name, [r / f for r, f in pairs], f"<= {target}x")
                      + f"   [{statistics.median(r for r, _ in pairs):.0f} ns, "
                        f"{statistics.median(f for _, f in pairs):.0f} ns]")
        if "callback" in only:
            pairs = callback_cost(library, args.rounds, args.faults)
            extra = [c - f for c, f in pairs]
            print(f"  ctypes entry/exit (empty callback under a C handler): "
                  f"{statistics.median(extra):.0f} ns ({min(extra):.0f} .. {max(extra):.0f}) "
                  f"over the C handler's {statistics.median(f for _, f in pairs):.0f} ns")
        if "traced" in only:
            pairs = traced(paths, max(3, args.rounds // 3), args.traced_faults)
            print("traced, one CPU, regmap exec / bare C tracer (median ns per fault):")
            print(row("add rax, [8] under regmap exec", [r / b for r, b in pairs], "<= 2x")
                  + f"   [{statistics.median(r for r, _ in pairs):.0f} ns, "
                    f"{statistics.median(b for _, b in pairs):.0f} ns]")
        if "startup" in only:
            commands, env = startup_commands()
            runs = startup(args.rounds, commands, env)
            print("start-up, over /bin/true in the same round (wall; CPU = user + system):")
            for name, label, target in STARTUP_RUNS:
                if name not in runs:
                    print(f"  {label}: no {name} beside {sys.executable}, not measured")
                    continue
                print(row(label, [wall * 1000 for wall, _ in runs[name]], target, " ms"))
                print(row("  the same, CPU", [cpu * 1000 for _, cpu in runs[name]], "", " ms"))
            counts = {name: instructions(argv, env) for name, argv in commands.items()}
            if None not in counts.values():
                print("  instructions, one run each (valgrind --tool=callgrind; load does not "
                      "move them):")
                for name, label, _ in STARTUP_RUNS:
                    if name in counts:
                        print(f"  {label:42s} {counts[name] / 1e6:8.1f} M")
    if "sites" in only:
        counts = [int(c) for c in args.sites.split(",")]
        base = counts[0]
        results = sites(counts, args.site_rounds, args.site_passes)
        print(f"distinct sites, warm cost per fault / warm cost at {base} sites; "
              "resident growth after the cold pass:")
        for count in counts:
            ratios = [w / b for (w, _), (b, _) in zip(results[count], results[base])]
            growth = [m / 2**20 for _, m in results[count]]
            print(row(f"{count} sites", ratios, "<= 1.5x")
                  + f"   [{statistics.median(w for w, _ in results[count]):.0f} ns warm, "
                    f"+{statistics.median(growth):.0f} MiB]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
