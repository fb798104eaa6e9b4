"""regmap's gdb stub (regmap.gdb) driven by a real gdb in batch mode, and by hand.

The programs (tests/programs/gdb_target.c and .s) do their page-0 accesses at global labels,
so a test can break, step and watch at exactly those instructions; what gdb shows is checked
against the registers gdb reads itself and the values the program put there.
"""
from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys

import pytest

from tests.tracer_host import CC, PROGRAMS, TRACED_PROGRAMS

GDB = shutil.which("gdb")
pytestmark = [*TRACED_PROGRAMS,
              pytest.mark.skipif(GDB is None, reason="no gdb on PATH (.ci/run installs Debian's)")]
REGMAP = [sys.executable, "-m", "regmap"]


@pytest.fixture(scope="module")
def c_program(tmp_path_factory):
    executable = tmp_path_factory.mktemp("gdb") / "gdb_target"
    subprocess.run([CC, "-O2", "-g", "-pthread", "-fno-delete-null-pointer-checks", "-o",
                    executable, PROGRAMS / "gdb_target.c"], check=True)
    return executable


@pytest.fixture(scope="module")
def asm_program(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gdb_asm")
    subprocess.run([CC, "-nostdlib", "-static", "-o", directory / "gdb_asm",
                    PROGRAMS / "gdb_target.s"], check=True)
    return directory / "gdb_asm"


def gdb(program, *commands: str, args: str = "") -> str:
    """gdb's output for ``commands`` on ``program`` run by ``regmap exec --gdb-stdio``."""
    stub = " ".join([*REGMAP, "exec", "--gdb-stdio", str(program)]) + (" " + args if args else "")
    argv = [GDB, "-batch", "-nx", "-ex", "set confirm off", "-ex", f"target remote | {stub}"]
    for command in commands:
        argv += ["-ex", command]
    result = subprocess.run([*argv, str(program)], capture_output=True, text=True, timeout=120)
    return result.stdout + result.stderr


def value(output: str, name: str) -> int:
    """The value gdb printed as ``$N = VALUE`` for the ``name``-th print (1-based)."""
    match = re.search(rf"^\${name} = (\S+)", output, re.M)
    assert match, output
    return int(match.group(1), 0)


def test_break_registers_page_0_and_vectors(c_program):
    out = gdb(c_program, "break main", "continue", "break *store_site", "continue",
              "info registers rdi", "x/2gx 0x30", "p/x $rsi", "p/x $rdi",
              "p/x $xmm0.v2_int64[0]")
    assert "Breakpoint 1, main" in out, out
    assert "Breakpoint 2, " in out and " in store " in out, out
    rdi = re.search(r"^rdi\s+(0x[0-9a-f]+)", out, re.M)
    assert rdi, out
    page = re.search(r"^0x30:\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)", out, re.M)
    assert page, out
    # the window shows the registers gdb reads with 'g': rsi at 0x30, rdi at 0x38
    assert int(page.group(1), 16) == value(out, "1") == 42
    assert int(page.group(2), 16) == value(out, "2") == int(rdi.group(1), 16)
    assert value(out, "3") == 0x1122334455667788        # what the program put in xmm0


def test_stepi_over_a_window_store(c_program):
    out = gdb(c_program, "break *store_site", "continue", "p $rdi == 42", "stepi",
              "p $rdi", "p $pc == &after_store")
    assert value(out, "1") == 0, out                      # not yet
    assert value(out, "2") == 42, out                     # one stepi: the emulated store
    assert value(out, "3") == 1, out


def test_set_window_memory_is_seen_by_the_program(c_program):
    out = gdb(c_program, "break *see_site", "continue", "set {long}0x38 = 5", "p $rdi",
              "continue")
    assert value(out, "1") == 5, out
    assert "seen 5" in out, out
    assert "exited with code 03" in out, out


def test_watch_a_window_register(c_program):
    out = gdb(c_program, "break main", "continue", "watch *(long *)0x38", "continue",
              "p $pc == &after_store", "p $rdi")
    assert "New value = 42" in out, out
    assert value(out, "1") == 1, out                      # stopped right after the store
    assert value(out, "2") == 42, out


def test_a_breakpoint_on_a_window_address_is_refused(c_program):
    """Window bytes are registers, not code: an int3 at 0x8 would be written into rcx."""
    out = gdb(c_program, "break main", "continue", "p/x $rcx", "break *0x8", "stepi", "p/x $rcx",
              "kill")
    assert value(out, 1) == value(out, 2), out
    assert "Cannot insert breakpoint" in out, out


def test_watching_memory_outside_the_window_is_refused(c_program):
    out = gdb(c_program, "break main", "continue", "watch handled", "continue", args="usr1")
    assert "Could not insert hardware watchpoint" in out, out


@pytest.mark.parametrize("options, message, status", [
    (["--gdb=localhost:port"], "--gdb=localhost:port: not HOST:PORT", 1),
    (["--gdb=192.0.2.1:1"], "--gdb=192.0.2.1:1: cannot listen there", 1),
    (["--gdb", "--gdb-stdio"], "not allowed with argument", 2),
])
def test_bad_gdb_options(c_program, options, message, status):
    result = subprocess.run([*REGMAP, "exec", *options, str(c_program)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == status and message in result.stderr, result.stderr
    assert "stored" not in result.stdout                    # the program never ran


def test_breakpoint_in_a_second_thread(c_program):
    out = gdb(c_program, "break worker", "continue", "p $_thread", "info threads",
              "p/x $rdi", "continue")
    assert re.search(r"Thread 2 hit Breakpoint 1, worker", out), out
    assert value(out, "1") == 2, out
    assert value(out, "2") == 7, out                      # worker's argument
    assert "exited with code 03" in out, out


def test_four_threads_at_one_breakpoint_then_a_read_watchpoint(tmp_path):
    """tests/programs/threads.c: four threads hit `worker` about together (hits wait while gdb
    steps one thread over the breakpoint: told only for threads gdb resumes), then `rwatch`
    on rcx's window bytes stops the thread whose `add rax, [8]` read them."""
    subprocess.run([CC, "-O2", "-g", "-pthread", "-o", tmp_path / "threads",
                    PROGRAMS / "threads.c"], check=True)
    out = gdb(tmp_path / "threads", "break worker", *["continue"] * 4, "delete",
              "rwatch *(long *)8", "continue", "p $rcx", "p *(long *)8", "x/i $pc - 8",
              "delete", "continue", args="2000")
    assert len(re.findall(r"Thread \d+ hit Breakpoint 1, worker", out)) == 4, out
    assert re.search(r"Thread \d+ hit Hardware read watchpoint 2: \*\(long \*\)8", out), out
    rcx = re.search(r"^Value = (\d+)$", out, re.M)
    assert rcx and int(rcx.group(1)) == value(out, "1") == value(out, "2"), out
    assert re.search(r"add\s+0x8,%rax", out), out                 # the instruction just run
    for thread in range(4):
        assert f"thread {thread} rax {2000 * (thread + 1)} rdi {2000 * (thread + 1)}" in out, out
    assert "exited normally" in out, out


LEADER_EXITS = r"""
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
__attribute__((noinline)) void leader_gone(void) { __asm__ volatile ("movq $9, 0x38" ::: "rdi"); }
static void *worker(void *arg) {
    char path[64], stat[512] = "";
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", getpid());
    for (;;) {                               /* until the main thread is a zombie */
        FILE *file = fopen(path, "r");
        if (!file || !fgets(stat, sizeof stat, file) || strrchr(stat, ')')[2] == 'Z')
            break;
        fclose(file);
    }
    leader_gone();
    return arg;
}
int main(void) {
    pthread_t thread;
    pthread_create(&thread, NULL, worker, NULL);
    pthread_exit(NULL);
}
"""


def test_a_breakpoint_after_the_main_thread_exited(tmp_path):
    # the group leader, a zombie until the last thread goes, can neither stop nor be read
    (tmp_path / "leader.c").write_text(LEADER_EXITS)
    subprocess.run([CC, "-O2", "-g", "-pthread", "-o", tmp_path / "leader", tmp_path / "leader.c"],
                   check=True)
    out = gdb(tmp_path / "leader", "break leader_gone", "continue", "stepi", "x/gx 0x38",
              "continue")
    assert "hit Breakpoint 1, " in out and "leader_gone" in out, out
    assert re.search(r"^0x38:\s+0x0*9$", out, re.M), out
    assert "exited normally" in out, out


def test_vcont_resumes_only_the_threads_it_names(c_program):
    # scheduler-locking: vCont;c:TID for the worker alone; it exits, main stays stopped in its
    # join, and the stub says no resumed thread is left
    out = gdb(c_program, "break worker", "continue", "set scheduler-locking on", "continue",
              "info threads")
    assert "No unwaited-for children left" in out, out
    assert "exited with code" not in out, out
    assert re.search(r"^\s+1\s+Thread \d+", out, re.M), out


def test_a_genuine_segfault_is_a_sigsegv(c_program):
    out = gdb(c_program, "continue", "p $_siginfo.si_signo",
              "p/x $_siginfo._sifields._sigfault.si_addr", "continue", args="segv")
    assert "Program received signal SIGSEGV" in out, out
    assert value(out, "1") == signal.SIGSEGV, out
    assert value(out, "2") == 0xDEAD0000, out
    assert "Program terminated with signal SIGSEGV" in out, out


@pytest.mark.parametrize("commands, stops, handled", [
    (("continue", "continue"), True, 1),                   # gdb stops, continue delivers it
    (("continue", "signal 0"), True, 0),                   # gdb stops, and discards it
    (("handle SIGUSR1 nostop noprint pass", "continue"), False, 1),   # QPassSignals
])
def test_signals_are_gdbs_to_pass(c_program, commands, stops, handled):
    out = gdb(c_program, *commands, args="usr1")
    assert ("Program received signal SIGUSR1" in out) == stops, out
    assert f"SIGUSR1 handled {handled} times" in out, out
    assert "exited with code 03" in out, out


def test_assembly_program(asm_program):
    out = gdb(asm_program, "break store", "continue", "stepi", "info registers rdi",
              "x/gx 0x38", "p $pc == &done", "continue")
    assert "Breakpoint 1, " in out, out
    assert re.search(r"^rdi\s+0x7\s+7", out, re.M), out
    assert re.search(r"^0x38:\s+0x0*7$", out, re.M), out
    assert value(out, "1") == 1, out
    assert "exited with code 07" in out, out


def test_page_0_is_the_register_file_and_a_hole_is_unreadable(asm_program):
    from regmap.layout import load_layout
    places = load_layout().placements()
    hole = next(a.address + a.size for a, b in zip(places, places[1:])
                if a.address + a.size < b.address)
    out = gdb(asm_program, "p $pc == &_start", "break done", "continue", "x/16gx 0",
              "info registers", f"x/gx {hole:#x}")
    assert value(out, "1") == 1, out                      # stopped at its first instruction
    shown = [int(word, 16) for line in re.findall(r"^0x[0-9a-f]+:\s+(.*)$", out, re.M)[:8]
             for word in line.split()]
    registers = dict(re.findall(r"^(\w+)\s+(0x[0-9a-f]+)", out, re.M))
    order = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", *(f"r{n}" for n in range(8, 16))]
    assert [place.name for place in places[:16]] == order
    assert shown == [int(registers[name], 16) for name in order], out
    assert f"Cannot access memory at address {hole:#x}" in out, out


# -- by hand: the framing ----------------------------------------------------------------------
def _packet(payload: bytes) -> bytes:
    return b"$" + payload + b"#%02x" % (sum(payload) & 0xFF)


class Stub:
    """``regmap exec --gdb-stdio PROGRAM`` spoken to directly."""

    def __init__(self, program, *args):
        self.process = subprocess.Popen([*REGMAP, "exec", "--gdb-stdio", str(program), *args],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def read_until(self, pattern: bytes, timeout: float = 30) -> bytes:
        while not re.search(pattern, self.buffer, re.S):
            ready, _, _ = select.select([self.process.stdout], [], [], timeout)
            assert ready, f"no {pattern!r} in {self.buffer!r}"
            data = os.read(self.process.stdout.fileno(), 65536)
            assert data, f"the stub closed; had {self.buffer!r}"
            self.buffer += data
        match = re.search(pattern, self.buffer, re.S)
        found, self.buffer = self.buffer[:match.end()], self.buffer[match.end():]
        return found

    def ask(self, payload: bytes) -> bytes:
        self.send(_packet(payload))
        return self.read_until(rb"\$([^#]*)#[0-9a-f]{2}")

    def close(self) -> int:
        self.process.stdin.close()
        return self.process.wait(timeout=30)


def test_garbage_truncated_oversized_and_bad_checksums(asm_program):
    stub = Stub(asm_program)

    def after(bad: bytes) -> bytes:
        """What the stub says to ``bad`` followed by a good '?': its answer to '?' last."""
        stub.send(bad + _packet(b"?"))
        said = stub.read_until(rb"\$T05[^#]*#[0-9a-f]{2}")
        return said[:said.rindex(b"$")]

    try:
        assert b"PacketSize" in stub.ask(b"qSupported")
        assert after(b"noise\x00\xff++garbage") == b"+"              # skipped, no complaint
        assert after(b"$qSupported#00") == b"-+"                    # wrong checksum: asked again
        assert after(b"$qSupported#zz") == b"-+"                    # no checksum at all
        assert after(b"$qSupp") == b"-+"                            # cut short by the next '$'
        assert after(b"$" + b"A" * 100000) == b"-+"                 # too long, never ended
        stub.send(b"$#00")                                         # empty packet: empty reply
        stub.read_until(rb"\+\$#00")
        for payload in (b"m", b"mzz,1", b"p9999", b"Z0,zz,1", b"G0", b"X100,4:ab",
                        b"qXfer:features:read:target.xml:zz", b"vCont;q", b"H", b"P1=00",
                        b"m0,8000000000000", b"Z2,1000000,8", b"qXfer:nothing:read::0,1"):
            assert re.match(rb"\+?\$(E[0-9a-f]{2}|)#", stub.ask(payload)), payload
        assert b"$T05" in stub.ask(b"?")                   # still answering, still stopped
        assert re.search(rb"\$[0-9a-f]{16}#", stub.ask(b"m38,8"))   # rdi, through the window
        assert b"$E" in stub.ask(b"m1000,8")              # page 0 past the window
        stub.send(_packet(b"k"))
    finally:
        status = stub.close()
    assert status in (-signal.SIGKILL, 128 + signal.SIGKILL), status


def test_pass_signals_are_delivered_without_a_stop(c_program):
    stub = Stub(c_program, "usr1")
    try:
        usr1 = b"%x" % 30                                  # gdb's number for SIGUSR1
        assert stub.ask(b"QPassSignals:" + usr1).startswith(b"+$OK")
        assert b"$W03" in stub.ask(b"vCont;c")             # no T1e on the way
    finally:
        stub.close()


def test_ctrl_c_interrupts(tmp_path):
    source = tmp_path / "spin.s"
    source.write_text(".globl _start, spin\n_start:\n    movq $1, 56\nspin:\n    jmp spin\n"
                      '.section .note.GNU-stack, "", @progbits\n')
    subprocess.run([CC, "-nostdlib", "-static", "-o", tmp_path / "spin", source], check=True)
    symbols = subprocess.run(["nm", tmp_path / "spin"], capture_output=True, text=True).stdout
    spin = re.search(r"^([0-9a-f]+) T spin$", symbols, re.M).group(1)
    stub = Stub(tmp_path / "spin")
    try:
        stub.send(b"+" + _packet(b"QStartNoAckMode"))
        stub.read_until(rb"\$OK#[0-9a-f]{2}")
        assert stub.ask(b"Z0,%s,1" % spin.encode()) .startswith(b"$OK")
        assert b"swbreak" in stub.ask(b"vCont;c")          # past the window store
        assert stub.ask(b"z0,%s,1" % spin.encode()).startswith(b"$OK")
        stub.send(_packet(b"vCont;c"))
        stub.send(b"\x03")
        reply = stub.read_until(rb"\$T[0-9a-f]{2}[^#]*#[0-9a-f]{2}")
        assert b"$T02thread:" in reply, reply              # SIGINT, as gdb expects
        rdi = stub.ask(b"p5")                              # regnum 5: rdi, set through page 0
        assert rdi.startswith(b"$0100000000000000#"), rdi
        stub.send(_packet(b"k"))
    finally:
        stub.close()


def test_a_vanished_gdb_kills_the_program(asm_program):
    stub = Stub(asm_program)
    assert b"$T05" in stub.ask(b"?")
    status = stub.close()                                  # gdb's end of the pipe is gone
    assert status in (-signal.SIGKILL, 128 + signal.SIGKILL), status


def test_tcp_and_detach(c_program):
    regmap = subprocess.Popen([*REGMAP, "exec", "--gdb", str(c_program)], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = regmap.stderr.readline()
        match = re.search(r"target remote (127\.0\.0\.1:\d+)", line)
        assert match, line
        out = subprocess.run([GDB, "-batch", "-nx", "-ex", f"target remote {match.group(1)}",
                              "-ex", "break *see_site", "-ex", "continue", "-ex", "detach",
                              str(c_program)], capture_output=True, text=True, timeout=120)
        assert "Breakpoint 1, " in out.stdout, out.stdout + out.stderr
        stdout, _ = regmap.communicate(timeout=60)
    finally:
        if regmap.poll() is None:
            regmap.kill()
    assert "seen 1" in stdout                              # it ran on under regmap
    assert regmap.returncode == 3


# -- docs/gdb.md's session -------------------------------------------------------------------
DOCS = PROGRAMS.parent.parent / "docs" / "gdb.md"
SESSION = re.compile(r"<!-- gdb: (?P<source>\S+) -->\n```text\n(?P<body>.*?)^```$", re.M | re.S)
MARK = "@@@regmap-gdb-doc@@@"


def test_the_documented_session_is_what_gdb_prints(tmp_path):
    sessions = list(SESSION.finditer(DOCS.read_text()))
    assert sessions, "docs/gdb.md has no <!-- gdb: SOURCE --> session"
    for session in sessions:
        source = PROGRAMS.parent.parent / session["source"]
        lines = session["body"].splitlines()
        assert lines[0].startswith("$ gdb -q ./"), lines[0]
        program = lines[0].split()[-1]
        subprocess.run([CC, "-nostdlib", "-static", "-o", tmp_path / program, source], check=True)
        steps: list[tuple[str, list[str]]] = []
        for line in lines[1:]:
            if line.startswith("(gdb) "):
                steps.append((line[len("(gdb) "):], []))
            else:
                steps[-1][1].append(line)
        argv = [GDB, "-q", "-batch", "-nx"]
        for command, _ in steps:
            argv += ["-ex", command, "-ex", f"echo {MARK}\\n"]
        environment = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep
                           + os.environ.get("PATH", ""))
        result = subprocess.run([*argv, program], cwd=tmp_path, env=environment,
                                capture_output=True, text=True, timeout=120)
        printed = result.stdout.split(MARK + "\n")
        for (command, expected), output in zip(steps, printed):
            assert output.strip("\n") == "\n".join(expected).strip("\n"), \
                f"docs/gdb.md: (gdb) {command}\n{result.stdout}{result.stderr}"
