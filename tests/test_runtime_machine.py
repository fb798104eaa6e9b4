"""`FrameMachine` against the CPU: every register read from and written to a real signal frame.

A child process loads every general, zmm and opmask register with random
values, executes one page-0 instruction, and stores them all back.  regmap
runs a test double of the emulator for that instruction: it records what the
machine reads for each basis register and writes new values to many of them.
The test compares the reads with what was loaded and the stored registers
with what was written (zmm0-15 through the legacy, AVX and ZMM_Hi256 XSAVE
components, zmm16-31 through Hi16_ZMM, k0-7 through the opmask component).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import SNIPPETS, build_library, cpu_flags, python_env, why_not_native  # noqa: E402

REASON = why_not_native() or (None if {"avx512f", "avx512bw"} <= cpu_flags()
                              else "needs AVX-512 (F, BW) to load every zmm and opmask register")
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

CHILD = textwrap.dedent('''
    import ctypes, json, random, sys
    sys.path.insert(0, {snippets!r})
    import regmap
    from regmap.x86 import Step

    lib = ctypes.CDLL({library!r})
    lib.capture_state.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.capture_state.restype = None
    libc = ctypes.CDLL(None)
    libc.pthread_self.restype = ctypes.c_ulong
    point = ctypes.cast(lib.capture_point, ctypes.c_void_p).value

    GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
    INSN = bytes.fromhex("4c 8b 1c 25 38 00 00 00")   # mov r11, [0x38]
    rng = random.Random(int(sys.argv[1]))
    loaded = {{name: rng.getrandbits(64) for name in GPRS}}
    loaded.update({{f"zmm{{n}}": rng.getrandbits(512) for n in range(32)}})
    loaded.update({{f"k{{n}}": rng.getrandbits(64) for n in range(8)}})
    written = {{name: rng.getrandbits(64) for name in GPRS if name != "rsp"}}
    written.update({{"zmm3": rng.getrandbits(512), "zmm5": rng.getrandbits(100),
                     "zmm15": 0, "zmm16": rng.getrandbits(512), "zmm31": 1 << 511,
                     "k2": rng.getrandbits(64), "k7": 0}})
    READ = list(GPRS) + ["rip", "rflags", "mxcsr", "cs", "ss", "ds", "es", "fs_base"] + \\
        [f"zmm{{n}}" for n in range(32)] + [f"k{{n}}" for n in range(8)]


    class Double:
        """A stand-in for the emulator: reads every register, writes some, skips the instruction."""
        seen = None

        def step(self, machine, trace=False):
            rip = machine.read_register("rip")
            assert machine.fetch(rip)[:len(INSN)] == INSN
            Double.seen = {{name: machine.read_register(name) for name in READ}}
            for name, value in written.items():
                machine.write_register(name, value)
            machine.write_register("rflags", Double.seen["rflags"] | 1)  # CF
            machine.write_register("rip", rip + len(INSN))
            return Step(rip, INSN, "mov", "mov r11,[0x38]", None)


    def block(values):
        data = bytearray(2248)
        for i, name in enumerate(GPRS):
            data[8 * i:8 * i + 8] = values.get(name, 0).to_bytes(8, "little")
        for n in range(32):
            data[128 + 64 * n:192 + 64 * n] = values.get(f"zmm{{n}}", 0).to_bytes(64, "little")
        for n in range(8):
            data[2176 + 8 * n:2184 + 8 * n] = values.get(f"k{{n}}", 0).to_bytes(8, "little")
        return data


    def unblock(data):
        values = {{name: int.from_bytes(data[8 * i:8 * i + 8], "little") for i, name in enumerate(GPRS)}}
        values.update({{f"zmm{{n}}": int.from_bytes(data[128 + 64 * n:192 + 64 * n], "little")
                        for n in range(32)}})
        values.update({{f"k{{n}}": int.from_bytes(data[2176 + 8 * n:2184 + 8 * n], "little")
                        for n in range(8)}})
        values["rflags"] = int.from_bytes(data[2240:2248], "little")
        return values


    source = (ctypes.c_char * 2248).from_buffer(block(loaded))
    out = (ctypes.c_char * 2248)()
    regmap.map_registers(emulator=Double())
    lib.capture_state(source, out)
    regmap.unmap_registers()
    stored = unblock(bytes(out))
    seen = Double.seen
    problems = []
    for name in GPRS:
        expected = stored["rsp"] if name == "rsp" else loaded[name]
        if seen[name] != expected:
            problems.append(f"read {{name}} {{seen[name]:#x}} != {{expected:#x}}")
    for name in [f"zmm{{n}}" for n in range(32)] + [f"k{{n}}" for n in range(8)]:
        if seen[name] != loaded[name]:
            problems.append(f"read {{name}} {{seen[name]:#x}} != {{loaded[name]:#x}}")
    for name, value in written.items():
        if stored[name] != value:
            problems.append(f"wrote {{name}} {{value:#x}}, the CPU has {{stored[name]:#x}}")
    for name in loaded:
        if name not in written and name != "rsp" and stored[name] != loaded[name]:
            problems.append(f"{{name}} changed: {{stored[name]:#x}} != {{loaded[name]:#x}}")
    others = {{"rip": point, "cs": 0x33, "ss": 0x2B, "ds": 0, "es": 0,
               "fs_base": libc.pthread_self()}}
    seen["mxcsr"] &= ~0x3F   # the sticky exception flags are whatever Python's arithmetic left
    others["mxcsr"] = 0x1F80
    for name, expected in others.items():
        if seen[name] != expected:
            problems.append(f"read {{name}} {{seen[name]:#x}} != {{expected:#x}}")
    if not seen["rflags"] & 2 or not stored["rflags"] & 1:
        problems.append(f"rflags read {{seen['rflags']:#x}}, stored {{stored['rflags']:#x}}")
    print(json.dumps(problems))
''')


@pytest.mark.parametrize("seed", [1, 2])
def test_frame_machine_reads_and_writes_every_register(tmp_path, seed):
    library = build_library(tmp_path)
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(snippets=str(SNIPPETS.parent), library=str(library)))
    result = subprocess.run([sys.executable, str(script), str(seed)], capture_output=True, text=True,
                            env=python_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
