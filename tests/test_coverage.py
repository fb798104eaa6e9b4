"""`regmap coverage` and `regmap.x86.coverage()`: every memory form the host runs, and how."""
from __future__ import annotations

import json
import subprocess
import sys

import iced_x86
import pytest

from regmap.x86 import coverage, supported_codes
from regmap.x86.emulator import has_python_semantics
from regmap.x86 import host
from regmap.x86.native.plan import Plan
from regmap.x86.native.unsupported import UNSUPPORTED
from regmap.x86.support import in_universe

NATIVE_HOST = host.platform_problem() is None


def test_statuses_follow_the_engines():
    result = coverage()
    assert result.entries
    assert {e.code for e in result.entries if e.status == "python"} >= {e.code for e in result.entries
                                                                         if e.code in supported_codes()}
    python = supported_codes()
    for entry in result.entries:
        if entry.status == "python":
            assert has_python_semantics(entry.code) and not entry.reason
        elif entry.status == "unsupported":
            assert entry.reason and (entry.code in UNSUPPORTED or not NATIVE_HOST)
        else:
            assert entry.status == "native" and NATIVE_HOST
            assert entry.code not in python and not has_python_semantics(entry.code)
            assert Plan(iced_x86.Instruction.create(entry.code), b"").refusal is None, entry.name


@pytest.mark.skipif(not NATIVE_HOST, reason="the native engine needs Linux on x86-64")
def test_at_least_97_percent_of_the_hosts_memory_forms_are_supported():
    result = coverage()
    assert result.fraction >= 0.97, [e.name for e in result.entries if e.status == "unsupported"]


def test_the_universe_is_decided_by_the_cpus_features():
    vaddps = iced_x86.Code.EVEX_VADDPS_ZMM_K1Z_ZMM_ZMMM512B32_ER
    assert in_universe(vaddps, frozenset({"avx512f", "lm"}))
    assert not in_universe(vaddps, frozenset({"avx2", "lm"}))
    assert not in_universe(iced_x86.Code.LEA_R64_M, frozenset({"lm"}))        # never accesses memory
    assert not in_universe(iced_x86.Code.INVLPG_M,
                           host.cpu_flags())                                   # ring 0 only
    names = {e.name for e in coverage().entries}
    assert ("EVEX_VADDPS_ZMM_K1Z_ZMM_ZMMM512B32_ER" in names) == ("avx512f" in host.cpu_flags())
    assert "ADDSD_XMM_XMMM64" in names and "ADD_R64_RM64" in names


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regmap.cli", "coverage", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_lists_every_form_then_the_totals():
    result = run_cli()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    entries = coverage().entries
    assert len(lines) == len(entries) + 1
    assert lines[-1].startswith(f"total {len(entries)}: python ")
    unsupported = run_cli("--unsupported").stdout.splitlines()[:-1]
    assert all("unsupported  (" in line for line in unsupported)
    assert len(unsupported) == coverage().count("unsupported")


def test_cli_json_is_the_same_census():
    data = json.loads(run_cli("--json").stdout)
    result = coverage()
    assert data["total"] == len(result.entries) == len(data["forms"])
    assert data["python"] + data["native"] + data["unsupported"] == data["total"]
    assert {f["name"]: f["status"] for f in data["forms"]} == {e.name: e.status for e in result.entries}


def test_off_linux_x86_64_native_forms_are_unsupported_and_say_why(monkeypatch):
    import regmap
    from regmap.errors import UnsupportedInstruction
    from regmap.x86 import host as native_host
    reason = "the native engine needs Linux (this is darwin)"
    monkeypatch.setattr(native_host, "platform_problem", lambda: reason)
    with pytest.raises(UnsupportedInstruction) as raised:
        regmap.emulate(bytes.fromhex("f2 0f 58 04 25 08 00 00 00"), {})          # addsd xmm0, [8]
    assert raised.value.reason == reason
    assert regmap.emulate(bytes.fromhex("48 03 04 25 08 00 00 00"), {"rcx": 2}).regs["rax"] == 2
