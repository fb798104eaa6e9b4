"""``regmap run`` builds as a C user expects (issue 19, item 3): $CC, $CPPFLAGS, $CFLAGS, $LDFLAGS and
$LDLIBS as make uses them, several sources, compiler options after ``--``, Intel-syntax inline
assembly with ``-masm=intel``."""
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("ar") is None,
                                reason="needs gcc and ar on PATH")

SINE = r"""
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
double half(double);
int main(int argc, char **argv) {
#ifdef GREETING
    puts(GREETING);
#endif
    printf("%.9f\n", half(sin(atof(argv[argc - 1]))));
    return 0;
}
"""
HALF = "double half(double x) { return x / 2; }\n"
# Intel-syntax inline assembly: rcx = 42, then a window read of [8], which is rcx
INTEL = r"""
#include <stdio.h>
int main(void) {
    long value;
    __asm__ volatile ("mov rcx, 41\n\tinc rcx\n\tmov %0, [8]" : "=r"(value) : : "rcx");
    printf("%ld\n", value);
    return 0;
}
"""


def regmap_run(*words, env=None, cwd=None):
    done = subprocess.run([sys.executable, "-m", "regmap", "run", *map(str, words)],
                          capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, **(env or {})})
    if "not allowed to trace" in done.stderr:
        pytest.skip("ptrace is not permitted here: " + done.stderr.strip())
    return done


@pytest.fixture
def sources(tmp_path) -> Path:
    (tmp_path / "sine.c").write_text(SINE)
    (tmp_path / "half.c").write_text(HALF)
    (tmp_path / "intel.c").write_text(INTEL)
    return tmp_path


def expected(x: float) -> str:
    return f"{math.sin(x) / 2:.9f}\n"


def test_two_sources_and_lm_after_a_double_dash(sources):
    done = regmap_run(sources / "sine.c", sources / "half.c", "--", "-lm", "--", "0.5")
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected(0.5)


def test_without_lm_the_link_fails_and_says_why(sources):
    done = regmap_run(sources / "sine.c", sources / "half.c", "0.5")
    assert done.returncode == 1
    assert "cannot build" in done.stderr and "sin" in done.stderr


def test_make_variables_are_honoured(sources):
    subprocess.run(["gcc", "-c", "-o", sources / "half.o", sources / "half.c"], check=True)
    subprocess.run(["ar", "rcs", sources / "libhalf.a", sources / "half.o"], check=True)
    env = {"CPPFLAGS": "-DGREETING='\"hello from CPPFLAGS\"'", "CFLAGS": "-O0 -Wall",
           "LDFLAGS": f"-L{sources}", "LDLIBS": "-lhalf -lm"}
    done = regmap_run(sources / "sine.c", "1.25", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello from CPPFLAGS\n" + expected(1.25)


def test_cc_is_honoured(sources, tmp_path):
    log = tmp_path / "cc.log"
    wrapper = tmp_path / "my-cc"
    wrapper.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\nexec gcc \"$@\"\n")
    wrapper.chmod(0o755)
    done = regmap_run(sources / "intel.c", "--", "-masm=intel", env={"CC": str(wrapper)})
    assert done.returncode == 0, done.stderr
    assert "-masm=intel" in log.read_text()


def test_intel_syntax_inline_assembly_reads_the_window(sources):
    done = regmap_run(sources / "intel.c", "--", "-masm=intel")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "42\n"
    also = regmap_run(sources / "intel.c", env={"CFLAGS": "-masm=intel"})
    assert also.returncode == 0 and also.stdout == "42\n"


def test_arguments_straight_after_the_source_still_go_to_the_program(sources):
    (sources / "args.c").write_text('#include <stdio.h>\nint main(int c, char **v) '
                                    '{ for (int i = 1; i < c; i++) puts(v[i]); return 0; }\n')
    done = regmap_run(sources / "args.c", "one", "two.c", "-x")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "one\ntwo.c\n-x\n"
