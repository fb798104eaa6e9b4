"""regmap's SIGTRAP handler (installed while code is rewritten in a multi-threaded process) forwards
every SIGTRAP that is not its own as the program's disposition would have handled it."""
from __future__ import annotations

import platform
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import python_env  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                                reason="the in-process runtime needs Linux on x86-64")


def run(disposition: str, send: str) -> subprocess.CompletedProcess:
    script = f"""
import os, signal, ctypes
signal.signal(signal.SIGTRAP, {disposition})
from regmap.runtime import patch
patch.install_trap_handler()
{send}
print("survived", flush=True)
"""
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=python_env(), timeout=60)


@pytest.mark.parametrize("send", ["os.kill(os.getpid(), signal.SIGTRAP)",
                                  "import threading; signal.pthread_kill(threading.get_ident(), signal.SIGTRAP)"])
def test_an_ignored_sigtrap_sent_by_a_process_stays_ignored(send):
    result = run("signal.SIG_IGN", send)
    assert (result.returncode, result.stdout) == (0, "survived\n"), result.stderr


def test_a_sigtrap_sent_under_the_default_action_still_kills():
    result = run("signal.SIG_DFL", "os.kill(os.getpid(), signal.SIGTRAP)")
    assert result.returncode == -signal.SIGTRAP


def test_an_int3_under_sig_ign_still_kills_as_the_kernel_forces_it():
    # a trap the CPU raises is forced through SIG_IGN: the program dies of it, as without regmap
    int3 = ("import mmap; m = mmap.mmap(-1, 4096, prot=7); m.write(bytes([0xCC, 0xC3])); "
            "ctypes.CFUNCTYPE(None)(ctypes.addressof(ctypes.c_char.from_buffer(m)))()")
    result = run("signal.SIG_IGN", int3)
    assert result.returncode == -signal.SIGTRAP, result.stderr
