"""xsave/xrstor asking for the PKRU component (edx:eax bit 9) are refused by the native engine.

The engine runs the instruction on the host CPU in the thread running regmap (the tracer, the
caller of regmap.emulate, a signal handler) and does not swap PKRU: ``xrstor`` would load the
window's bytes into that thread's protection-key rights (with key 0 access-disabled, the engine's
next access to its own state block faults), ``xsave`` would store them instead of the program's.
"""
from __future__ import annotations

import ctypes
import mmap
import platform
import sys

import pytest

import regmap
from regmap.errors import UnsupportedInstruction
from regmap.x86.native import cpu_flags

pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                                reason="the native engine needs Linux on x86-64")
PKRU = 1 << 9


@pytest.fixture(scope="module")
def rdpkru():
    if "ospke" not in cpu_flags():
        pytest.skip("no protection keys (ospke) on this host")
    page = mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                     prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(bytes.fromhex("31 c9 0f 01 ee c3"))             # xor ecx, ecx; rdpkru; ret
    function = ctypes.CFUNCTYPE(ctypes.c_uint32)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    yield function
    del function


@pytest.mark.parametrize("code", ["0f ae 2c 25 00 01 00 00",          # xrstor [0x100]
                                  "48 0f ae 2c 25 00 01 00 00",       # xrstor64 [0x100]
                                  "0f ae 24 25 00 01 00 00"])         # xsave [0x100]
def test_the_pkru_component_is_refused_and_the_hosts_pkru_kept(rdpkru, code):
    before = rdpkru()
    with pytest.raises(UnsupportedInstruction, match="PKRU"):
        regmap.emulate(code, {"rax": PKRU | 3, "rdx": 0})
    assert rdpkru() == before


def test_without_it_xrstor_still_runs(rdpkru):
    before = rdpkru()
    emulation = regmap.emulate("0f ae 2c 25 00 01 00 00", {"rax": 2, "rdx": 0})   # SSE only
    assert emulation.finished and rdpkru() == before
