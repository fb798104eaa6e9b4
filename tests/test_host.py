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
