"""Hot-site translation: a 10-million-iteration ``add rax, [8]`` loop, four ways, two runtimes.

In one run, interleaved repeat by repeat:

in-process (``map_registers``), the loop of ``fault_cost_loop_inprocess.s`` called through ctypes:
- native: the same loop with ``add rax, rcx`` (``native_loop``);
- translated: ``map_registers(translate=3)``: three faults, then the site is ``add rax, rcx``;
- emulated: ``map_registers(translate=0)``, every iteration a fault;
- floor: the bare C SIGSEGV handler of ``fault_cost_floor.c`` (the kernel's delivery and sigreturn);

under the tracer (``regmap exec``), a C program running the same loop, timing itself:
- native: the program's ``native_loop``, no tracer;
- translated: ``run_traced(..., translate=3)`` (``regmap exec --translate=3``);
- emulated: ``run_traced(...)`` (plain ``regmap exec``);
- floor: the bare ptrace round trip of ``trace_cost.py`` (stop, GETREGS, skip, SETREGS, CONT).

The emulated and floor rows fault on every iteration: they run ``--faults`` iterations (20 000
by default) and the figure for 10 million is that cost per iteration times 10 million
(extrapolated, marked ``*``).  The native and translated rows run all 10 million.  In-process
times are the thread's CPU time; the traced program's are CLOCK_MONOTONIC wall time (its
faults are served by another process).  Tracer and program share one CPU (``--cpu``).

    .venv/bin/python benchmarks/translate_cost.py [--iterations N] [--faults F] [--repeats R]

``--threads T``: the traced rows only, with T threads of the program each running the loop at
once (native, translated and emulated alike; the time is until the last is done): under
``--translate`` the tracer stops the other threads to write the site (trace/quiesce.py).

``--forms``: instead, issue 17's list of forms in-process, each a loop of the instruction (and a
decrement and branch): ns per iteration translated (``translate=3``: in place or through a
trampoline, after three faults), against the same instruction with its operand on an ordinary
64-byte aligned buffer at the same offset (native memory code), and against faulting on every
iteration (``translate=0``, ``--faults`` iterations).  Then the same forms traced: a program
linked with the loops, timing ``window_I`` itself (CLOCK_MONOTONIC) under
``regmap exec --translate=3`` (three warm-up iterations first) and under plain ``regmap exec``.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import trace_cost  # noqa: E402  (its bare ptrace loop is the tracer's floor)

LOOP_SOURCE = HERE / "fault_cost_loop_inprocess.s"
FLOOR_SOURCE = HERE / "fault_cost_floor.c"

# The traced program: the same loops, timed from inside.  ``prog N`` runs the window loop
# (what trace_cost's bare tracer expects), ``prog native N`` the native one; with THREADS=T in
# its environment, T threads run it at once (each N iterations; the time is until all are
# done).  Prints "nanoseconds rax" (rax: the common result, -1 if the threads differ).
TRACED_MAIN = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
long fault_loop(long n, long rcx);
long native_loop(long n, long rcx);
static long n;
static int native;
static long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}
static void *loop(void *out) {
    *(long *)out = native ? native_loop(n, 3) : fault_loop(n, 3);
    return NULL;
}
int main(int argc, char **argv) {
    native = argc > 2 && strcmp(argv[1], "native") == 0;
    n = atol(argv[argc - 1]);
    int threads = getenv("THREADS") ? atoi(getenv("THREADS")) : 1;
    threads = threads < 1 ? 1 : threads > 64 ? 64 : threads;
    pthread_t thread[64];
    long rax[64];
    long start = now();
    for (int i = 1; i < threads; i++)
        pthread_create(&thread[i], NULL, loop, &rax[i]);
    loop(&rax[0]);
    for (int i = 1; i < threads; i++)
        pthread_join(thread[i], NULL);
    long elapsed = now() - start;
    for (int i = 1; i < threads; i++)
        if (rax[i] != rax[0])
            rax[0] = -1;
    printf("%ld %ld\n", elapsed, rax[0]);
    return 0;
}
"""


