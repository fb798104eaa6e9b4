"""Genuine faults stay genuine: child processes, each run with and without regmap.

Every case runs the same Python program twice -- without regmap, then with
``regmap.map_registers()`` -- and compares how it ends: the signal, whether
a core was dumped, and (with ``faulthandler`` enabled) the traceback it
printed.  The wait status is read raw (``os.waitpid``) so the core-dump flag
is visible.
"""
from __future__ import annotations

import os
import re
import signal
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import SNIPPETS, build_library, python_env, why_not_native  # noqa: E402

REASON = why_not_native()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

CHILD = textwrap.dedent('''
    import ctypes, faulthandler, mmap, os, resource, signal, sys, tempfile
    sys.path.insert(0, {snippets!r})
    from runtime_build import declare

    mode, case, options = sys.argv[1], sys.argv[2], sys.argv[3:]
    os.chdir(os.environ["CHILD_CWD"])  # where a core file goes
    if "core" in options:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    else:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if "faulthandler" in options:
        faulthandler.enable()
    lib = declare(ctypes.CDLL({library!r}))
    if mode == "regmap":
        import regmap
        regmap.map_registers()
        assert lib.echo_rdi(5) == 5


    def read_only_page():
        return ctypes.cast(lib.load_from, ctypes.c_void_p).value  # code: readable, not writable


    def crash_site():
        if case == "wild pointer":
            lib.load_from(0xDEAD0000)
        elif case == "non-canonical pointer":
            lib.load_from(0x8000_0000_0000_0000)
        elif case == "write to read-only page":
            lib.store_to(read_only_page())
        elif case == "stack overflow":
            lib.overflow()
        elif case == "jump to 0":
            lib.jump_to(0)
        elif case == "jump into the window":
            lib.jump_to(8)
        elif case == "sent SIGSEGV":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif case == "past the end of a file":
            lib.load_from(bus())
        elif case == "unsupported instruction":
            lib.unsupported_window()


    def bus():
        handle = tempfile.TemporaryFile()
        handle.write(b"x")
        handle.flush()
        libc = ctypes.CDLL(None)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        base = libc.mmap(None, 2 * mmap.PAGESIZE, mmap.PROT_READ, mmap.MAP_SHARED, handle.fileno(), 0)
        bus.keep = handle
        return base + mmap.PAGESIZE


    crash_site()
    print("survived")
''')


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    directory = tmp_path_factory.mktemp("runtime-faults")
    library = build_library(directory)
    script = directory / "child.py"
    script.write_text(CHILD.format(snippets=str(SNIPPETS.parent), library=str(library)))
    return directory, script


def run(child, mode: str, case: str, *options: str):
    """Run the child; return (raw wait status, stdout, stderr)."""
    directory, script = child
    work = directory / f"run-{os.getpid()}-{abs(hash((mode, case, options)))}"
    work.mkdir(exist_ok=True)
    out, err = work / "stdout", work / "stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        actions = [(os.POSIX_SPAWN_DUP2, stdout.fileno(), 1), (os.POSIX_SPAWN_DUP2, stderr.fileno(), 2)]
        env = dict(python_env(), CHILD_CWD=str(work))
        pid = os.posix_spawn(sys.executable, [sys.executable, str(script), mode, case, *options],
                             env, file_actions=actions)
        _, status = os.waitpid(pid, 0)
    for core in work.glob("core*"):
        core.unlink()
    return status, out.read_text(), err.read_text()


def how_it_ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}{core}"
    return f"exited {os.WEXITSTATUS(status)}"


def normalized(text: str) -> str:
    """A faulthandler report without the thread ids that differ from run to run."""
    return re.sub(r"0x[0-9a-f]+", "0x...", text)


CASES = {
    "wild pointer": signal.SIGSEGV,
    "non-canonical pointer": signal.SIGSEGV,
    "write to read-only page": signal.SIGSEGV,
    "stack overflow": signal.SIGSEGV,
    "jump to 0": signal.SIGSEGV,
    "jump into the window": signal.SIGSEGV,
    "sent SIGSEGV": signal.SIGSEGV,
    "past the end of a file": signal.SIGBUS,
}


@pytest.mark.parametrize("case", list(CASES))
def test_genuine_fault_ends_as_without_regmap(child, case):
    plain = run(child, "plain", case, "core")
    mapped = run(child, "regmap", case, "core")
    expected = CASES[case].name
    assert how_it_ended(plain[0]).startswith(f"killed by {expected}"), plain
    assert how_it_ended(mapped[0]) == how_it_ended(plain[0]), mapped
    assert mapped[1] == plain[1] == ""
    assert mapped[2] == plain[2] == ""


@pytest.mark.parametrize("case", list(CASES))
def test_faulthandler_still_prints_its_traceback(child, case):
    plain = run(child, "plain", case, "faulthandler")
    mapped = run(child, "regmap", case, "faulthandler")
    assert how_it_ended(mapped[0]) == how_it_ended(plain[0]) == f"killed by {CASES[case].name}"
    assert "Fatal Python error" in plain[2] and "in crash_site" in plain[2], plain[2]
    if case == "sent SIGSEGV":
        # A signal sent by a process is handed to faulthandler from inside regmap's handler,
        # whose frames then top the report.
        assert _same_but_for_regmap_lines(mapped[2], plain[2]), mapped[2]
    else:
        # A fault is re-raised by the CPU straight into faulthandler: the very same report.
        assert normalized(mapped[2]) == normalized(plain[2]), mapped[2]


def _same_but_for_regmap_lines(mapped: str, plain: str) -> bool:
    keep = [line for line in normalized(mapped).splitlines() if "regmap" not in line]
    return keep == normalized(plain).splitlines()


