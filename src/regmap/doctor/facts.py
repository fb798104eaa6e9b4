"""What the doctor reports about the machine: the CPU (from `regmap.x86.host`, never measured
again here), the kernel settings regmap depends on, whether ptrace is allowed (a real trial),
and whether the native engine starts."""
from __future__ import annotations

import ctypes
import os
import platform
import signal
import sys

from regmap.x86 import host

# the /proc/cpuinfo features regmap's code depends on: the XSAVE layout, the vector width and
# opmasks, the instruction sets of the native engine's forms and of the doctor's sample
FEATURES = ("fxsr", "xsave", "sse", "sse2", "pni", "ssse3", "sse4_1", "sse4_2", "popcnt", "movbe",
            "aes", "pclmulqdq", "avx", "avx2", "fma", "bmi1", "bmi2", "avx512f", "avx512dq",
            "avx512bw", "avx512vl", "pku", "amx_tile")


def cpu(profile: host.Profile) -> dict:
    mask = profile.xcr0
    return {
        "vendor": profile.vendor, "family": profile.family, "model": profile.model,
        "stepping": profile.stepping,
        "features": [name for name in FEATURES if name in profile.flags],
        "missing_features": [name for name in FEATURES if name not in profile.flags],
        "vector_width": profile.vector_width,
        "xcr0": profile.xcr0,
        "xsave": {
            "size": profile.xsave_size(mask),
            "components": [{"number": number, "name": host.COMPONENT_NAMES.get(number, f"#{number}"),
                            "offset": offset, "size": size}
                           for number, (offset, size) in sorted(profile.components.items())],
        },
        "mxcsr_mask": profile.mxcsr_mask,
    }


def _read(path: str) -> str | None:
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError:
        return None


def kernel() -> dict:
    value = _read("/proc/sys/vm/mmap_min_addr")
    return {"system": platform.system(), "release": platform.release(),
            "mmap_min_addr": int(value) if value and value.isdigit() else None}


_PTRACE_SEIZE = 0x4206
_SCOPES = {0: "classic", 1: "restricted to descendants", 2: "admin only", 3: "no attach"}


def ptrace() -> dict:
    """Whether this process may trace a child as ``regmap exec`` does: PTRACE_SEIZE of a forked
    child, tried for real (Yama's ptrace_scope, seccomp and container policies all show there)."""
    scope_text = _read("/proc/sys/kernel/yama/ptrace_scope")
    scope = int(scope_text) if scope_text and scope_text.isdigit() else None
    result = {"available": False, "ptrace_scope": scope, "detail": ""}
    if sys.platform != "linux":
        result["detail"] = f"ptrace needs Linux (this is {sys.platform})"
        return result
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                           # the child waits until its parent is done with it
        try:
            os.close(write_end)
            os.read(read_end, 1)
        finally:
            os._exit(0)
    os.close(read_end)
    try:
        ctypes.set_errno(0)
        if libc.ptrace(_PTRACE_SEIZE, pid, None, None) == 0:
            result["available"] = True
            result["detail"] = "PTRACE_SEIZE of a child works"
        else:
            error = ctypes.get_errno()
            result["detail"] = f"PTRACE_SEIZE of a child failed: {os.strerror(error)}"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.close(write_end)
        os.waitpid(pid, 0)
    if scope is not None:
        result["detail"] += f" (Yama ptrace_scope {scope}: {_SCOPES.get(scope, '?')})"
    return result


def native_engine() -> dict:
    """Whether the native engine's region (code, shadow page, stack) can be made here."""
    problem = host.platform_problem()
    if problem:
        return {"available": False, "detail": problem}
    try:
        from regmap.x86.native import region
        made = region.ensure()
    except OSError as error:
        return {"available": False, "detail": f"it does not start: {error}"}
    return {"available": True, "detail": f"starts (its region at {made.base:#x})"}