def build(directory: Path) -> dict[str, Path]:
    gcc = shutil.which("gcc")
    if gcc is None:
        sys.exit("translate_cost: gcc is needed to build the loops and the floors")
    built = {"library": directory / "libloop.so", "floor": directory / "floor",
             "traced": directory / "traced", "tracer": directory / "bare_tracer"}
    main = directory / "traced_main.c"
    main.write_text(TRACED_MAIN)
    subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-o", built["library"], LOOP_SOURCE], check=True)
    subprocess.run([gcc, "-O2", "-o", built["floor"], FLOOR_SOURCE, LOOP_SOURCE], check=True)
    subprocess.run([gcc, "-O2", "-pthread", "-o", built["traced"], main, LOOP_SOURCE], check=True)
    subprocess.run([gcc, "-O2", "-o", built["tracer"], Path(__file__).with_name("bare_tracer.c")],
                   check=True)
    return built


def in_process(library, iterations: int, faults: int, floor: Path) -> dict[str, float]:
    """One repeat of the four in-process rows: nanoseconds for `iterations` iterations."""
    import regmap
    import regmap.runtime
    row = {}
    start = time.thread_time()
    assert library.native_loop(iterations, 3) == 3 * iterations
    row["native"] = (time.thread_time() - start) * 1e9

    regmap.runtime.reset_stats()
    regmap.map_registers(translate=3)
    try:
        start = time.thread_time()
        assert library.fault_loop(iterations, 3) == 3 * iterations
        row["translated"] = (time.thread_time() - start) * 1e9
        assert regmap.stats().emulated == 3, regmap.stats().emulated
    finally:
        regmap.unmap_registers()              # the original bytes go back

    regmap.map_registers(translate=0)
    try:
        library.fault_loop(100, 3)            # decode the site once, as fault_cost.py does
        start = time.thread_time()
        assert library.fault_loop(faults, 3) == 3 * faults
        row["emulated"] = (time.thread_time() - start) / faults * iterations * 1e9
    finally:
        regmap.unmap_registers()

    out = subprocess.run([floor, str(faults), "1"], check=True, capture_output=True, text=True)
    row["floor"] = float(out.stdout.split()[0]) * iterations
    return row


def traced_run(argv: list[str], translate: int, env: dict | None = None,
               fast_faults: bool = True) -> tuple[int, int]:
    """Run argv under run_traced, its stdout captured: (nanoseconds, rax)."""
    from regmap.trace import run_traced
    read_fd, write_fd = os.pipe()
    saved = os.dup(1)
    os.dup2(write_fd, 1)
    os.close(write_fd)
    try:
        status = run_traced(argv, translate=translate, env=env, fast_faults=fast_faults)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    with os.fdopen(read_fd) as output:
        text = output.read()
    if status != 0:
        raise SystemExit(f"the traced program failed (status {status}): {text}")
    elapsed, rax = text.split()
    return int(elapsed), int(rax)


def traced(program: Path, tracer: Path, iterations: int, faults: int,
           threads: int = 1) -> dict[str, float]:
    """One repeat of the traced rows; with `threads` > 1 the program's threads all run the loop
    (the floor stays the one-thread round trip: the bare tracer serves one thread)."""
    row = {}
    env = dict(os.environ, THREADS=str(threads))
    out = subprocess.run([program, "native", str(iterations)], check=True, capture_output=True,
                         text=True, env=env)
    row["native"] = float(out.stdout.split()[0])
    elapsed, rax = traced_run([str(program), str(iterations)], translate=3, env=env)
    assert rax == 3 * iterations, rax
    row["translated"] = float(elapsed)
    elapsed, rax = traced_run([str(program), str(faults)], translate=0, env=env)
    assert rax == 3 * faults, rax
    row["emulated"] = elapsed / faults * iterations
    elapsed, _rax = trace_cost.bare_round_trips(str(tracer), str(program), faults).split()
    row["floor"] = float(elapsed) / faults * iterations
    return row


