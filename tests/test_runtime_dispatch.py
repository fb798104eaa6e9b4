"""Fast faults: a known site's fault sent to its trampoline by machine code (regmap.runtime.dispatch).

Once a site has faulted `AFTER` times through Python, its faults are served by the handler's
machine code with no Python: on the main thread and on threads C created (which then never get a
Python thread state).  Every result is compared with the loop's register twin run by the CPU;
faults that end a process run in child processes and must end them as without regmap.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import python_env, why_not_native  # noqa: E402
from test_runtime_c_threads import lib, library_path  # noqa: E402,F401 - the library's fixtures

import regmap  # noqa: E402
from regmap.runtime import dispatch, threadstate  # noqa: E402

REASON = why_not_native()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
LOOPS = {"python form": "add", "native form": "addsd", "register-addressed": "indexed"}
FAULTS = 2000
AFTER = 2           # the tests plan sites early (the default waits for 16 faults)


@pytest.fixture
def mapping():
    regmap.unmap_registers()
    regmap.map_registers(fast_faults=AFTER)
    regmap.runtime.reset_stats()
    try:
        yield
    finally:
        regmap.unmap_registers()


def function(lib, name: str) -> int:
    return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value


@pytest.mark.parametrize("loop", LOOPS.values(), ids=LOOPS.keys())
def test_the_main_thread_s_known_sites_are_served_by_machine_code(lib, mapping, loop):
    window, register = getattr(lib, f"{loop}_window"), getattr(lib, f"{loop}_register")
    assert [window(FAULTS, rcx) for rcx in (7, -3)] == [register(FAULTS, rcx) for rcx in (7, -3)]
    stats = regmap.stats()
    assert stats.emulated == 2 * FAULTS
    # Python plans a site at its second fault (the register-addressed loop's second window
    # address at its third): the rest never reach it
    assert stats.dispatched >= 2 * FAULTS - 3


@pytest.mark.parametrize("loop", LOOPS.values(), ids=LOOPS.keys())
def test_eight_c_threads_at_once_never_enter_python_for_a_known_site(lib, mapping, loop):
    window, register = getattr(lib, f"{loop}_window"), getattr(lib, f"{loop}_register")
    assert window(10, 1) == register(10, 1)          # planned on this thread
    states, served = threadstate.count(), regmap.stats().dispatched
    results = (ctypes.c_long * 8)()
    assert lib.at_once(8, function(lib, f"{loop}_window"), 500, 11, 4, results, None) == 0
    assert list(results) == [4 * register(500, 11 + i) for i in range(8)]
    assert threadstate.count() == states        # not one of them needed a thread state
    assert regmap.stats().dispatched - served == 8 * 4 * 500


@pytest.mark.parametrize("loop", LOOPS.values(), ids=LOOPS.keys())
def test_c_threads_on_a_new_site_go_through_python_until_it_is_planned(lib, mapping, loop):
    register = getattr(lib, f"{loop}_register")
    results = (ctypes.c_long * 8)()
    assert lib.at_once(8, function(lib, f"{loop}_window"), 300, 5, 2, results, None) == 0
    assert list(results) == [2 * register(300, 5 + i) for i in range(8)]
    stats = regmap.stats()
    assert stats.emulated == 8 * 2 * 300
    assert 0 < stats.emulated - stats.dispatched < stats.emulated // 2   # Python, then not


def test_ten_thousand_short_lived_threads_on_a_known_site(lib, mapping):
    window, register = function(lib, "add_window"), function(lib, "add_register")
    assert lib.short_lived(8, 8, window, register, 3) == 0
    states = threadstate.count()
    assert lib.short_lived(10000, 8, window, register, 2) == 0
    assert threadstate.count() == states
    assert regmap.stats().dispatched >= 2 * 10000


def test_off_every_fault_goes_through_python(lib):
    regmap.unmap_registers()
    with regmap.mapped(fast_faults=False):
        regmap.runtime.reset_stats()
        assert lib.add_window(100, 3) == lib.add_register(100, 3)
        assert regmap.stats().dispatched == 0 and regmap.stats().emulated == 100


def test_a_register_addressed_site_is_sent_only_with_the_address_it_was_planned_for(lib, mapping):
    value = ctypes.c_long(1000)
    assert lib.add_at(10, 8) == 50                            # [8] is rcx = 5
    served = regmap.stats().dispatched
    assert lib.add_at(10, ctypes.addressof(value)) == 10000   # real memory: no fault at all
    assert lib.add_at(10, 8) == 50 and regmap.stats().dispatched == served + 10
    planned = [k for k in dispatch.PLANS.values() if k.registers]
    assert [set(k.records) for k in planned] == [{8}]


def test_stats_count_the_faults_served_by_machine_code_per_site(lib, mapping):
    assert lib.add_window(300, 2) == lib.add_register(300, 2)
    stats = regmap.stats()
    assert sum(stats.by_site.values()) == 300 and stats.by_mnemonic.get("add") == 300
    assert stats.dispatched >= 300 - AFTER
    regmap.runtime.reset_stats()
    assert regmap.stats().emulated == 0 and regmap.stats().dispatched == 0


def test_a_site_planned_again_reuses_its_record_and_counts_each_fault_once(lib, mapping):
    assert lib.add_window(50, 2) == lib.add_register(50, 2)
    records = len(dispatch._RECORDS)
    regmap.runtime.set_trace(lambda event: None)        # the table emptied...
    regmap.runtime.set_trace(None)
    assert lib.add_window(50, 2) == lib.add_register(50, 2)      # ...and the site planned again
    stats = regmap.stats()
    assert len(dispatch._RECORDS) == records
    assert stats.emulated == 100 and list(stats.by_site.values()) == [100]
    # planned at the AFTER-th fault; then again at the first after the table was emptied (or at
    # the AFTER-th, if the site cache let the site go meanwhile)
    assert (50 - AFTER) * 2 <= stats.dispatched <= (50 - AFTER) + 49


def test_tracing_sends_every_fault_through_python(lib, mapping):
    assert lib.add_window(50, 2) == lib.add_register(50, 2)      # planned, then served natively
    events = []
    regmap.runtime.set_trace(events.append)
    try:
        assert lib.add_window(50, 2) == lib.add_register(50, 2)
    finally:
        regmap.runtime.set_trace(None)
    assert len(events) == 50


def test_a_changed_instruction_is_decoded_again_not_sent_to_the_old_trampoline(mapping):
    add, sub = bytes.fromhex("48 03 04 25 08 00 00 00"), bytes.fromhex("48 2b 04 25 08 00 00 00")
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(b"\x31\xc0" + add + b"\xc3")                   # xor eax, eax; add; ret
    base = ctypes.addressof(ctypes.c_char.from_buffer(page))
    function = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long,
                                ctypes.c_long)(base)          # rcx ([8]) is the fourth argument
    assert [function(0, 0, 0, 21) for _ in range(5)] == [21] * 5
    served = regmap.stats().dispatched
    assert served >= 3
    page.seek(2)
    page.write(sub)
    assert [function(0, 0, 0, 21) for _ in range(5)] == [-21] * 5
    assert sum(regmap.stats().by_mnemonic.values()) == 10
    assert regmap.stats().dispatched >= served + 3


def test_a_forked_child_keeps_the_machine_code_path(lib, mapping):
    assert lib.add_window(10, 4) == lib.add_register(10, 4)
    pid = os.fork()
    if pid == 0:
        try:
            regmap.runtime.reset_stats()
            ok = lib.add_window(100, 4) == lib.add_register(100, 4) \
                and regmap.stats().dispatched == 100
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


CHILD = r"""
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
for name in ("add_at", "div_window", "div_register"):
    if hasattr(lib, name):
        getattr(lib, name).restype, getattr(lib, name).argtypes = ctypes.c_long, [ctypes.c_long] * 2
