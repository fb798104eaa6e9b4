"""regmap exec --translate leaves alone a process whose memory another process shares.

clone(CLONE_VM | SIGCHLD) makes a second process in the parent's memory, and ptrace reports it
as a fork: a site rewritten from outside while that other process may be running on another
core could be met half written (the tracer cannot serialize it), so neither is patched.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import python_env  # noqa: E402
from tracer_host import CC, TRACED_PROGRAMS  # noqa: E402

PROGRAMS = Path(__file__).resolve().parent / "programs"
pytestmark = TRACED_PROGRAMS


def test_a_clone_vm_child_keeps_its_parent_from_being_patched(tmp_path):
    executable = tmp_path / "clone_vm"
    subprocess.run([CC, "-O2", "-fno-delete-null-pointer-checks", "-o", executable,
                    PROGRAMS / "clone_vm.c"], check=True)
    result = subprocess.run([sys.executable, "-m", "regmap.cli", "exec", "--translate=1", "--json",
                             executable], capture_output=True, text=True, timeout=120, env=python_env())
    assert (result.returncode, result.stdout) == (0, "30 0\n"), result.stderr
    stats = next(json.loads(line) for line in result.stderr.splitlines() if '"event":"stats"' in line)
    assert stats["translated"] == []
    assert stats["faults"] == 10          # every execution of the site faulted and was emulated