def summarize(name: str, rows: list[dict[str, float]], iterations: int) -> dict:
    medians = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    print(f"{name}: {iterations:,} iterations of add rax, [8], median of {len(rows)} "
          f"(min .. max), milliseconds")
    for key in ("native", "translated", "emulated", "floor"):
        values = [r[key] / 1e6 for r in rows]
        mark = "*" if key in ("emulated", "floor") else " "
        print(f"  {key:11s}{mark} {medians[key] / 1e6:12.2f}   ({min(values):.2f} .. {max(values):.2f})"
              f"   {medians[key] / iterations:10.2f} ns/iteration")
    ratios = {"translated / native": medians["translated"] / medians["native"],
              "emulated / translated": medians["emulated"] / medians["translated"],
              "floor / translated": medians["floor"] / medians["translated"]}
    fastest = {key: min(r[key] for r in rows) for key in rows[0]}
    print(f"  translated / native:    {ratios['translated / native']:8.2f}x   (target: <= 2x; "
          f"of the fastest runs {fastest['translated'] / fastest['native']:.2f}x)")
    print(f"  emulated / translated:  {ratios['emulated / translated']:8.0f}x   (target: >= 1000x)")
    print(f"  floor / translated:     {ratios['floor / translated']:8.0f}x")
    return ratios


# (the window instruction, set-up before the loop, clean-up after); the native row runs it with
# [N] replaced by [rip + buffer + N] (zeros: the set-up zeroes the window registers a floating-
# point form reads, which would otherwise be whatever the caller left, NaNs and denormals)
FORMS = [
    ("mov rax, qword ptr [4]", "", ""),
    ("mov dword ptr [8], eax", "", ""),
    ("mov byte ptr [1], 7", "", ""),
    ("add rdx, qword ptr [0x7c]", "", ""),            # r15[63:32] and the rip slot's low half
    ("or qword ptr [0x88], 0x400", "", "cld"),        # the rflags slot: sets DF
    ("movdqu xmm0, xmmword ptr [0]", "", ""),
    ("paddd xmm1, xmmword ptr [0x100]", "", ""),
    ("vpaddd ymm1, ymm2, ymmword ptr [0x100]", "", "vzeroupper"),
    ("addsd xmm0, qword ptr [0x8]", "xor ecx, ecx", ""),
    ("fadd qword ptr [0x10]", "xor edx, edx\n    fldz", "fstp st(0)"),
    ("aesenc xmm4, xmmword ptr [0x120]", "", ""),
    ("vpaddd zmm1, zmm2, zmmword ptr [0x100]", "", "vzeroupper"),
    # register-addressed, 3 bytes: its stub takes the loop's dec r10 too (a punned jump, x86/stub.py)
    ("mov rax, qword ptr [rdi]", "xor edi, edi", ""),
    # register-addressed, 7 bytes (a disp32 of 0): a jmp to its stub (x86/stub.py)
    ("{disp32} mov rax, qword ptr [rdi]", "xor edi, edi", ""),
]


def forms_source(host_flags: set[str]) -> tuple[str, list[str]]:
    """Two loops per form, window_I(n) and native_I(n) (counter in r10, untouched by the forms)."""
    import re
    names, parts = [], [".intel_syntax noprefix", ".text"]
    for i, (text, before, after) in enumerate(FORMS):
        if "zmm" in text and "avx512f" not in host_flags:
            continue
        names.append(text)
        native = re.sub(r"\[(0x[0-9a-f]+|\d+)\]", r"[rip + buffer + \1]", text)
        native = native.replace("[rdi]", "[rip + buffer]")
        for kind, body in (("window", text), ("native", native)):
            parts.append(f"""
    .globl {kind}_{i}
{kind}_{i}:
    mov r10, rdi
    {before}
    .balign 16
1:  {body}
    dec r10
    jnz 1b
    {after}
    ret""")
    parts.append('.data\n.balign 64\nbuffer: .space 4096\n.section .note.GNU-stack,"",@progbits\n')
    return "\n".join(parts), names


def register_loop(body: bytes):
    """``f(n)``: `body` n times in the forms' loop shape (counter in r10), generated here."""
    import ctypes as c

    from regmap.x86.machine_code import code_page

    def generate(base: int) -> bytes:
        head = bytes.fromhex("4989fa")                     # mov r10, rdi
        head += b"\x90" * (-(base + len(head)) % 16)       # the loop 16-byte aligned, as .balign
        loop = body + bytes.fromhex("49ffca")              # dec r10
        back = -(len(loop) + 6) & 0xFFFFFFFF
        return head + loop + b"\x0f\x85" + back.to_bytes(4, "little") + bytes.fromhex("c5f877c3")
    return c.CFUNCTYPE(None, c.c_long)(code_page(generate))   # (jnz back; vzeroupper; ret)


