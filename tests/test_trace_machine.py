"""The traced Machine and the tracer's error paths, with a stand-in emulator.

``tests/programs/machine.c`` stops on ``mov rax, [0]`` with a request in r15; the stand-in
below does what the request says through the Machine protocol, so registers the real
emulator never touches (zmm16..31, k0..7), memory permissions and fetches near an
unreadable page are checked against a real stopped thread.
"""
from __future__ import annotations

import io
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from regmap.errors import DivideError, MemoryFault, NotWindowAccess, UnsupportedInstruction

PROGRAMS = Path(__file__).resolve().parent / "programs"
CC = shutil.which("cc") or shutil.which("gcc")
MOV_RAX_0 = bytes.fromhex("48 8b 04 25 00 00 00 00")

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                       reason="the tracer needs Linux on x86-64"),
    pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc) on PATH to build test programs"),
]


class Step:
    def __init__(self, address, code):
        self.address, self.code = address, code
        self.mnemonic, self.disassembly, self.accesses = "mov", "mov rax,[0]", []


class StandIn:
    """Knows one instruction; r15 says what to do with the machine."""

    def __init__(self):
        self.found = {}

    def step(self, machine, trace=False):
        rip = machine.read_register("rip")
        code = machine.fetch(rip)
        if not code.startswith(MOV_RAX_0):
            raise NotWindowAccess("not mov rax,[0]")
        request = machine.read_register("r15")
        if request == 1:
            self._vector(machine)
        elif request == 2:
            self._memory(machine)
        elif request == 3:
            raise RuntimeError("stand-in failure")
        elif request == 4:
            raise UnsupportedInstruction(rip, MOV_RAX_0, "mov rax,[0]", "stand-in refuses")
        elif request == 5:
            raise DivideError("stand-in divide error")
        machine.write_register("rip", rip + len(MOV_RAX_0))
        return Step(rip, MOV_RAX_0)

    def _vector(self, machine):
        zmm16 = machine.read_register("zmm16")
        qwords = [(zmm16 >> (64 * i)) & (2**64 - 1) for i in range(8)]
        reversed_value = sum(q << (64 * i) for i, q in enumerate(reversed(qwords)))
        k1 = machine.read_register("k1")
        self.found["mxcsr"] = machine.read_register("mxcsr")
        self.found["zmm0 width"] = machine.read_register("zmm0").bit_length() <= 512
        machine.write_register("zmm17", reversed_value)
        machine.write_register("k2", ~k1 & 0xFFFF)
        machine.write_register("rax", k1)

    def _memory(self, machine):
        base = machine.read_register("rsi")
        page = 4096
        found = self.found
        machine.write_memory(base + 16, b"hello")
        for name, action in [
            ("write read-only", lambda: machine.write_memory(base + page + 8, b"x")),
            ("write across into read-only", lambda: machine.write_memory(base + page - 4, b"ABCDEFGH")),
            ("read into none", lambda: machine.read_memory(base + 2 * page - 3, 4)),
            ("read page 0", lambda: machine.read_memory(0x10, 8)),
        ]:
            try:
                action()
                found[name] = "no fault"
            except MemoryFault as fault:
                found[name] = ("fault", fault.write)
        found["read before none"] = machine.read_memory(base + 2 * page - 3, 3)
        found["fetch before none"] = machine.fetch(base + 2 * page - 3)
        found["fetch page 0"] = machine.fetch(0)
        machine.write_register("rax", 0x600D)


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    executable = tmp_path_factory.mktemp("trace-machine") / "machine"
    subprocess.run([CC, "-O2", "-o", executable, PROGRAMS / "machine.c"], check=True)
    return str(executable)


def run(program, request, capfd, **options):
    from regmap.trace import run_traced
    stand_in = StandIn()
    stream = io.StringIO()
    status = run_traced([program, str(request)], emulator=stand_in, stream=stream, **options)
    out, _err = capfd.readouterr()
    return status, out, stream.getvalue(), stand_in.found


def test_avx512_registers_and_opmasks(program, capfd):
    status, out, messages, found = run(program, 1, capfd)
    if out.startswith("skip:"):
        pytest.skip(out.strip())
    assert status == 0, messages
    lines = out.splitlines()
    assert lines[0] == "rax 0x5a5a k2 0xa5a5"
    for i in range(8):
        assert lines[1 + i] == f"zmm17[{i}] {0x0101010101010101 * (8 - i):#x}"
    assert found["mxcsr"] & 0xFFC0 == 0x1F80 and found["zmm0 width"]


def test_memory_permissions_and_fetch(program, capfd):
    status, out, messages, found = run(program, 2, capfd)
    assert status == 0, messages
    assert out.splitlines() == ["rax 0x600d", "written hello", "kept abcd"]
    assert found["write read-only"] == ("fault", True)
    assert found["write across into read-only"] == ("fault", True)   # and nothing stored
    assert found["read into none"] == ("fault", False)
    assert found["read page 0"] == ("fault", False)
    assert found["read before none"] == b"xyz"
    assert found["fetch before none"] == b"xyz"
    assert found["fetch page 0"] == b""


def test_emulator_bug_delivers_the_signal(program, capfd):
    status, out, messages, _ = run(program, 3, capfd)
    assert status == 128 + 11
    first, second = messages.splitlines()
    assert first.startswith("regmap: internal error emulating the instruction at 0x")
    assert "RuntimeError: stand-in failure; SIGSEGV delivered" in first
    assert second.startswith("regmap: ") and "killed by SIGSEGV" in second


def test_unsupported_instruction_one_line(program, capfd):
    status, out, messages, _ = run(program, 4, capfd)
    assert status == 128 + 11
    first = messages.splitlines()[0]
    assert first.startswith("regmap: unsupported instruction at 0x")
    assert "48 8b 04 25 00 00 00 00  mov rax,[0] (stand-in refuses); SIGSEGV delivered" in first


def test_unsupported_instruction_json(program, capfd):
    status, out, messages, _ = run(program, 4, capfd, json=True)
    records = [json.loads(line) for line in messages.splitlines()]
    assert records[0]["event"] == "unsupported" and records[0]["bytes"] == MOV_RAX_0.hex()
    assert records[-1] == {"event": "exit", "program": program, "signal": "SIGSEGV",
                           "core_dumped": records[-1]["core_dumped"], "status": 139,
                           "fault": records[-1]["fault"]}
    assert records[-1]["fault"]["instruction"] == "mov rax,[0]"
    assert "does not support (stand-in refuses)" in records[-1]["fault"]["reason"]


def test_divide_error_with_sigfpe_ignored_still_kills(program, capfd):
    status, out, messages, _ = run(program, 5, capfd)
    assert status == 128 + 8
    assert "SIGFPE blocked or ignored" in messages
    assert messages.splitlines()[-1].endswith("killed by SIGFPE")
    assert out == ""
