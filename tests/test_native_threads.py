"""The native engine in-process with several threads and a signal arriving during its steps.

Threads run native forms on the window at the same time, each with its own registers, while an
interval timer interrupts the process every millisecond: every thread's result must be its own,
and the timer's handler must have run.  And while one thread runs native forms, another's own
faults (divide errors, ud2) must all reach its own handlers, routed through the stub's handler
or not.
"""
from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import python_env  # noqa: E402

PROGRAMS = Path(__file__).resolve().parent / "programs"
CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = [
    pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                       reason="the native engine needs Linux on x86-64"),
    pytest.mark.skipif(CC is None, reason="no C compiler to build the test snippet"),
]

SCRIPT = textwrap.dedent('''
    import ctypes, signal, sys, threading
    import regmap
    lib = ctypes.CDLL(sys.argv[1])
    lib.window_sum.argtypes = [ctypes.c_long, ctypes.c_double]
    lib.window_sum.restype = ctypes.c_double
    ticks = []
    signal.signal(signal.SIGALRM, lambda *_: ticks.append(1))
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    regmap.map_registers()
    results = {}
    def work(x):
        results[x] = lib.window_sum(300, x)
    threads = [threading.Thread(target=work, args=(float(x),)) for x in (1, 2, 3, 5)]
    for t in threads:
        t.start()
    work(7.0)
    for t in threads:
        t.join()
    signal.setitimer(signal.ITIMER_REAL, 0)
    regmap.unmap_registers()
    print(sorted(results.items()), bool(ticks))
''')


def test_threads_keep_their_own_state_and_a_timer_signal_does_no_harm(tmp_path):
    library = tmp_path / "libthreads.so"
    subprocess.run([CC, "-shared", "-fPIC", "-o", library, PROGRAMS / "native_threads.s"], check=True)
    script = tmp_path / "threads.py"
    script.write_text(SCRIPT)
    result = subprocess.run([sys.executable, script, library], capture_output=True, text=True, timeout=120,
                            env=python_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(sorted((x, 300 * x) for x in (1.0, 2.0, 3.0, 5.0, 7.0))) + " True"


FAULTS_C = textwrap.dedent(r'''
    #define _GNU_SOURCE
    #include <signal.h>
    #include <string.h>
    #include <ucontext.h>

    static volatile long fpe_count, ill_count;

    static void skip(void *context, int length, volatile long *count) {
        ucontext_t *uc = context;
        uc->uc_mcontext.gregs[REG_RIP] += length;
        ++*count;
    }
    static void on_fpe(int sig, siginfo_t *info, void *context) { skip(context, 3, &fpe_count); }
    static void on_ill(int sig, siginfo_t *info, void *context) { skip(context, 2, &ill_count); }

    void install(void) {
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_flags = SA_SIGINFO;
        action.sa_sigaction = on_fpe;
        sigaction(SIGFPE, &action, 0);
        action.sa_sigaction = on_ill;
        sigaction(SIGILL, &action, 0);
    }

    /* n divide errors (idiv rcx, 3 bytes) and n ud2 (2 bytes), each skipped by its handler */
    long faults(long n) {
        for (long i = 0; i < n; i++) {
            __asm__ volatile("xor %%ecx, %%ecx\n\tmov $1, %%eax\n\tcqo\n\tidiv %%rcx" ::: "rax", "rcx", "rdx");
            __asm__ volatile("ud2");
        }
        return fpe_count * 1000000 + ill_count;
    }

    /* n times fadd qword [8] (an x87 form: the native engine routes SIGFPE while it runs) */
    double x87_sum(long n, double x) {
        double out;
        __asm__ volatile("fldz\n"
                         "1:\n\tmovq %[x], %%rax\n\tmovq %%rax, 8\n\tfaddl 8\n\tdec %[n]\n\tjnz 1b\n"
                         "\tfstpl %[out]"
                         : [out] "=m"(out), [n] "+r"(n) : [x] "m"(x) : "rax", "memory");
        return out;
    }
''')

FAULTS_SCRIPT = textwrap.dedent('''
    import ctypes, sys, threading
    import regmap
    lib = ctypes.CDLL(sys.argv[1])
    lib.faults.argtypes, lib.faults.restype = [ctypes.c_long], ctypes.c_long
    lib.x87_sum.argtypes, lib.x87_sum.restype = [ctypes.c_long, ctypes.c_double], ctypes.c_double
    lib.install()
    regmap.map_registers()
    counts = []
    other = threading.Thread(target=lambda: counts.append(lib.faults(20000)))
    other.start()
    total = lib.x87_sum(3000, 1.5)
    other.join()
    regmap.unmap_registers()
    print(total, counts)
''')


def test_another_threads_faults_reach_its_handlers_during_native_steps(tmp_path):
    """While one thread's x87 forms run on the native engine (SIGFPE routed to the stub while it
    runs, SIGILL on a plan's first run), another thread's divide errors and ud2 reach that
    thread's own handlers, every one of them, whether or not the stub's handler was installed."""
    source, library = tmp_path / "faults.c", tmp_path / "libfaults.so"
    source.write_text(FAULTS_C)
    subprocess.run([CC, "-O1", "-shared", "-fPIC", "-o", library, source], check=True)
    script = tmp_path / "faults.py"
    script.write_text(FAULTS_SCRIPT)
    result = subprocess.run([sys.executable, script, library], capture_output=True, text=True, timeout=120,
                            env=python_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(3000 * 1.5), f"[{20000 * 1000000 + 20000}]"]
