"""Honest values (issue 19, item 4): a value that does not fit its register, a flag that is
not 0 or 1, or a value of the wrong type is an error naming the register and its width, in
Python (`regmap.emulate`) and on the command line (`regmap emulate`); negative values are
their two's complement."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import regmap
from regmap.errors import RegisterValueError

ROOT = Path(__file__).resolve().parent.parent
MOV_RAX_RCX = "48 89 c8"                       # mov rax, rcx: rax shows what rcx started as


@pytest.mark.parametrize("regs, words", [
    ({"rax": 1 << 65}, ("rax", "64 bits", "0x20000000000000000")),
    ({"al": 0x100}, ("al", "8 bits", "0x100")),
    ({"xmm1": 1 << 128}, ("xmm1", "128 bits")),
    ({"rcx": -(1 << 63) - 1}, ("rcx", "64 bits", "-0x8000000000000001")),
    ({"cf": 2}, ("cf", "flag", "0 or 1", "2")),
    ({"zf": -1}, ("zf", "flag", "0 or 1")),
    ({"rax": "0x10"}, ("rax", "64 bits", "str", "'0x10'")),
    ({"rax": 1.0}, ("rax", "64 bits", "float")),
])
def test_a_value_that_does_not_fit_is_an_error_naming_the_register(regs, words):
    with pytest.raises(RegisterValueError) as error:
        regmap.emulate(MOV_RAX_RCX, regs)
    assert isinstance(error.value, ValueError) and isinstance(error.value, regmap.errors.RegmapError)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("value, width", [(-1, 64), (-(1 << 63), 64), ((1 << 64) - 1, 64)])
def test_negative_values_are_twos_complement(value, width):
    result = regmap.emulate(MOV_RAX_RCX, {"rcx": value})
    assert result.regs["rax"] == value % (1 << width)


def test_an_alias_takes_its_own_range():
    assert regmap.emulate(MOV_RAX_RCX, {"cl": -128, "ch": 0xff}).regs["rax"] == 0xff80


def regmap_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regmap.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


@pytest.mark.parametrize("value, words", [
    ("cf=2", ("cf", "flag", "0 or 1")),
    ("al=0x100", ("al", "8 bits", "0x100")),
    ("rax=0x10000000000000000", ("rax", "64 bits")),
    ("al=-129", ("al", "8 bits", "-0x81")),
])
def test_the_command_line_refuses_a_value_that_does_not_fit(value, words):
    result = regmap_cli("emulate", "--hex", MOV_RAX_RCX, value)
    assert result.returncode == 1 and result.stdout == ""
    line, = result.stderr.splitlines()
    assert line.startswith("regmap emulate: ")
    for word in words:
        assert word in line


@pytest.mark.parametrize("text, expected", [("-2", 2 ** 64 - 2), ("0x10", 16), ("16", 16),
                                            ("0b101", 5)])
def test_the_command_line_takes_hex_decimal_and_negative_values(text, expected):
    result = regmap_cli("emulate", "--json", "--hex", MOV_RAX_RCX, f"rcx={text}")
    assert result.returncode == 0, result.stderr
    import json
    assert int(json.loads(result.stdout)["changed"]["rax"][1], 16) == expected


def test_help_says_which_numbers_are_taken():
    text = " ".join(regmap_cli("emulate", "--help").stdout.split())
    assert "negative (two's complement" in text and "a flag is 0 or 1" in text
