"""`regmap emulate`: assembling, initial values, text and JSON output, errors."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import regmap
from regmap.cli import main

needs_as = pytest.mark.skipif(shutil.which("as") is None, reason="no assembler (as) on PATH")
ADC_AL_CH_SLOT = "12 04 25 09 00 00 00"             # adc al, [9]


@pytest.fixture
def regmap_cli(capsys):
    """Run ``regmap ARGS`` in this process; its exit status, stdout and stderr."""
    def run(*args):
        status = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, status, out, err)
    return run


@needs_as
def test_the_issue_example(regmap_cli):
    done = regmap_cli("emulate", "adc al, [9]", "rax=0xff", "rcx=0x100", "cf=1")
    assert done.returncode == 0, done.stderr
    expected = regmap.emulate(ADC_AL_CH_SLOT, {"rax": 0xFF, "rcx": 0x100, "cf": 1})
    lines = done.stdout.splitlines()
    assert lines[0].split()[:8] == ["0x400000", *ADC_AL_CH_SLOT.split()]
    assert lines[0].endswith("adc al,[9]")
    assert lines[1].split() == ["read", "[0x9]", "1", "byte", "=", "0x1", "(ch)"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:]}
    for name, (before, after) in expected.changed.items():
        assert rows[name] == [hex(before), "->", hex(after)]
    for name, (before, after) in expected.changed_flags.items():
        assert rows[name] == [str(before), "->", str(after)]
    assert set(rows) == set(expected.changed) | set(expected.changed_flags)
    assert {"rax", "rip", "rflags"} <= set(rows)


@needs_as
def test_a_snippet_with_a_loop_assembles_with_its_label(regmap_cli):
    done = regmap_cli("emulate", "l: add rax, [8]; dec rcx; jnz l", "rcx=4", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["finished"] and len(result["steps"]) == 12
    assert result["changed"]["rax"] == ["0x0", "0xa"] and result["changed"]["rcx"] == ["0x4", "0x0"]
    assert result["steps"][0]["accesses"] == [{"address": 8, "size": 8, "write": False,
                                              "names": ["rcx"], "before": "0x4", "after": "0x4"}]
    assert result["flags"]["zf"] == 1 and result["flags_changed"]["zf"] == [0, 1]


def test_hex_input_and_json_match_the_api(regmap_cli):
    done = regmap_cli("emulate", "--hex", ADC_AL_CH_SLOT, "rax=0xff", "rcx=0x100", "cf=1", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    expected = regmap.emulate(ADC_AL_CH_SLOT, {"rax": 0xFF, "rcx": 0x100, "cf": 1})
    assert result["changed"] == {name: [hex(b), hex(a)] for name, (b, a) in expected.changed.items()}
    assert result["flags"] == expected.flags
    assert [step["disassembly"] for step in result["steps"]] == ["adc al,[9]"]


def test_max_steps_is_reported(regmap_cli):
    loop = "48 03 04 25 08 00 00 00 48 ff c9 75 f3"
    done = regmap_cli("emulate", "--hex", loop, "rcx=100", "--max-steps", "5")
    assert done.returncode == 1                   # not a finished result (issue 19, item 8)
    assert done.stderr == ("regmap emulate: stopped after 5 instructions (--max-steps 5); "
                           "rip 0x40000b is still in the code\n")
    assert "stopped after 5 instructions (--max-steps)" in done.stdout


def test_random_values_are_seeded_and_explicit_values_win(regmap_cli):
    args = ("emulate", "--random", "--json", "--hex", "48 89 c8", "rcx=7")   # mov rax, rcx
    first, second = regmap_cli(*args, "--seed", "1"), regmap_cli(*args, "--seed", "1")
    assert first.returncode == 0 and first.stdout == second.stdout
    changed = json.loads(first.stdout)["changed"]
    assert changed["rax"][1] == "0x7" and changed["rax"][0] != "0x0"
    other = regmap_cli(*args, "--seed", "2")
    assert json.loads(other.stdout)["changed"]["rax"][0] != changed["rax"][0]


def test_without_an_assembler_the_error_says_so(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))          # an empty directory: no `as` on PATH
    done = subprocess.run([sys.executable, "-m", "regmap", "emulate", "adc al, [9]"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == ("regmap emulate: no assembler: 'as' (GNU binutils) is not on PATH; "
                           "install binutils, or give the instruction bytes as hex (regmap emulate --hex)\n")
    hex_input = subprocess.run([sys.executable, "-m", "regmap", "emulate", "--hex", ADC_AL_CH_SLOT],
                               capture_output=True, text=True, env=env)
    assert hex_input.returncode == 0 and "adc al,[9]" in hex_input.stdout


@needs_as
@pytest.mark.parametrize("args,message", [
    (("bogus rax",), "as cannot assemble 'bogus rax': Error: no such instruction: `bogus rax'"),
    (("call printf",), "refers to a symbol outside the code"),
    (("--hex", "zz"), "not hex text"),
    (("--hex", "48 03"), "the bytes end in the middle of an instruction"),
    (("--hex", "90", "nosuch=1"), "'nosuch=1': no register 'nosuch'"),
    (("--hex", "90", "rax"), "give initial values as REG=VALUE"),
    (("--hex", "90", "rax=banana"), "rax: 'banana' is not a number"),
    (("--hex", "0f a2"), "unsupported instruction at 0x400000: 0f a2  cpuid"),
    (("--hex", "48 8b 03", "rbx=0x5000"), "read from 0x5000 faulted"),
])
def test_bad_input_is_one_clear_line(regmap_cli, args, message):
    done = regmap_cli("emulate", *args)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("regmap emulate: ") and message in done.stderr
    assert "Traceback" not in done.stderr


def test_the_command_line_entry_point_runs_it():
    done = subprocess.run([sys.executable, "-m", "regmap", "emulate", "--hex", ADC_AL_CH_SLOT, "cf=1"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "adc al,[9]" in done.stdout and "rip" in done.stdout