case, mode, thread = sys.argv[2], sys.argv[3], sys.argv[4]
lib.at_once.argtypes = [ctypes.c_int, ctypes.c_void_p] + [ctypes.c_long] * 3 + [ctypes.c_void_p] * 2
results = (ctypes.c_long * 1)()
def on_thread(name, n, argument):      # the last run: on this thread or on one C made
    if thread == "main":
        getattr(lib, name)(n, argument)
    else:
        lib.at_once(1, ctypes.cast(getattr(lib, name), ctypes.c_void_p), n, argument, 1, results, None)
if mode == "mapped":
    import regmap
    regmap.map_registers(fast_faults=2)
if case == "hole":
    # planned with [rdi] = [8]; then rdi = 0x98, a hole of the default layout
    if mode == "mapped":
        assert lib.add_at(10, 8) == 50
        print("planned", regmap.stats().dispatched, flush=True)
    on_thread("add_at", 1, 0x98)
else:
    # planned with rcx = 7; then rcx = 0: a divide error raised inside the trampoline
    if mode == "mapped":
        assert lib.div_window(10, 7) == 1000 // 7
        print("planned", regmap.stats().dispatched, flush=True)
    on_thread("div_window", 1, 0)
print("survived")
"""


@pytest.mark.parametrize("thread", ["main", "C thread"])
@pytest.mark.parametrize("case, signo", [("hole", signal.SIGSEGV), ("divide", signal.SIGFPE)])
def test_a_genuine_fault_at_a_known_site_ends_the_process_as_without_regmap(library_path, case, signo,
                                                                          thread):
    outcomes = {}
    for mode in ("bare", "mapped"):
        if mode == "bare" and case == "divide":
            # the loop's own #DE without regmap: div by a register holding 0 at the same place
            child = subprocess.run([sys.executable, "-c", "import ctypes,sys;"
                                    "ctypes.CDLL(sys.argv[1]).div_register(1, 0)", str(library_path)],
                                   capture_output=True, text=True, env=python_env(), timeout=120)
        else:
            child = subprocess.run([sys.executable, "-c", CHILD, str(library_path), case, mode, thread],
                                   capture_output=True, text=True, env=python_env(), timeout=120)
        assert "survived" not in child.stdout, child.stderr
        outcomes[mode] = (child.returncode, child.stdout)
    assert outcomes["bare"][0] == -signo
    assert outcomes["mapped"][0] == -signo
    served = int(outcomes["mapped"][1].split()[1])
    assert served >= 10 - AFTER     # the site was served by machine code before


MISALIGNED = r"""
import ctypes, sys
import regmap
from regmap.x86.machine_code import code_page
load = ctypes.CFUNCTYPE(None, ctypes.c_long)(code_page(lambda at: bytes.fromhex("660f6f07c3")))
regmap.map_registers(fast_faults=sys.argv[1] == "on")
for _ in range(20):
    load(0x100)          # movdqa xmm0, [rdi]: xmm0 itself, aligned