def forms_table(directory: Path, iterations: int, faults: int, repeats: int) -> list[str]:
    import regmap
    import regmap.runtime
    from regmap.x86 import host
    source, names = forms_source(set(host.cpu_flags()))
    (directory / "forms.s").write_text(source)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", directory / "libforms.so", directory / "forms.s"],
                   check=True)
    library = ctypes.CDLL(str(directory / "libforms.so"))
    indexes = [i for i, (text, _, _) in enumerate(FORMS) if text in names]
    rows: dict[str, dict[str, list[float]]] = {
        t: {"native": [], "translated": [], "faulting": [], "python": [], "register": []}
        for t in names}
    kinds: dict[str, str] = {}
    twins: dict[str, object] = {}       # text -> its register form's loop
    for _ in range(repeats):
        for i in indexes:
            text = FORMS[i][0]
            window, native = getattr(library, f"window_{i}"), getattr(library, f"native_{i}")
            window.argtypes = native.argtypes = [ctypes.c_long]
            start = time.thread_time()
            native(iterations)
            rows[text]["native"].append((time.thread_time() - start) * 1e9 / iterations)
            regmap.runtime.reset_stats()
            regmap.map_registers(translate=3)
            try:
                window(3)
                start = time.thread_time()
                window(iterations)
                rows[text]["translated"].append((time.thread_time() - start) * 1e9 / iterations)
                translation = next(iter(regmap.stats().translated), None)
                kinds[text] = translation.kind if translation else "not translated"
            finally:
                regmap.unmap_registers()
            if kinds[text] == "in place":     # the register form it became, without the CS
                if text not in twins:           # prefixes that pad it (one code page a form)
                    twins[text] = register_loop(translation.new.lstrip(b"\x2e"))
                twin = twins[text]
                start = time.thread_time()
                twin(iterations)
                rows[text]["register"].append((time.thread_time() - start) * 1e9 / iterations)
            for column, fast in (("faulting", True), ("python", False)):
                regmap.map_registers(translate=0, fast_faults=fast)
                try:
                    window(100)
                    start = time.thread_time()
                    window(faults)
                    rows[text][column].append((time.thread_time() - start) * 1e9 / faults)
                finally:
                    regmap.unmap_registers()
    print(f"in-process, {iterations:,} iterations per form (faulting: {faults:,}), median of "
          f"{repeats}, ns per iteration (min .. max); load average {os.getloadavg()[0]:.2f}")
    print("  (faulting: every execution faults, served by the handler's machine code once the site "
          "is known; python: fast_faults=False, every fault through Python)")
    print(f"  {'form':40s} {'how':14s} {'native':>14s} {'translated':>20s} {'faulting':>10s}"
          f" {'python':>8s} {'tr/native':>9s} {'fault/tr':>9s}")
    for text in names:
        med = {k: statistics.median(v) for k, v in rows[text].items() if v}
        spread = f"({min(rows[text]['translated']):.1f}..{max(rows[text]['translated']):.1f})"
        print(f"  {text:40s} {kinds[text]:14s} {med['native']:14.2f} {med['translated']:8.2f} "
              f"{spread:>11s} {med['faulting']:10.0f} {med['python']:8.0f} "
              f"{med['translated'] / med['native']:8.2f}x {med['faulting'] / med['translated']:8.0f}x")
    print("  in place against the register form it became, run natively in the same loop:")
    for text in names:
        if rows[text]["register"]:
            translated = statistics.median(rows[text]["translated"])
            register = statistics.median(rows[text]["register"])
            print(f"  {text:40s} {register:8.2f} ns register form, in place {translated:.2f}: "
                  f"{translated / register:.2f}x (target <= 2x)")
    return names


