"""The traced fault path's shortcuts: the tracer's site cache and its system call batches.

A site whose compiled fast path ran before runs that path again once the bytes at rip are
read and found unchanged (`Tracer._step`); the calls of a fault run in two batches, each one
ctypes call into generated code (`regmap.trace.batch`).  The programs compare every result with
what the CPU computes for the register form of the same instruction.
"""
from __future__ import annotations

import ctypes
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from regmap.trace import batch
from tracer_host import build_program, NEEDS_CC, ON_LINUX_X86_64  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

pytestmark = ON_LINUX_X86_64
needs_cc = NEEDS_CC


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    return build_program(tmp_path_factory, "sites")


def regmap_exec(*args) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "regmap.cli", "exec", *map(str, args)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    if "not allowed to trace" in result.stderr:
        pytest.skip("ptrace is not permitted here: " + result.stderr.strip())
    return result


def _failures(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if not line.endswith(" ok")]


@needs_cc
def test_code_rewritten_at_a_cached_site_runs_as_it_is_now(sites):
    # same length, shorter, longer, then back; and in a forked child other code at the address
    result = regmap_exec(sites, "rewrite")
    assert result.returncode == 0 and not _failures(result.stdout), result.stdout + result.stderr
    assert result.stdout.count(" ok\n") == 22, result.stdout


@needs_cc
def test_sigsegv_sent_while_at_a_cached_site_reaches_the_program(sites):
    result = regmap_exec(sites, "kill")
    assert result.returncode == 0 and not _failures(result.stdout), result.stdout + result.stderr
    assert "kill at site: handler ran 1 time(s), si_code 0," in result.stdout


@needs_cc
def test_fault_path_without_generated_code(sites, monkeypatch):
    """Where no page can be made executable the batches run in Python: same results."""
    from regmap.trace import trace_program
    monkeypatch.setattr(batch, "_run", batch.run_in_python)
    read, write = os.pipe()
    saved = os.dup(1)
    os.dup2(write, 1)
    os.close(write)
    try:
        ends = [trace_program([str(sites), mode], stream=io.StringIO()) for mode in ("rewrite", "kill")]
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    with os.fdopen(read) as pipe:
        stdout = pipe.read()
    assert [end.status for end in ends] == [0, 0], stdout
    assert not _failures(stdout) and stdout.count(" ok\n") == 27, stdout


def _batch_of_real_calls(buffer, offset):
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    calls = batch.Batch((39, (), 0),                                   # getpid
                        batch.pread_call(fd, ctypes.addressof(buffer), 5, ctypes.addressof(offset)),
                        batch.ptrace_call(12, 0x7FFFFFFF),               # GETREGS: no such thread
                        (110, (), 0))                                    # getppid: never reached
    return fd, calls


@pytest.mark.parametrize("run", [batch.runner, lambda: batch.run_in_python], ids=["generated", "python"])
def test_batch_runs_in_order_reads_indirect_arguments_and_stops_at_a_failure(run):
    source = ctypes.create_string_buffer(b"window bytes")
    buffer = ctypes.create_string_buffer(8)
    offset = ctypes.c_ulong(ctypes.addressof(source) + 7)       # read when the pread runs
    fd, calls = _batch_of_real_calls(buffer, offset)
    try:
        calls.entries[3].result = 12345
        done = run()(*calls.arguments)
    finally:
        os.close(fd)
    assert done == 2
    assert calls.result(0) == os.getpid()
    assert (calls.result(1), buffer.raw[:5]) == (5, b"bytes")
    assert calls.error(2, "ptrace").errno == 3                  # ESRCH
    assert calls.result(3) == 12345                             # not run


class _NoFetch(Exception):
    pass


def _machine(code: bytes | None):
    """A TracedMachine (no thread behind it) whose code is ``code``; None: fetching raises."""
    from regmap.trace.machine import TracedMachine

    class CodeMachine(TracedMachine):
        __slots__ = ("code",)

        def fetch(self, address: int) -> bytes:
            if self.code is None:
                raise _NoFetch(address)
            return self.code

    machine = CodeMachine()
    machine.code = code
    machine.regs.rcx = 1
    return machine


def _site_cache(max_sites=None, monkeypatch=None):
    from regmap.trace import sites as sites_module
    from regmap.x86 import Emulator
    if max_sites is not None:
        monkeypatch.setattr(sites_module, "MAX_SITES", max_sites)
    buffer = ctypes.create_string_buffer(batch.FETCH_SIZE)
    return sites_module.Sites(Emulator(), False, memoryview(buffer).cast("B")), buffer


ADD = bytes.fromhex("4803042508000000")         # add rax,[8]
SUB = bytes.fromhex("482b042508000000")         # sub rax,[8]


def test_site_cache_runs_a_site_again_only_while_its_bytes_are_the_same():
    cache, buffer = _site_cache()
    machine = _machine(ADD)
    machine.regs.rip = 0x401000
    cache.step(machine, 0)                       # through the emulator: remembered
    assert cache.forms[0x401000].code == ADD and machine.regs.rax == 1
    machine.code = None                          # from here the emulator cannot fetch
    buffer.raw = ADD + bytes(batch.FETCH_SIZE - len(ADD))
    machine.regs.rip = 0x401000
    cache.step(machine, 15)                      # the cache alone
    assert machine.regs.rax == 2 and machine.regs.rip == 0x401008
    buffer.raw = SUB + bytes(batch.FETCH_SIZE - len(SUB))   # the code changed
    machine.regs.rip = 0x401000
    with pytest.raises(_NoFetch):                # ... so the emulator is asked
        cache.step(machine, 15)
    machine.code = SUB
    cache.step(machine, 15)
    assert machine.regs.rax == 1 and cache.forms[0x401000].code == SUB
    machine.code = None
    machine.regs.rip = 0x401000                  # the buffer shows SUB, but only 4 bytes were read:
    with pytest.raises(_NoFetch):                # that proves nothing, the emulator is asked
        cache.step(machine, 4)


def test_site_cache_keeps_no_site_that_crosses_a_page():
    cache, _ = _site_cache()
    machine = _machine(ADD)
    machine.regs.rip = 0x401FFC
    cache.step(machine, 0)
    assert machine.regs.rax == 1 and not cache.forms


def test_site_cache_is_bounded(monkeypatch):
    cache, _ = _site_cache(8, monkeypatch)
    machine = _machine(ADD)
    for index in range(20):
        machine.regs.rip = 0x401000 + 16 * index
        cache.step(machine, 0)
    assert machine.regs.rax == 20
    assert len(cache.forms) <= 8 and 0x401000 + 16 * 19 in cache.forms