def test_unsupported_instruction_prints_one_line_then_dies_as_a_genuine_fault(child):
    plain = run(child, "plain", "unsupported instruction")
    mapped = run(child, "regmap", "unsupported instruction")
    assert how_it_ended(plain[0]) == how_it_ended(mapped[0]) == "killed by SIGSEGV"
    assert plain[2] == ""
    lines = mapped[2].splitlines()
    assert len(lines) == 1, mapped[2]
    line = lines[0]
    assert line.startswith("regmap: unsupported instruction at 0x")
    assert "ff 2c 25 08 00 00 00" in line          # the bytes
    assert "jmp far" in line                       # the disassembly
    assert "far branch" in line                    # why
    assert "rcx" in line                           # the register it touched
    with_traceback = run(child, "regmap", "unsupported instruction", "faulthandler")
    assert normalized(with_traceback[2]).startswith(normalized(line) + "\n")
    assert "Fatal Python error: Segmentation fault" in with_traceback[2]
    assert "in crash_site" in with_traceback[2]


DIVIDE = textwrap.dedent('''
    import ctypes, resource, sys
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.path.insert(0, {snippets!r})
    from runtime_build import declare
    lib = declare(ctypes.CDLL({library!r}))
    mode = sys.argv[1]
    if mode == "regmap":
        import regmap
        regmap.map_registers()
    from regmap.runtime.frame import Frame
    seen = []

    def on_fpe(signo, info, ctx):
        frame = Frame.from_address(ctx)
        seen.append((signo, ctypes.c_int32.from_address(info + 8).value,
                     ctypes.c_uint64.from_address(info + 16).value, frame.rip))
        frame.rax = 12345
        frame.rip += int(sys.argv[2])

    handler = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(on_fpe)

    class Sigaction(ctypes.Structure):
        _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_uint64 * 16),
                    ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]

    action = Sigaction(ctypes.cast(handler, ctypes.c_void_p).value)
    action.flags = 4
    if sys.argv[3:] == ["handler"]:
        assert ctypes.CDLL(None).sigaction(8, ctypes.byref(action), None) == 0
    elif sys.argv[3:] == ["ignored"]:
        import signal
        signal.signal(signal.SIGFPE, signal.SIG_IGN)
    elif sys.argv[3:] == ["blocked"]:
        import signal
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGFPE])
    divide = lib.div_window if mode == "regmap" else lib.div_native
    where = ctypes.cast(getattr(lib, "div_window_insn" if mode == "regmap" else "div_native_insn"),
                        ctypes.c_void_p).value
    assert divide(100, 7) == 14
    result = divide(1, 0)
    print(result, seen == [(8, 1, where, where)], seen)
''')


def test_divide_error_delivers_sigfpe_as_the_cpu_would(child):
    directory, _ = child
    script = directory / "divide.py"
    library = next(directory.glob("*.so"))
    script.write_text(DIVIDE.format(snippets=str(SNIPPETS.parent), library=str(library)))
    results = {}
    for mode, length in (("plain", "3"), ("regmap", "8")):
        work = directory / f"divide-{mode}"
        work.mkdir(exist_ok=True)
        out = work / "out"
        with open(out, "wb") as stdout:
            pid = os.posix_spawn(sys.executable, [sys.executable, str(script), mode, length, "handler"],
                                 python_env(), file_actions=[(os.POSIX_SPAWN_DUP2, stdout.fileno(), 1)])
            _, status = os.waitpid(pid, 0)
        results[mode] = (how_it_ended(status), out.read_text().split(" ", 2)[:2])
        # without a SIGFPE handler, or with SIGFPE ignored or blocked: the default action, which
        # the CPU's #DE forces
        for disposition in ([], ["ignored"], ["blocked"]):
            pid = os.posix_spawn(sys.executable, [sys.executable, str(script), mode, length, *disposition],
                                 python_env(),
                                 file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
            _, status = os.waitpid(pid, 0)
            assert how_it_ended(status).startswith("killed by SIGFPE"), (mode, disposition)
    # The handler saw SIGFPE, FPE_INTDIV, si_addr and rip at the divide, and resumed after it.
    assert results["plain"] == ("exited 0", ["12345", "True"])
    assert results["regmap"] == results["plain"]


PLACED = textwrap.dedent("""
    import ctypes, sys
    import regmap
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    CODE = bytes.fromhex("48 8b 04 25 38 00 00 00 c3")   # mov rax, [0x38]; ret

    def place(protection, at_end):
        pages = libc.mmap(None, 8192, 3, 0x22, -1, 0)
        assert libc.munmap(pages + 4096, 4096) == 0      # nothing after the first page
        start = pages + 4096 - len(CODE) if at_end else pages
        ctypes.memmove(start, CODE, len(CODE))
        assert libc.mprotect(pages, 4096, protection) == 0
        return ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long)(start)

    regmap.map_registers()
    end_of_mapping = place(5, True)          # read + exec, the last 9 bytes before a hole
    execute_only = place(4, False)           # PROT_EXEC alone (execute-only with protection keys)
    print(end_of_mapping(41), end_of_mapping(42), execute_only(43), execute_only(44))
""")


def test_code_at_the_end_of_a_mapping_and_execute_only_code(tmp_path):
    script = tmp_path / "placed.py"
    script.write_text(PLACED)
    result = subprocess_run(script)
    assert result == (0, "41 42 43 44\n", "")


def subprocess_run(script: Path):
    import subprocess
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=python_env(), timeout=60)
    return done.returncode, done.stdout, done.stderr
