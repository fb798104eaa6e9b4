"""The running host's profile against the CPU itself: what `regmap.x86.host` measured is what
the CPU does."""
from __future__ import annotations

import pytest

from regmap.x86 import host

pytestmark = pytest.mark.skipif(host.platform_problem() is not None, reason=str(host.platform_problem()))


def test_mxcsr_mask_is_what_ldmxcsr_takes():
    import native_cpu as N
    mask = host.current().mxcsr_mask
    for bit in range(32):
        assert N.mxcsr_accepted(0x1F80 | 1 << bit) == bool(mask >> bit & 1), bit
    assert host.MXCSR_WRITABLE == mask


def test_profile_agrees_with_the_kernels_flags():
    p = host.current()
    assert p.vendor in ("GenuineIntel", "AuthenticAMD", "HygonGenuine", "CentaurHauls", "  Shanghai  ")
    assert p.flags == host.cpu_flags()
    # the kernel names a feature only where XCR0 enables its state
    assert ("avx" in p.flags) == bool(p.xcr0 >> host.AVX & 1)
    assert ("avx512f" in p.flags) == bool(p.xcr0 >> host.HI16_ZMM & 1) == (host.HI16_ZMM in p.components)
    assert ("amx_tile" in p.flags) == (host.XTILEDATA in p.components)
    for number, (offset, size) in p.components.items():
        assert offset >= 576 and size > 0, number


def test_the_pure_emulator_loads_where_no_page_may_be_executable(tmp_path):
    """A kernel that refuses executable pages (SELinux deny_execmem): no CPUID, no native engine,
    but `regmap.emulate` works, with the MXCSR_MASK the kernel's flags tell."""
    import subprocess
    import sys
    script = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.prctl(65, 1, 0, 0, 0) != 0:        # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN\n"
        "    raise SystemExit('no-mdwe')\n"
        "import regmap\n"
        "from regmap.x86 import host\n"
        "result = regmap.emulate('48 03 04 25 08 00 00 00', {'rax': 1, 'rcx': 2})\n"
        "print(result.regs['rax'], host.current().name, hex(host.MXCSR_WRITABLE))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    if "no-mdwe" in done.stderr:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+) to refuse executable pages with")
    assert done.returncode == 0, done.stderr
    rax, name, mask = done.stdout.split(maxsplit=2)
    assert rax == "3" and name == "unmeasured"
    assert int(mask.split()[-1], 16) in (0xFFFF, 0x2FFFF)
