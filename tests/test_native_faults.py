"""Exceptions of instructions the native engine runs reach the program as the CPU delivers them.

#GP (legacy SSE on a misaligned operand), #XM (an unmasked SIMD exception), #MF (a pending unmasked
x87 exception), #UD and #AC: the same signal, si_code and si_addr as the same code gets without
regmap on a plain buffer, the state untouched, and the engine usable for the next instruction.
"""
from __future__ import annotations

import platform
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import python_env  # noqa: E402

import regmap  # noqa: E402
from regmap.errors import InstructionFault  # noqa: E402
from regmap.pure import PureMachine  # noqa: E402
from regmap.x86 import Emulator  # noqa: E402

PROGRAMS = Path(__file__).resolve().parent / "programs"
CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                                reason="the native engine needs Linux on x86-64")
ONE = 0x3FF0000000000000
SI_KERNEL, FPE_FLTDIV, ILL_ILLOPN, BUS_ADRALN = 0x80, 3, 2, 1

# (name, code, registers, signal, si_code, si_addr: None = the instruction's address)
CASES = [
    ("#GP addps misaligned", "0f 58 04 25 08 00 00 00", {}, signal.SIGSEGV, SI_KERNEL, 0),
    ("#XM divsd by zero, ZM unmasked", "f2 0f 5e 04 25 08 00 00 00", {"mxcsr": 0x1D80, "xmm0": ONE, "rcx": 0},
     signal.SIGFPE, FPE_FLTDIV, None),
    ("#MF pending zero-divide, fld", "dd 04 25 08 00 00 00",
     {"fcw": 0x37B, "fsw": 0x3884, "ftw": 0x80, "st0": 0}, signal.SIGFPE, FPE_FLTDIV, None),
    ("#UD ud1", "0f b9 04 25 08 00 00 00", {}, signal.SIGILL, ILL_ILLOPN, None),
    ("#AC fld misaligned, AC set", "dd 04 25 09 00 00 00", {"rflags": 0x40202}, signal.SIGBUS, BUS_ADRALN, 0),
]


@pytest.mark.parametrize("name, code, regs, signo, si_code, si_addr", CASES, ids=[c[0] for c in CASES])
def test_pure_backend_raises_the_cpus_exception_and_changes_nothing(name, code, regs, signo, si_code, si_addr):
    rip = 0x400000
    values = {"rip": rip, "rflags": 0x202, "mxcsr": 0x1F80, "fcw": 0x37F, "rcx": ONE, **regs}
    if "xmm0" in values:
        values["zmm0"] = values.pop("xmm0")
    machine = PureMachine(values, {rip: bytes.fromhex(code)})
    before = dict(machine.registers)
    with pytest.raises(InstructionFault) as raised:
        Emulator().step(machine)
    fault = raised.value
    assert (fault.signo, fault.si_code) == (signo, si_code), fault
    assert fault.si_addr == (rip if si_addr is None else si_addr)
    assert machine.registers == before
    # the engine goes on: the next native instruction runs
    after = regmap.emulate(bytes.fromhex("f2 0f 58 04 25 08 00 00 00"), {"rcx": ONE, "xmm0": ONE})
    assert after.regs["xmm0"] == 0x4000000000000000          # 1.0 + 1.0


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if CC is None:
        pytest.skip("no C compiler to build the test program")
    directory = tmp_path_factory.mktemp("native-faults")
    executable, library = directory / "faults", directory / "libfaults.so"
    subprocess.run([CC, "-O1", "-o", executable, PROGRAMS / "native_faults.c"], check=True)
    subprocess.run([CC, "-O1", "-shared", "-fPIC", "-o", library, PROGRAMS / "native_faults.c"], check=True)
    return executable, library


EXPECTED = {0: (signal.SIGSEGV, SI_KERNEL), 1: (signal.SIGFPE, FPE_FLTDIV), 2: (signal.SIGFPE, FPE_FLTDIV),
            3: (signal.SIGILL, ILL_ILLOPN), 4: (signal.SIGBUS, BUS_ADRALN)}


def test_under_regmap_exec_each_exception_is_the_cpus(built):
    executable, _ = built
    plain = subprocess.run([executable, "plain"], capture_output=True, text=True, timeout=60)
    traced = subprocess.run([sys.executable, "-m", "regmap.cli", "exec", executable, "window"],
                            capture_output=True, text=True, timeout=60, env=python_env())
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout == plain.stdout
    for line in traced.stdout.splitlines():
        which, signo, code, _ = map(int, line.split())
        assert (signo, code) == EXPECTED[which], line


