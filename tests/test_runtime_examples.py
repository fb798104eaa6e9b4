"""The in-process examples run as documented."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import python_env, why_not_native  # noqa: E402

REASON = why_not_native()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True,
                          env=python_env(), timeout=120)


def test_example_inprocess_prints_through_mapped_registers():
    result = run_example("example_inprocess.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "memory-mapped registers work!\n"
    assert result.stderr == ""


def test_hello_world_calls_by_writing_rsp_rip_rdi_rsi():
    result = run_example("hello_world.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, world!\n...and every call above was a store to page 0.\n"
    assert result.stderr.startswith("(10 page-0 stores emulated: 10 mov)")


def test_hello_world_makes_no_call_instruction():
    source = (EXAMPLES / "hello_world_inprocess.s").read_text()
    body = source.split("hello_world:", 1)[1].split(".size hello_world", 1)[0]
    instructions = [line.split("#")[0].strip() for line in body.splitlines()]
    mnemonics = {line.split()[0] for line in instructions if line and not line.endswith(":")}
    assert not mnemonics & {"call", "jmp", "je", "jne", "jz", "jnz"}, mnemonics
