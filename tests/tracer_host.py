"""What the tracer's tests share: the host they need and the C compiler that builds their programs."""
from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAMS = Path(__file__).resolve().parent / "programs"
CC = shutil.which("cc") or shutil.which("gcc")
ON_LINUX_X86_64 = pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                                     reason="the tracer needs Linux on x86-64")
NEEDS_CC = pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc) on PATH to build test programs")
# a test module's `pytestmark` when every test builds a program and traces it
TRACED_PROGRAMS = [ON_LINUX_X86_64, NEEDS_CC]


def build_program(tmp_path_factory, name: str) -> Path:
    """tests/programs/NAME.c built into a fresh directory (its null-pointer accesses kept)."""
    executable = tmp_path_factory.mktemp(name) / name
    subprocess.run([CC, "-O2", "-fno-delete-null-pointer-checks", "-o", executable,
                    PROGRAMS / f"{name}.c"], check=True)
    return executable
