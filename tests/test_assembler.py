"""One assembler for every entry point (issue 19, item 2): `regmap.emulate` takes assembly text
as ``regmap emulate`` does, NASM's operand sizes are read as GNU's, and hex is hex however it
is spelled."""
import json
import shutil
import subprocess
import sys

import pytest

import regmap
from regmap.cli import main
from regmap.errors import DecodeError

needs_as = pytest.mark.skipif(shutil.which("as") is None, reason="no assembler (as) on PATH")
ADD_RAX_8 = bytes.fromhex("48 03 04 25 08 00 00 00")          # add rax, [8]


def gnu_as(source: str) -> bytes:
    """What GNU as itself makes of `source`, assembled here without regmap."""
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory)
        (path / "a.s").write_text(f".intel_syntax noprefix\n{source}\n")
        subprocess.run(["as", "--64", "-o", path / "a.o", path / "a.s"], check=True)
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", path / "a.o", path / "a.bin"],
                       check=True)
        return (path / "a.bin").read_bytes()


@needs_as
def test_emulate_takes_assembly_text():
    by_text = regmap.emulate("add rax, [8]", {"rax": 1, "rcx": 2})
    by_bytes = regmap.emulate(ADD_RAX_8, {"rax": 1, "rcx": 2})
    assert by_text.steps[0].code == ADD_RAX_8
    assert by_text.regs["rax"] == by_bytes.regs["rax"] == 3


@needs_as
def test_python_and_the_command_line_assemble_alike(capsys):
    source = "l: add rax, [8]; dec rcx; jnz l"
    status = main(["emulate", source, "rcx=3", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert status == 0
    api = regmap.emulate(source, {"rcx": 3})
    assert [bytes.fromhex(step["bytes"]) for step in out["steps"]] == [s.code for s in api.steps]
    assert out["changed"]["rax"][1] == hex(api.regs["rax"]) == "0x6"


@needs_as
@pytest.mark.skipif(shutil.which("objcopy") is None, reason="no objcopy on PATH")
@pytest.mark.parametrize("nasm,gnu", [
    ("mov qword [0x38], 1", "mov qword ptr [0x38], 1"),
    ("add dword [8], 3", "add dword ptr [8], 3"),
    ("movzx eax, byte [1]", "movzx eax, byte ptr [1]"),
    ("fld tword [0x10]", "fld tbyte ptr [0x10]"),
    ("mov rax, qword fs:[8]", "mov rax, qword ptr fs:[8]"),
    ("movdqu xmm0, oword [0x100]", "movdqu xmm0, xmmword ptr [0x100]"),
    ("mov QWORD [0x38], 1", "mov qword ptr [0x38], 1"),
])
def test_nasm_sizes_are_gnu_sizes(nasm, gnu):
    assert regmap.emulate(nasm, trace=False).steps[0].code == gnu_as(gnu)


@needs_as
def test_the_readmes_nasm_example_runs_on_the_command_line():
    done = subprocess.run([sys.executable, "-m", "regmap", "emulate", "mov qword [0x38], 1"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "rdi  0x0 " in done.stdout


@pytest.mark.parametrize("spelling", [
    "48 03 04 25 08 00 00 00", "4803042508000000", "0x48 0x03 0x04 0x25 0x08 0x00 0x00 0x00",
    "\\x48\\x03\\x04\\x25\\x08\\x00\\x00\\x00", "48,03,04,25,08,00,00,00",
    "0x48,0x03,0x04,0x25,0x08,0x00,0x00,0x00",
])
def test_hex_is_hex_however_spelled(spelling, capsys):
    assert regmap.emulate(spelling, {"rax": 1, "rcx": 2}).regs["rax"] == 3
    assert main(["emulate", "--hex", spelling, "rax=1", "rcx=2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"]["rax"] == ["0x1", "0x3"]


@pytest.mark.parametrize("text", ["48 03 zz", "48 0", "0x48 0x3"])
def test_broken_hex_is_a_decode_error_not_an_assembler_message(text):
    with pytest.raises(DecodeError, match="not hex text"):
        regmap.emulate(text)
