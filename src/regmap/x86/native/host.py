"""The host: whether the native engine can run here, and which CPU features it has.

The engine needs Linux on x86-64 (it maps a low RWX region and runs machine
code generated with iced-x86).  Which instructions the host CPU executes is
decided by iced-x86's per-`Code` CPUID feature lists, checked against the
kernel's feature flags in /proc/cpuinfo.
"""
from __future__ import annotations

import functools
import platform
import sys

from iced_x86 import CpuidFeature, Instruction

# iced-x86 CpuidFeature names whose /proc/cpuinfo spelling is not simply the name in lower case
# ("" = every x86-64 CPU has it).  Spellings only: which features exist comes from iced-x86.
_CPUINFO_SPELLING = {
    "INTEL8086": "", "INTEL186": "", "INTEL286": "", "INTEL386": "", "INTEL486": "", "X64": "lm",
    "CPUID": "", "MULTIBYTENOP": "", "PAUSE": "", "FPU": "fpu", "FPU287": "fpu", "FPU387": "fpu",
    "CMOV": "cmov", "CX8": "cx8", "CMPXCHG16B": "cx16", "SSE3": "pni", "LZCNT": "abm",
    "PREFETCHW": "3dnowprefetch", "SHA": "sha_ni", "CLFSH": "clflush", "AVX512_IFMA": "avx512ifma",
    "AVX512_VBMI": "avx512vbmi", "SEP": "sep", "SYSCALL": "syscall", "TSC": "tsc", "MSR": "msr",
    "FXSR": "fxsr", "RDTSCP": "rdtscp", "D3NOW": "3dnow", "D3NOWEXT": "3dnowext", "HLE": "hle",
    "RTM": "rtm", "MPX": "mpx", "CET_SS": "user_shstk", "CET_IBT": "ibt", "KL": "keylocker",
}
_FEATURE_NAMES = {value: name for name, value in vars(CpuidFeature).items()
                  if isinstance(value, int) and not name.startswith("_")}


def platform_problem() -> str | None:
    """Why the native engine cannot run on this host, or None if it can."""
    if sys.platform != "linux":
        return f"the native engine needs Linux (this is {sys.platform})"
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"the native engine needs an x86-64 CPU (this is {platform.machine()})"
    return None


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The feature flags of the host CPU, as /proc/cpuinfo spells them."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


# MXCSR bits software may set (flags, masks, rounding, FZ, DAZ); the rest are reserved.  AMD's
# misaligned-SSE mode adds MM (bit 17) where CPUID says MisAlignSse (/proc/cpuinfo: misalignsse):
# that CPU's LDMXCSR, and the kernel, take it.
MXCSR_WRITABLE = 0xFFFF | (1 << 17 if "misalignsse" in cpu_flags() else 0)


def feature_flag(feature: int) -> str:
    """The /proc/cpuinfo flag of an iced-x86 CpuidFeature ("" if every x86-64 CPU has it)."""
    name = _FEATURE_NAMES.get(feature, str(feature))
    return _CPUINFO_SPELLING.get(name, name.lower())


@functools.lru_cache(maxsize=None)
def missing_features(code: int, flags: frozenset[str] | None = None) -> tuple[str, ...]:
    """The features ``code`` needs that the CPU with /proc/cpuinfo ``flags`` (the host's by
    default) lacks: empty if it runs the instruction."""
    have = cpu_flags() if flags is None else flags
    needed = {feature_flag(f) for f in Instruction.create(code).cpuid_features()} - {""}
    return tuple(sorted(needed - have))


@functools.lru_cache(maxsize=None)
def vector_width() -> int:
    """Bits of vector state the host has: 512, 256 or 128."""
    flags = cpu_flags()
    if "avx512f" in flags:
        return 512
    if "avx" in flags:
        return 256
    return 128


@functools.lru_cache(maxsize=None)
def vector_count() -> int:
    return 32 if vector_width() == 512 else 16


@functools.lru_cache(maxsize=None)
def wide_opmasks() -> bool:
    """64-bit opmask registers (AVX512BW); without it k0..k7 are 16 bits."""
    return "avx512bw" in cpu_flags()
