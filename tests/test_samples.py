"""regmap.x86.samples and `regmap coverage --translation`: how translation takes each form."""
from __future__ import annotations

import json
import subprocess
import sys

from iced_x86 import Code, Decoder, OpCodeInfo, OpKind, Register

from regmap.layout import load_layout
from regmap.x86 import coverage, host
from regmap.x86.samples import (ADDRESS, fast_fault_of, sample, short_stub_of, stub_of,
                                translation_of)
from regmap.x86.trampoline import why_not
from regmap.x86.translate import translate


def test_every_sample_is_its_form_at_a_constant_window_address():
    made = 0
    for entry in coverage().entries:
        code = sample(entry.code)
        if code is None:
            continue
        ins = Decoder(64, code, ip=ADDRESS).decode()
        # fstenv is wait; fnstenv (the site is fnstenv); 66h call/jmp decode as 64-bit ones
        waiting = getattr(Code, "FN" + entry.name[1:], None)
        assert ins.len == len(code), entry.name
        assert ins.code in (entry.code, waiting) or ins.mnemonic == OpCodeInfo(entry.code).mnemonic, \
            entry.name
        memory = [i for i in range(ins.op_count) if ins.op_kind(i) == OpKind.MEMORY]
        assert len(memory) == 1 and ins.memory_base == ins.memory_index == Register.NONE, entry.name
        assert ins.memory_displacement in (8, 0x100), entry.name
        made += 1
    assert made > 3000


def test_the_translation_is_what_the_translators_say():
    layout, width = load_layout(), host.vector_width()
    for code, expected in ((Code.ADD_R64_RM64, "in place"), (Code.ADDSD_XMM_XMMM64, "trampoline"),
                           (Code.MOVSB_M8_M8, "not"), (Code.FXSAVE_M512BYTE, "not")):
        kind, reason = translation_of(code, layout, width)
        assert kind == expected
        encoded = sample(code)
        if encoded is not None:
            assert (translate(ADDRESS, encoded, layout) is not None) == (kind == "in place")
            assert (why_not(ADDRESS, encoded, layout, width) is None) == (kind != "not")
        assert bool(reason) == (kind == "not")


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regmap.cli", "coverage", "--translation", *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_shows_each_forms_translation_and_the_totals():
    text = run_cli()
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert any(line.startswith("ADDSD_XMM_XMMM64 ") and line.endswith(" trampoline") for line in lines)
    assert any(line.startswith("MOVSB_M8_M8 ") and " not  (" in line for line in lines)
    document = json.loads(run_cli("--json").stdout)
    counts = {kind: sum(1 for f in document["forms"] if f["translation"] == kind)
              for kind in ("in place", "trampoline", "not")}
    assert counts == {kind: document[kind] for kind in counts}
    assert lines[-1] == (f"fast faults (a faulting site sent to its trampoline, unpatched): "
                         f"{document['fast faults']} of {document['supported']} "
                         f"({100 * document['fast faults'] / document['supported']:.1f}%)")
    assert lines[-2] == (f"register-addressed, shorter than a jmp rel32 ([rdi + disp8], then dec r10): "
                         f"{document['short register-addressed']} of {document['short']} get a punned "
                         f"stub ({100 * document['short register-addressed'] / document['short']:.1f}%)")
    assert lines[-3] == (f"register-addressed ([rdi + disp32], 5 bytes or more): "
                         f"{document['register-addressed']} of {document['supported']} get a stub "
                         f"({100 * document['register-addressed'] / document['supported']:.1f}%)")
    assert lines[-4] == (f"supported {document['supported']}: in place {counts['in place']}, "
                         f"trampoline {counts['trampoline']}, not {counts['not']}; "
                         f"{100 * (counts['in place'] + counts['trampoline']) / document['supported']:.1f}"
                         "% translated")


def test_a_register_addressed_sample_gets_a_stub_as_the_stub_builder_says():
    layout, width = load_layout(), host.vector_width()
    encoded = sample(Code.ADD_R64_RM64, Register.RDI)
    ins = Decoder(64, encoded, ip=ADDRESS).decode()
    assert ins.memory_base == Register.RDI and ins.memory_displacement == 8 and len(encoded) >= 5
    assert stub_of(Code.ADD_R64_RM64, layout, width) is None
    assert stub_of(Code.ADDSD_XMM_XMMM64, layout, width) is None
    assert stub_of(Code.MOVSB_M8_M8, layout, width)        # a string form: the reason
    assert "bit" in stub_of(Code.BT_RM64_R64, layout, width)


def test_a_short_register_addressed_sample_gets_a_punned_stub_as_the_stub_builder_says():
    layout, width = load_layout(), host.vector_width()
    encoded = sample(Code.ADD_R64_RM64, Register.RDI, short=True)
    ins = Decoder(64, encoded, ip=ADDRESS).decode()
    assert ins.memory_base == Register.RDI and ins.memory_displacement == 8 and len(encoded) == 4
    assert short_stub_of(Code.ADD_R64_RM64, layout, width) is None
    assert short_stub_of(Code.MOVDQU_XMM_XMMM128, layout, width) is None     # [rdi], rdi 0x100
    assert short_stub_of(Code.EVEX_VPADDD_ZMM_K1Z_ZMM_ZMMM512B32, layout, width) == "not short"
    assert short_stub_of(Code.MOVSB_M8_M8, layout, width)   # a string form: the reason


def test_fast_faults_serve_the_forms_with_a_trampoline_in_place_ones_too():
    layout, width = load_layout(), host.vector_width()
    assert fast_fault_of(Code.ADD_R64_RM64, layout, width) is None       # in place when hot
    assert fast_fault_of(Code.ADDSD_XMM_XMMM64, layout, width) is None
    assert "branch" in fast_fault_of(Code.JMP_RM64, layout, width)
    assert "bit" in fast_fault_of(Code.BT_RM64_R64, layout, width)