INPROCESS = textwrap.dedent('''
    import ctypes, sys
    import regmap
    lib = ctypes.CDLL(sys.argv[1])
    lib.fault_case.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    buffer = (ctypes.c_char * 4096)()
    for base in (ctypes.addressof(buffer), 0):
        line = []
        for which in (1, 2, 3):         # delivered after regmap's handler returns: the program's own
            out = (ctypes.c_long * 3)()
            if base == 0:
                regmap.map_registers(fast_faults=int(sys.argv[2]))
            lib.fault_case(base, which, out)
            if base == 0:
                regmap.unmap_registers()
            line.append("%d:%d,%d,%d" % (which, out[0], out[1], out[2]))
        print(" ".join(line))
''')


@pytest.mark.parametrize("fast_faults", [0, 1])
def test_in_process_sigfpe_and_sigill_reach_the_programs_handler(built, tmp_path, fast_faults):
    """The program's handler siglongjmps out.  With fast faults after one fault, the site before
    the faulting one gets a trampoline, and with it regmap's SIGFPE/SIGILL handler (a fault
    inside a trampoline must be mapped back before the program sees it): the program's handler
    is then reached through it, and must be jumped to, not called from Python (the process
    hung)."""
    _, library = built
    script = tmp_path / "inprocess.py"
    script.write_text(INPROCESS)
    result = subprocess.run([sys.executable, script, library, str(fast_faults)], capture_output=True,
                            text=True, timeout=60, env=python_env())
    assert result.returncode == 0, result.stderr
    plain, window = result.stdout.splitlines()
    assert window == plain
    assert window == "1:8,3,1 2:8,3,1 3:4,2,1"


DIES = textwrap.dedent('''
    import ctypes, resource, sys
    import regmap
    if sys.argv[3] == "core":    # the core file's notes only: its siginfo is what is checked
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        with open("/proc/self/coredump_filter", "w") as dump_filter:
            dump_filter.write("0")
    else:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    lib = ctypes.CDLL(sys.argv[1])
    lib.raw_case.argtypes = [ctypes.c_void_p, ctypes.c_int]
    buffer = (ctypes.c_char * 4096)()
    if sys.argv[2] == "window":
        regmap.map_registers()
        lib.raw_case(0, int(sys.argv[4]))
    else:
        lib.raw_case(ctypes.addressof(buffer), int(sys.argv[4]))
''')


def test_in_process_general_protection_ends_the_program_as_without_regmap(built, tmp_path):
    _, library = built
    script = tmp_path / "dies.py"
    script.write_text(DIES)
    ends = [subprocess.run([sys.executable, script, library, mode, "no core", "0"], capture_output=True,
                           text=True, timeout=60, env=python_env()) for mode in ("plain", "window")]
    assert [end.returncode for end in ends] == [-signal.SIGSEGV, -signal.SIGSEGV], [e.stderr for e in ends]
    assert ends[1].stderr == ""


@pytest.mark.parametrize("case", [0, 5], ids=["misaligned addps", "fxrstor of a bad MXCSR"])
def test_in_process_general_protection_dies_with_the_cpus_siginfo(built, tmp_path, case):
    """The core file's siginfo is the #GP's (SI_KERNEL, address 0) under regmap too.  A #GP the
    CPU finds only in the data it has read (case 5) would become a page fault on the window if
    the instruction simply ran again."""
    _, library = built
    script = tmp_path / "dies.py"
    script.write_text(DIES)
    seen = []
    for mode in ("plain", "window"):
        directory = tmp_path / mode
        directory.mkdir()
        end = subprocess.run([sys.executable, script, library, mode, "core", str(case)], cwd=directory,
                             capture_output=True, text=True, timeout=60, env=python_env())
        assert end.returncode == -signal.SIGSEGV, end.stderr
        cores = sorted(directory.glob("core*"))
        if not cores:
            pytest.skip("the kernel writes no core file here (core_pattern "
                        f"{Path('/proc/sys/kernel/core_pattern').read_text().strip()!r})")
        seen.append(core_siginfo(cores[0]))
    plain, window = seen
    assert plain == (signal.SIGSEGV, SI_KERNEL, 0)
    assert window == plain


def core_siginfo(core: Path) -> tuple[int, int, int]:
    """(si_signo, si_code, si_addr) from a core file's NT_SIGINFO note."""
    import struct
    data = core.read_bytes()
    assert data[:4] == b"\x7fELF"
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        kind, _, offset, _, _, size = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if kind != 4:                                   # PT_NOTE
            continue
        at, end = offset, offset + size
        while at < end:
            namesz, descsz, note = struct.unpack_from("<III", data, at)
            desc = at + 12 + (namesz + 3) // 4 * 4
            if note == 0x53494749:                      # NT_SIGINFO
                signo, _, code, _, address = struct.unpack_from("<iiiiQ", data, desc)
                return signo, code, address
            at = desc + (descsz + 3) // 4 * 4
    raise AssertionError(f"{core}: no NT_SIGINFO note")