FORMS_MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#define FORM(i) void window_##i(long n);
%s
static void (*forms[])(long) = {%s};
int main(int argc, char **argv) {
    int form = atoi(argv[1]);
    long warm = atol(argv[2]), n = atol(argv[3]);
    struct timespec a, b;
    forms[form](warm);
    clock_gettime(CLOCK_MONOTONIC, &a);
    forms[form](n);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%%lld 0\n", (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec));
    return 0;
}
"""


def forms_traced(directory: Path, names: list[str], iterations: int, faults: int,
                 repeats: int) -> None:
    indexes = [i for i, (text, _, _) in enumerate(FORMS) if text in names]
    (directory / "forms_main.c").write_text(FORMS_MAIN % (
        "\n".join(f"FORM({i})" for i in indexes), ", ".join(
            f"[{n}] = window_{i}" for n, i in enumerate(indexes))))
    program = directory / "forms_traced"
    subprocess.run(["gcc", "-O2", "-o", program, directory / "forms_main.c", directory / "forms.s"],
                   check=True)
    rows = {t: {"translated": [], "faulting": [], "emulated": []} for t in names}
    for _ in range(repeats):
        for n, text in enumerate(names):
            elapsed, _ = traced_run([str(program), str(n), "3", str(iterations)], translate=3)
            rows[text]["translated"].append(elapsed / iterations)
            for column, fast in (("faulting", True), ("emulated", False)):
                elapsed, _ = traced_run([str(program), str(n), "100", str(faults)], translate=0,
                                        fast_faults=fast)
                rows[text][column].append(elapsed / faults)
    print(f"traced (regmap exec), {iterations:,} iterations per form (faulting: {faults:,}), "
          f"median of {repeats}, ns per iteration (min .. max)")
    print("  (faulting: every execution faults, sent to the site's trampoline by the tracer once "
          "it is known; emulated: --fast-faults 0)")
    print(f"  {'form':40s} {'translated':>20s} {'faulting':>10s} {'emulated':>9s} {'fault/tr':>9s}")
    for text in names:
        med = {k: statistics.median(v) for k, v in rows[text].items()}
        spread = f"({min(rows[text]['translated']):.1f}..{max(rows[text]['translated']):.1f})"
        print(f"  {text:40s} {med['translated']:8.2f} {spread:>11s} {med['faulting']:10.0f}"
              f" {med['emulated']:9.0f} {med['faulting'] / med['translated']:8.0f}x")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10_000_000)
    parser.add_argument("--faults", type=int, default=20_000,
                        help="iterations of the rows that fault every time (extrapolated)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--forms", action="store_true",
                        help="issue 17's list of forms, in-process (see the module's docstring)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of the traced program, each running the loop (the "
                             "traced rows only)")
    parser.add_argument("--cpu", default=None,
                        help="CPU to run on (default: the last allowed one; 'all' to leave it)")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        sys.exit("translate_cost: needs Linux on x86-64")
    if args.cpu != "all":
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {allowed[-1] if args.cpu is None else int(args.cpu)})
    if args.forms:
        with tempfile.TemporaryDirectory(prefix="regmap-translate-") as tmp:
            names = forms_table(Path(tmp), args.iterations, args.faults, args.repeats)
            forms_traced(Path(tmp), names, args.iterations, args.faults, args.repeats)
        return 0
    with tempfile.TemporaryDirectory(prefix="regmap-translate-") as tmp:
        built = build(Path(tmp))
        library = ctypes.CDLL(str(built["library"]))
        for name in ("fault_loop", "native_loop"):
            getattr(library, name).restype = ctypes.c_long
            getattr(library, name).argtypes = [ctypes.c_long, ctypes.c_long]
        local, remote = [], []
        for _ in range(args.repeats):
            if args.threads == 1:
                local.append(in_process(library, args.iterations, args.faults, built["floor"]))
            remote.append(traced(built["traced"], built["tracer"], args.iterations, args.faults,
                                 args.threads))
    print(f"load average {os.getloadavg()[0]:.2f}; * = {args.faults:,} faulting iterations, "
          f"extrapolated to {args.iterations:,}")
    if local:
        summarize("in-process (map_registers)", local, args.iterations)
    summarize("traced (regmap exec)" if args.threads == 1 else
              f"traced (regmap exec), {args.threads} threads each running the loop", remote,
              args.iterations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
