"""`mov Sreg, [window]` refuses exactly the selectors the host CPU refuses (#GP).

ds, es and ss are loaded natively in this process (the native runner catches the #GP; in 64-bit
mode their contents do not matter to the code that follows).  fs and gs carry the thread pointer,
so they are loaded in forked children that exit with a raw system call right after the load.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import platform
import signal
import subprocess
import sys
import textwrap

import pytest

import regmap
from regmap.errors import GeneralProtection
from regmap.x86.selectors import refusal

NATIVE = sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")
if NATIVE:
    import native_cpu as N
native = pytest.mark.skipif(not NATIVE, reason="needs an x86-64 Linux host to load selectors natively")

LOAD_FROM_0 = {"es": "8e 04 25 00 00 00 00", "ss": "8e 14 25 00 00 00 00",   # mov es/ss/ds, [0]
               "ds": "8e 1c 25 00 00 00 00", "fs": "8e 24 25 00 00 00 00",
               "gs": "8e 2c 25 00 00 00 00"}
# every GDT index of a Linux x86-64 process and one past it, each RPL; some LDT selectors; odd ones
SELECTORS = [*range(0x88), 0x4, 0x7, 0x2F, 0x37, 0x7F, 0xFFFB, 0xFFFF]
SAMPLE = [0, 3, 0x10, 0x18, 0x1B, 0x20, 0x23, 0x28, 0x2B, 0x30, 0x33, 0x60, 0x63, 0x78, 0x7B, 0x83, 0x2F]


def emulator_takes(register: str, selector: int) -> bool:
    try:
        result = regmap.emulate(bytes.fromhex(LOAD_FROM_0[register]), {"rax": selector})
    except GeneralProtection:
        return False
    assert result.regs[register] == selector
    return True


def test_the_issues_example_is_refused():
    """mov ss, [0x192] loading 0x33 (the user code segment)."""
    with pytest.raises(GeneralProtection, match="ss"):
        regmap.emulate(bytes.fromhex("8e 14 25 92 01 00 00"), {"ymm4": 0x33 << 8 * 0x12})


def test_the_user_data_segment_loads_everywhere_and_null_everywhere_but_ss():
    for register in LOAD_FROM_0:
        assert emulator_takes(register, 0x2B)
        assert emulator_takes(register, 0) == (register != "ss")


def cpu_takes(register: str, selector: int) -> bool:
    state = N.NativeState()
    state.shadow = selector.to_bytes(2, "little") + bytes(N.SHADOW_SIZE - 2)
    try:
        N.run_native(bytes.fromhex(LOAD_FROM_0[register]), state)
    except N.NativeFault as fault:
        assert (fault.signo, fault.si_code) == (signal.SIGSEGV, 0x80), fault   # #GP, nothing else
        return False
    return True


@native
@pytest.mark.parametrize("register", ["ds", "es", "ss"])
def test_ds_es_ss_agree_with_the_cpu(register):
    try:
        taken = {s for s in SELECTORS if cpu_takes(register, s)}
    finally:
        cpu_takes("ds", 0), cpu_takes("es", 0)       # back to the null selectors a process runs with
    differing = {hex(s): refusal(register, s) or "taken" for s in SELECTORS
                 if emulator_takes(register, s) != (s in taken)}
    assert not differing, f"CPU takes {sorted(map(hex, taken))}"


def _load_in_child(register: str, selector: int) -> bool:
    """Whether a forked child survives loading `selector` into fs or gs (then exit_group(0))."""
    code = (b"\xb8" + selector.to_bytes(4, "little")                 # mov eax, selector
            + {"fs": b"\x8e\xe0", "gs": b"\x8e\xe8"}[register]         # mov fs/gs, eax
            + b"\xb8\xe7\x00\x00\x00\x31\xff\x0f\x05")                 # exit_group(0)
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    function = ctypes.CFUNCTYPE(None)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    pid = os.fork()
    if pid == 0:
        try:
            import faulthandler
            faulthandler.disable()
            signal.signal(signal.SIGSEGV, signal.SIG_DFL)
            function()
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGSEGV
        return False
    assert os.WEXITSTATUS(status) == 0
    return True


@native
@pytest.mark.parametrize("register", ["fs", "gs"])
def test_fs_gs_agree_with_the_cpu(register):
    differing = {hex(s): refusal(register, s) or "taken" for s in SAMPLE
                 if emulator_takes(register, s) != _load_in_child(register, s)}
    assert not differing


IN_PROCESS = textwrap.dedent("""
    import ctypes, mmap, resource, regmap
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    code = bytes.fromhex("48 31 c0 8e 1c 25 00 00 00 00 c3")      # xor rax, rax; mov ds, [0]; ret
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    load = ctypes.CFUNCTYPE(None)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    regmap.map_registers()
    load()
    print("went on past the load")
""")


@native
@pytest.mark.parametrize("seed", ["0", "1", "2", "3"])
def test_a_selector_load_the_runtime_cannot_make_is_a_genuine_fault(seed):
    """The in-process runtime cannot set ds from its handler: one 'unsupported instruction' line,
    then the fault, with nothing of the instruction applied (rip not advanced past it), whatever
    order the registers are written in (the hash seed decides it)."""
    env = dict(os.environ, PYTHONHASHSEED=seed)
    env.pop("PYTHONFAULTHANDLER", None)
    done = subprocess.run([sys.executable, "-c", IN_PROCESS], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == -signal.SIGSEGV and done.stdout == ""
    assert done.stderr.startswith("regmap: unsupported instruction at ")
    assert "(mov ds,[0])" in done.stderr and "cannot set ds" in done.stderr