print("aligned", flush=True)
load(0x108)              # misaligned: the CPU's #GP, a genuine fault
print("survived")
"""


@pytest.mark.parametrize("fast", ["on", "off"])
def test_a_misaligned_sse_operand_at_a_compiled_site_is_a_genuine_fault_not_an_internal_error(fast):
    child = subprocess.run([sys.executable, "-c", MISALIGNED, fast], capture_output=True, text=True,
                           env=python_env(), timeout=120)
    assert child.stdout == "aligned\n"
    assert child.returncode == -signal.SIGSEGV
    assert "internal error" not in child.stderr, child.stderr


STACK_IN_THE_WINDOW = r"""
import ctypes
import regmap
from regmap.x86.machine_code import code_page
# rax = rdi; keep rsp in r10; rsp = 0x200 (in the window: rsp's own slot's neighbourhood);
# add rax, [8] (rcx: the fourth argument); rsp back; ret
code = bytes.fromhex("4889f8" "4989e2" "48c7c400020000" "48030425" "08000000" "4c89d4" "c3")
add = ctypes.CFUNCTYPE(ctypes.c_long, *[ctypes.c_long] * 4)(code_page(lambda at: code))
regmap.map_registers(fast_faults=2)
print([add(1, 0, 0, 5) for _ in range(6)], regmap.stats().dispatched)
"""


def test_a_site_run_with_the_stack_in_the_window_stays_with_python():
    """The trampoline's scratch lies below rsp: with rsp in page 0 it would be in the window."""
    child = subprocess.run([sys.executable, "-c", STACK_IN_THE_WINDOW], capture_output=True,
                           text=True, env=python_env(), timeout=120)
    assert child.returncode == 0, child.stderr
    assert child.stdout == "[6, 6, 6, 6, 6, 6] 0\n"


LONGJMP_SOURCE = r"""
#include <setjmp.h>
#include <signal.h>
#include <string.h>
static sigjmp_buf env;
static void on_segv(int signo) { (void)signo; siglongjmp(env, 1); }
void install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_segv;
    sigaction(SIGSEGV, &action, 0);
}
/* 1 if the long at `address` can be read, 0 if reading it faulted (the handler jumped back) */
long readable(long address) {
    if (sigsetjmp(env, 1))
        return 0;
    return *(volatile long *)address, 1;
}
long add_window(long n, long rcx) {
    long rax = 0;
    __asm__ volatile("1: add rax, qword ptr [8]\n\tdec %1\n\tjnz 1b"
                     : "+a"(rax), "+r"(n) : "c"(rcx) : "cc", "memory");
    return rax;
}
"""

LONGJMP = r"""
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.readable.restype = lib.add_window.restype = ctypes.c_long
lib.readable.argtypes, lib.add_window.argtypes = [ctypes.c_long], [ctypes.c_long, ctypes.c_long]
lib.install()                     # the program's handler first: regmap forwards genuine faults to it
import regmap
regmap.map_registers(fast_faults=int(sys.argv[2]))
value = ctypes.c_long(7)
results = []
for _ in range(3):
    results += [lib.readable(0x7000), lib.readable(ctypes.addressof(value)), lib.add_window(20, 2)]
print(results)
"""


@pytest.mark.parametrize("fast", [0, 2])
def test_a_program_handler_that_longjmps_out_of_a_forwarded_fault(tmp_path, fast):
    """A genuine SIGSEGV goes to the program's handler, which siglongjmps away: regmap's Python
    part has returned by then (the handler is jumped to from machine code), so nothing is left
    holding the GIL and the program goes on, window accesses included."""
    source, library = tmp_path / "longjmp.c", tmp_path / "liblongjmp.so"
    source.write_text(LONGJMP_SOURCE)
    subprocess.run(["gcc", "-masm=intel", "-O1", "-shared", "-fPIC", "-o", str(library), str(source)],
                   check=True)
    child = subprocess.run([sys.executable, "-c", LONGJMP, str(library), str(fast)],
                           capture_output=True, text=True, env=python_env(), timeout=60)
    assert child.returncode == 0, child.stderr
    assert child.stdout == str([0, 1, 40] * 3) + "\n"
