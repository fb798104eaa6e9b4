"""``regmap alias``, run through a parser that holds only this subcommand."""
import argparse

import pytest

from regmap.alias import load
from regmap.cli import alias as cli


def run(argv):
    parser = argparse.ArgumentParser(prog="regmap")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["alias", *argv])
    return args.func(args)


def test_registers_in_basis_terms(capsys):
    assert run(["amd64", "ah", "RAX", "eflags", "cf", "iopl", "xmm1"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "ah = rax[15:8]", "rax (basis, 64 bits)", "eflags = rflags[31:0]", "cf = rflags[0]",
        "iopl = rflags[13:12]", "xmm1 = zmm1[127:0]"]
    assert run(["avr", "w", "whi", "x", "sreg"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "w = r25 . r24", "whi = r25", "x = r27 . r26", "sreg = if . tf . hf . sf . vf . nf . zf . cf"]
    assert run(["aarch64", "fp", "lr", "w3"]) == 0
    assert capsys.readouterr().out.splitlines() == ["fp = x29", "lr = x30", "w3 = x3[31:0]"]


def test_every_register_by_default(capsys):
    assert run(["i8086"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rf = load("i8086")
    assert len(lines) == len(rf.registers)
    assert lines[0] == "ax (basis, 16 bits)"
    assert "ah = ax[15:8]" in lines
    assert "of = flags[11]" in lines


def test_user_file_with_holes(tmp_path, capsys):
    f = tmp_path / "page.regs"
    f.write_text("reg a, b : 8; alias page : 32; def page [unk; reg a; unk; reg b];\n")
    assert run([str(f), "page"]) == 0
    assert capsys.readouterr().out == "page = unk[31:24] . a . unk[15:8] . b\n"


def test_unknown_register(capsys):
    assert run(["amd64", "ah", "eaxx"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "ah = rax[15:8]\n"              # the others are still shown
    assert captured.err == "regmap alias: amd64 has no register 'eaxx'\n"


def test_unknown_target(capsys):
    assert run(["sparc"]) == 1
    assert capsys.readouterr().err.startswith("regmap alias: no register file 'sparc'")


def test_not_a_file(capsys):
    assert run(["/dev/null"]) == 1
    assert capsys.readouterr().err == "regmap alias: /dev/null: not a register file (not a regular file)\n"
    assert run(["--check", "/"]) == 1
    assert capsys.readouterr().err == "regmap alias: /: not a register file (a directory)\n"


def test_check_ok(tmp_path, capsys):
    f = tmp_path / "ok.regs"
    f.write_text("include amd64;\nalias lowword : 16;\ndef lowword [reg ax];\n")
    assert run(["--check", str(f)]) == 0
    rf = load(str(f))
    assert capsys.readouterr().out == f"{f}: ok ({len(rf.registers)} registers, {len(rf.basis)} basis)\n"


@pytest.mark.parametrize("text, where, message", [
    ("reg a : 8;\nalias b : 8;\n", "2:7", "cannot resolve b"),
    ("reg a : 8;\nreg a : 8;\n", "2:5", "register a is already declared"),
    ("reg a : 8\nreg b : 8;\n", "2:1", "expected ';' after the reg declaration"),
])
def test_check_errors(tmp_path, capsys, text, where, message):
    f = tmp_path / "bad.regs"
    f.write_text(text)
    assert run(["--check", str(f)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"regmap alias: {f}:{where}: {message}")


def test_usage_errors(capsys):
    assert run([]) == 2
    assert "give a TARGET" in capsys.readouterr().err
    assert run(["amd64", "--check", "x.regs"]) == 2
    assert "--check takes one FILE" in capsys.readouterr().err
