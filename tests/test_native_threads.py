"""The native engine in-process with several threads and a signal arriving during its steps.

Threads run native forms on the window at the same time, each with its own registers, while an
interval timer interrupts the process every millisecond: every thread's result must be its own,
and the timer's handler must have run.
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
