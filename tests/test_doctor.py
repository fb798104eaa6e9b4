"""`regmap doctor`: its JSON schema, its host facts (regmap.x86.host's), and that its self-test
can fail: a broken semantic makes it exit non-zero and say where."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from regmap.x86 import host

pytestmark = pytest.mark.skipif(host.platform_problem() is not None,
                                reason="the self-test runs instructions on the CPU: Linux x86-64 only")


@pytest.fixture(scope="module")
def report():
    done = subprocess.run([sys.executable, "-m", "regmap", "doctor", "--json"],
                          capture_output=True, text=True, timeout=120)
    document = json.loads(done.stdout)
    assert done.returncode == (0 if document["ok"] else 1), done.stderr
    return document


def test_the_document_has_the_documented_fields(report):
    assert report["schema"] == 1
    assert set(report) >= {"schema", "regmap", "ok", "cpu", "kernel", "ptrace", "native_engine",
                           "seed", "backends", "cases", "disagreements", "problems", "seconds"}
    assert set(report["backends"]) == {"pure", "in-process", "fast faults", "traced"}
    for backend in report["backends"].values():
        assert backend["status"] in ("ok", "failed", "skipped")
        assert set(backend) >= {"detail", "agree", "disagree"}
    families = {case["family"] for case in report["cases"]}
    assert families >= {"mov", "alu", "bit", "string", "stack", "cmov-setcc", "sse", "avx",
                        "avx512", "x87", "shift", "mul-div"}
    for case in report["cases"]:
        assert case["status"] in ("ok", "failed", "skipped")
        assert case["engine"] in ("python", "native", "unsupported")
        bytes.fromhex(case["code"])
    assert {case["engine"] for case in report["cases"]} >= {"python", "native"}
    for entry in report["disagreements"]:
        assert set(entry) == {"form", "family", "engine", "backend", "register", "expected",
                              "got", "error"}
    assert isinstance(report["ptrace"]["available"], bool)
    assert isinstance(report["native_engine"]["available"], bool)


def test_the_host_facts_are_regmap_x86_host_s(report):
    profile = host.current()
    cpu = report["cpu"]
    assert (cpu["vendor"], cpu["family"], cpu["model"], cpu["stepping"]) == (
        profile.vendor, profile.family, profile.model, profile.stepping)
    assert cpu["xcr0"] == profile.xcr0
    assert cpu["mxcsr_mask"] == profile.mxcsr_mask
    assert cpu["vector_width"] == profile.vector_width
    assert cpu["xsave"]["size"] == profile.xsave_size(profile.xcr0)
    assert {c["number"]: (c["offset"], c["size"]) for c in cpu["xsave"]["components"]} == dict(
        profile.components)
    assert all(c["name"] == host.COMPONENT_NAMES[c["number"]] for c in cpu["xsave"]["components"])
    assert set(cpu["features"]) <= profile.flags
    assert not set(cpu["missing_features"]) & profile.flags


def test_the_verdict_is_the_cases(report):
    ran = [case for case in report["cases"] if case["status"] != "skipped"]
    assert ran
    assert report["ok"] == (not report["disagreements"] and not report["problems"]
                            and all(case["status"] == "ok" for case in ran))
    assert report["backends"]["pure"]["agree"] + report["backends"]["pure"]["disagree"] == len(ran)


def test_the_text_report_names_the_host(capsys):
    from regmap.cli import main
    status = main(["doctor"])
    out = capsys.readouterr().out
    profile = host.current()
    assert f"{profile.vendor} family {profile.family:#x} model {profile.model:#x}" in out
    assert "MXCSR_MASK" in out and "vm.mmap_min_addr" in out
    assert ("ok: regmap works" in out) == (status == 0)


def test_a_broken_semantic_fails_the_doctor(monkeypatch, capsys):
    """``add`` made to get rax wrong by one bit: the doctor must exit 1 and name the form."""
    from regmap.cli import main
    from regmap.x86.emulator import Emulator
    step = Emulator.step

    def broken(self, machine, trace=False, anywhere=False):
        result = step(self, machine, trace, anywhere)
        if result.mnemonic == "add":
            machine.write_register("rax", machine.read_register("rax") ^ 1 << 7)
        return result

    monkeypatch.setattr(Emulator, "step", broken)
    status = main(["doctor"])
    out = capsys.readouterr().out
    assert status == 1
    assert "DISAGREE add rax, qword ptr [0x8]" in out
    assert "pure: rax expected" in out
    assert "FAILED" in out


def test_the_fast_faults_backend_runs_most_forms_through_the_handler_s_machine_code(report):
    fast = report["backends"]["fast faults"]
    assert fast["status"] == "ok", report["disagreements"]
    served = int(fast["detail"].split(", ")[1].split()[0])
    assert served > len(report["cases"]) // 2


def test_a_forbidden_ptrace_skips_the_traced_backend(monkeypatch):
    from regmap import doctor
    from regmap.doctor import facts
    monkeypatch.setattr(facts, "ptrace", lambda: {"available": False, "ptrace_scope": 3,
                                                  "detail": "PTRACE_SEIZE of a child failed"})
    report = doctor.examine(backends=("pure", "traced"))
    assert report["backends"]["traced"]["status"] == "skipped"
    assert "ptrace" in report["backends"]["traced"]["detail"]
    assert report["backends"]["in-process"]["status"] == "skipped"
    assert report["backends"]["pure"]["status"] == "ok"
    assert report["ok"], report["disagreements"]
