"""What the tracer's tests share: the host they need and the C compiler that builds their programs."""
from __future__ import annotations

import platform
import shutil
import sys

import pytest

CC = shutil.which("cc") or shutil.which("gcc")
ON_LINUX_X86_64 = pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                                     reason="the tracer needs Linux on x86-64")
NEEDS_CC = pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc) on PATH to build test programs")
# a test module's `pytestmark` when every test builds a program and traces it
TRACED_PROGRAMS = [ON_LINUX_X86_64, NEEDS_CC]
