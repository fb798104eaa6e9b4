"""The native engine end to end: SSE, x87, AES, FMA, AVX-512 and glibc's string functions on
window operands, under `regmap exec` and in-process under `map_registers()`.

`programs/native_ops.s` runs every instruction on operands at ``base + slot``; with base 0 under
regmap the slots are registers, with base a plain buffer the same code runs without regmap.  The
host CPU computes both: they must agree, and the IEEE results must be Python's.
"""
from __future__ import annotations

import math
import platform
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import python_env  # noqa: E402

from regmap.x86.host import cpu_flags  # noqa: E402

HERE = Path(__file__).resolve().parent
PROGRAMS = HERE / "programs"
CC = shutil.which("cc") or shutil.which("gcc")
AVX512 = "avx512f" in cpu_flags()

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                       reason="the native engine needs Linux on x86-64"),
    pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc) on PATH to build the test program"),
    pytest.mark.skipif(not {"aes", "fma", "avx2"} <= cpu_flags(), reason="host CPU lacks AES, FMA or AVX2"),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    directory = tmp_path_factory.mktemp("native")
    executable, library = directory / "native", directory / "libnative_ops.so"
    subprocess.run([CC, "-O1", "-o", executable, PROGRAMS / "native.c", PROGRAMS / "native_ops.s"], check=True)
    subprocess.run([CC, "-shared", "-fPIC", "-o", library, PROGRAMS / "native_ops.s"], check=True)
    return executable, library


RESULTS = 15            # native.c prints 15 results: 0..8 SSE/x87/AES/FMA/strings, 9..14 AVX-512


def results(lines: list[str]) -> list[bytes]:
    return [bytes.fromhex(line) for line in lines]


def f64(data: bytes) -> float:
    return struct.unpack_from("<d", data)[0]


def check_values(out: list[bytes]) -> None:
    """The results the program computes, from Python's own IEEE arithmetic."""
    assert f64(out[0]) == 2.25 + 1.5
    assert f64(out[1]) == 12345.0
    assert f64(out[2]) == math.sqrt(2.0)
    assert f64(out[3]) == 2.0 + 0.1
    assert f64(out[5]) == 3.0 + 0.5 * 2.0
    assert struct.unpack_from("<q", out[6])[0] == len("native engine!")
    assert struct.unpack_from("<q", out[7])[0] == 0x60 + len("native engine")
    assert struct.unpack_from("<i", out[8])[0] == 0
    if AVX512:
        assert [f64(out[9][i:i + 8]) for i in range(0, 64, 8)] == [1.0 + 2.0] * 8


def run(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*map(str, args)], capture_output=True, text=True, timeout=120, **kw)


def test_under_regmap_exec_the_window_gives_the_cpus_results(built):
    executable, _ = built
    mode = ["avx512"] if AVX512 else []
    plain = run(executable, "plain", *mode)
    assert plain.returncode == 0, plain.stderr
    traced = run(sys.executable, "-m", "regmap.cli", "exec", "--stats", executable, "window", *mode,
                 env=python_env())
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout == plain.stdout
    check_values(results(traced.stdout.split()))
    for mnemonic in ("addsd", "cvtsi2sd", "sqrtsd", "fld", "fadd", "fstp", "aesenc", "vfmadd231sd"):
        assert f"  {mnemonic}\n" in traced.stderr, (mnemonic, traced.stderr)
    assert "unsupported" not in traced.stderr


INPROCESS = textwrap.dedent('''
    import ctypes, sys
    import regmap
    lib = ctypes.CDLL(sys.argv[1])
    RESULTS = int(sys.argv[3])
    lib.native_ops.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
    avx512 = int(sys.argv[2])
    buffer = (ctypes.c_char * 4096)()
    for base in (ctypes.addressof(buffer), 0):
        out = (ctypes.c_ubyte * 1024)()
        if base == 0:
            regmap.map_registers()
        lib.native_ops(base, out, avx512)
        if base == 0:
            regmap.unmap_registers()
        data = bytes(out)
        print(" ".join((data[32 * i:32 * i + 32] if i < 9 else data[288 + 64 * (i - 9):][:64]).hex()
                       for i in range(RESULTS)))
''')


def test_in_process_the_window_gives_the_cpus_results(built, tmp_path):
    _, library = built
    script = tmp_path / "inprocess.py"
    script.write_text(INPROCESS)
    result = run(sys.executable, script, library, int(AVX512), RESULTS, env=python_env())
    assert result.returncode == 0, result.stderr
    plain, window = result.stdout.splitlines()
    assert window == plain
    check_values(results(window.split()))


# the AVX-512 operations native_ops runs on window operands (results 9..14): each must have been
# emulated (a fault on the window), and give what the CPU gives on a plain buffer
AVX512_MNEMONICS = ("vaddpd", "vfmadd231pd", "vmovdqu64", "vpcompressd", "vpexpandd", "vpcmpgtd")


@pytest.mark.skipif(not AVX512, reason="host CPU lacks avx512f: the AVX-512 operations are not run")
def test_avx512_operations_on_the_window(built):
    executable, _ = built
    plain = run(executable, "plain", "avx512")
    assert plain.returncode == 0, plain.stderr
    without = run(executable, "plain")
    traced = run(sys.executable, "-m", "regmap.cli", "exec", "--stats", executable, "window", "avx512",
                 env=python_env())
    assert traced.returncode == 0, traced.stderr
    for mnemonic in AVX512_MNEMONICS:
        assert f"  {mnemonic}\n" in traced.stderr, (mnemonic, traced.stderr)
    cpu, window = results(plain.stdout.split()), results(traced.stdout.split())
    assert len(cpu) == len(window) == RESULTS
    # the operations ran in the plain run: every AVX-512 result differs from the one it skips
    assert all(cpu[i] != skipped for i, skipped in enumerate(results(without.stdout.split())) if i >= 9)
    for i in range(9, RESULTS):
        assert window[i] == cpu[i], f"result {i}: window {window[i].hex()} CPU {cpu[i].hex()}"
