"""The in-process runtime on threads C created (pthread_create in a library built at test time).

Python never saw these threads: the handler's entry gives each one a thread state at its first
fault and a pthread key destructor frees it at thread exit (regmap.runtime.threadstate).  Every
result is compared with the same loop on registers, run by the CPU on the same thread's
arguments.  Faults that end the process run in child processes.
"""
from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import python_env, why_not_native  # noqa: E402

import regmap  # noqa: E402
from regmap.runtime import threadstate  # noqa: E402

REASON = why_not_native()
SOURCE = Path(__file__).resolve().parent / "snippets" / "c_threads.c"
FORMS = {"python form": "add", "native form": "addsd"}


def build(directory: Path) -> Path:
    out = directory / "libcthreads.so"
    subprocess.run(["gcc", "-masm=intel", "-O2", "-shared", "-fPIC", "-pthread", "-o", str(out),
                    str(SOURCE)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def library_path(tmp_path_factory):
    if REASON is not None:
        pytest.skip(REASON)
    return build(tmp_path_factory.mktemp("c-threads"))


@pytest.fixture(scope="module")
def lib(library_path):
    lib = ctypes.CDLL(str(library_path))
    c_long, c_void_p = ctypes.c_long, ctypes.c_void_p
    lib.short_lived.restype = c_long
    lib.short_lived.argtypes = [c_long, ctypes.c_int, c_void_p, c_void_p, c_long]
    lib.at_once.argtypes = [ctypes.c_int, c_void_p, c_long, c_long, c_long,
                            ctypes.POINTER(c_long), c_void_p]
    lib.waiters.restype = c_long
    for name in ("add", "addsd", "indexed", "div"):      # (tests/test_runtime_dispatch: all)
        for kind in ("window", "register"):
            getattr(lib, f"{name}_{kind}").restype = c_long
            getattr(lib, f"{name}_{kind}").argtypes = [c_long, c_long]
    lib.add_at.restype, lib.add_at.argtypes = c_long, [c_long, c_long]
    return lib


def function(lib, name: str) -> int:
    return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value


@pytest.fixture
def mapping():
    # every fault through Python (the thread states are what is tested here); the machine-code
    # path on C threads: tests/test_runtime_dispatch.py
    regmap.map_registers(fast_faults=False)
    try:
        yield
    finally:
        regmap.unmap_registers()


def resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.parametrize("form", FORMS)
def test_short_lived_threads_each_faulting_exactly(lib, mapping, form):
    kind = FORMS[form]
    assert lib.short_lived(500, 4, function(lib, kind + "_window"), function(lib, kind + "_register"),
                           3) == 0


@pytest.mark.parametrize("form", FORMS)
def test_eight_long_lived_threads_at_once(lib, mapping, form):
    kind = FORMS[form]
    results = (ctypes.c_long * 8)()
    n, repeat, rcx = 2000, 20, 0x3ff0000000000000   # rcx + i: 1.0 and the doubles just above
    assert lib.at_once(8, function(lib, kind + "_window"), n, rcx, repeat, results, None) == 0
    register = getattr(lib, kind + "_register")      # each thread adds up its bursts' results
    assert list(results) == [(register(n, rcx + i) * repeat) & (2**64 - 1) for i in range(8)]


def test_a_thread_keeps_its_thread_state_until_it_exits(lib, mapping):
    """Eight C threads that faulted and wait: eight more thread states, all gone once they end."""
    before = threadstate.count()
    results = (ctypes.c_long * 8)()
    runner = threading.Thread(target=lib.at_once, args=(8, function(lib, "add_then_wait"), 10, 5, 1,
                                                         results, None))
    runner.start()    # one Python thread more, calling at_once without the GIL
    try:
        deadline = time.monotonic() + 60
        while lib.waiters() < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lib.waiters() == 8
        assert threadstate.count() == before + 1 + 8
    finally:
        lib.release_waiters()
        runner.join()
    assert list(results) == [lib.add_register(10, 5 + i) for i in range(8)]
    assert threadstate.count() == before


def test_ten_thousand_short_lived_threads_leak_nothing(lib, mapping):
    window, register = function(lib, "add_window"), function(lib, "add_register")
    assert lib.short_lived(1000, 8, window, register, 1) == 0    # regions and caches warmed up
    states, memory = threadstate.count(), resident()
    assert lib.short_lived(10000, 8, window, register, 1) == 0
    assert threadstate.count() == states
    # a thread state kept per thread would hold at least its 16 KiB frame stack chunk
    grown = resident() - memory
    assert grown < 4 << 20, f"resident memory grew by {grown >> 10} KiB over 10,000 threads"


GENUINE = r"""
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
if sys.argv[3] == "mapped":
    import regmap
    regmap.map_registers()
    # the thread first faults on the window (it gets its thread state), then genuinely
    assert lib.short_lived(1, 1, ctypes.cast(lib.add_window, ctypes.c_void_p),
                           ctypes.cast(lib.add_register, ctypes.c_void_p), 3) == 0
results = (ctypes.c_long * 1)()
lib.at_once(1, ctypes.cast(getattr(lib, sys.argv[2]), ctypes.c_void_p), 1, 8, 1, results, None)
print("survived")
"""


@pytest.mark.parametrize("loop", ["wild_load", "hole_store"])
def test_a_genuine_fault_on_a_c_thread_kills_as_without_regmap(library_path, loop):
    outcomes = []
    for mode in ("bare", "mapped"):
        child = subprocess.run([sys.executable, "-c", GENUINE, str(library_path), loop, mode],
                               capture_output=True, text=True, env=python_env(), timeout=120)
        outcomes.append(child.returncode)
        assert "survived" not in child.stdout
    assert outcomes[0] == -signal.SIGSEGV
    assert outcomes[1] == outcomes[0]


NESTED = r"""
import ctypes, sys
import regmap
lib = ctypes.CDLL(sys.argv[1])
lib.add_window.restype = ctypes.c_long
lib.add_window.argtypes = [ctypes.c_long, ctypes.c_long]
import threading
seen, inside = [], threading.local()
def sink(event):    # native code, called without the GIL, faulting on the window itself
    if not getattr(inside, "yes", False):     # (its own faults are traced too: once)
        inside.yes = True
        seen.append(lib.add_window(2, 5))
        inside.yes = False
regmap.map_registers()
regmap.runtime.set_trace(sink)
results = (ctypes.c_long * 2)()
lib.at_once(2, ctypes.cast(lib.add_window, ctypes.c_void_p), 3, 7, 1, results, None)
regmap.runtime.set_trace(None)
print(list(results), sorted(set(seen)), len(seen))
"""


def test_a_fault_inside_the_handler_on_a_c_thread_is_served(library_path, lib):
    """A trace callback's native code faults on the window while its C thread is in the
    handler: served at once (the gate is the thread's own), not waited for."""
    child = subprocess.run([sys.executable, "-c", NESTED, str(library_path)], capture_output=True,
                           text=True, env=python_env(), timeout=120)
    assert child.returncode == 0, child.stderr
    expected = [lib.add_register(3, 7), lib.add_register(3, 8)]
    assert child.stdout.split("]")[0] + "]" == str(expected)
    assert f"[{lib.add_register(2, 5)}] " in child.stdout
