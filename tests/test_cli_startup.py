"""`regmap exec` start-up: what a plain run imports, and the quick parser that spares argparse.

The quick parser (regmap.cli.quick) must read a command line exactly as argparse does, or
leave it to argparse: for any words it accepts, the arguments are argparse's own.
"""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from regmap.cli import build_parser
from regmap.cli.execute import quick_args

# what a `regmap exec` of a program that never touches page 0 does without: the argparse
# parser and what it pulls in, typing, re, json, the x86 layer, the layout and its solver,
# the other backends
NOT_IMPORTED = ("argparse", "gettext", "locale", "shutil", "typing", "re", "json", "tempfile",
                "dataclasses", "contextlib", "importlib.util", "threading", "regmap.x86",
                "regmap.layout", "regmap.alias", "iced_x86", "regmap.trace.patch",
                "regmap.trace.build", "regmap.runtime", "regmap.pure", "regmap.emulation",
                "regmap.trace.symbols", "elftools")

# a console script's start (pip's also imports re, which regmap itself does not need)
CONSOLE_SCRIPT = """
import sys
from regmap.cli import main
status = main(sys.argv[1:])
sys.stdout.write(" ".join(sorted(sys.modules)))
sys.exit(status)
"""


def modules_after(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", CONSOLE_SCRIPT, *args], capture_output=True,
                          text=True, check=True)
    return set(done.stdout.split())


def modules_of_the_interpreter() -> set[str]:
    """What this interpreter imports before any code (site, and whatever the environment adds:
    a coverage hook, say), which regmap is not to blame for."""
    done = subprocess.run([sys.executable, "-c", "import sys; print(' '.join(sys.modules))"],
                          capture_output=True, text=True, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize("args", [("exec", "/bin/true"), ("exec", "-q", "true"),
                                  ("exec", "--output-fd", "2", "/bin/true")])
def test_a_plain_exec_imports_only_what_it_uses(args):
    modules = modules_after(*args)
    assert "regmap.trace.tracer" in modules          # it did run the program
    brought = modules - modules_of_the_interpreter()
    heavy = {name for name in brought
             if any(name == n or name.startswith(n + ".") for n in NOT_IMPORTED)}
    assert not heavy, f"regmap {' '.join(args)} imported {sorted(heavy)}"


def test_json_is_imported_when_asked_for():
    assert "json" in modules_after("exec", "--json", "/bin/true")


def argparse_args(words: list[str]) -> dict | None:
    """What argparse makes of ``regmap exec WORDS``; None if it refuses (or prints help)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser("exec").parse_args(["exec", *words])
    except SystemExit:
        return None
    return {key: value for key, value in vars(args).items() if key not in ("func", "parser")}


def quick(words: list[str]) -> dict | None:
    args = quick_args("exec", words)
    return None if args is None else {k: v for k, v in vars(args).items() if k not in ("func", "words")}


# command lines the quick parser must read itself (else a plain start-up pays for argparse)
PLAIN = [
    ["/bin/true"],
    ["true", "-q", "--trace", "x"],
    ["--trace", "--stats", "prog", "a", "-h"],
    ["-q", "--json", "-o", "out.json", "prog"],
    ["--output=out", "--layout", "default", "prog"],
    ["--layout=default", "--output-fd", "3", "prog"],
    ["--translate", "prog", "arg"],
    ["--translate", "5", "prog"],
    ["--translate=2", "prog"],
    ["--translate", "-q", "prog"],
    ["--quiet", "--stats", "--trace", "--json", "prog"],
]

# command lines it leaves to argparse: help, abbreviations, joined short options, errors, --
LEFT_TO_ARGPARSE = [
    [], ["-h"], ["--help", "prog"], ["--tr", "prog"], ["--sta", "prog"], ["-qo", "f", "prog"],
    ["-ofile", "prog"], ["--layout"], ["--layout", "-q", "prog"], ["--output-fd", "x", "prog"],
    ["-o", "f", "--output-fd", "3", "prog"], ["--", "prog"], ["prog", "--", "x"],
    ["--trace=1", "prog"], ["--bogus", "prog"], ["-", "prog"], ["--layout=", "prog"],
    ["prog", "--tr"], ["prog", "--=x"],    # argparse refuses an ambiguous word anywhere
]


@pytest.mark.parametrize("words", PLAIN, ids=" ".join)
def test_the_quick_parser_reads_plain_command_lines_as_argparse(words):
    assert quick(words) is not None
    assert quick(words) == argparse_args(words)


@pytest.mark.parametrize("words", LEFT_TO_ARGPARSE, ids=" ".join)
def test_the_quick_parser_leaves_the_rest_to_argparse(words):
    assert quick(words) is None


WORDS = st.sampled_from([
    "--layout", "--layout=x", "--trace", "--stats", "--json", "-q", "--quiet", "-o", "--output",
    "--output=f", "--output-fd", "--output-fd=3", "3", "-3", "x", "--translate", "--translate=5",
    "5", "-h", "--help", "--", "-", "prog", "--tr", "--out", "-qo", "", "--json=1", "a b",
    "--version", "--v", "--h", "--=", "--output=", "--st", "-oq",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(WORDS, max_size=7))
def test_the_quick_parser_agrees_with_argparse_or_declines(words):
    mine = quick(words)
    if mine is not None:
        assert mine == argparse_args(words)


def test_help_and_errors_still_come_from_argparse():
    helped = subprocess.run([sys.executable, "-m", "regmap", "exec", "--help"],
                            capture_output=True, text=True)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: regmap exec")
    assert "--translate" in helped.stdout
    wrong = subprocess.run([sys.executable, "-m", "regmap", "exec", "--output-fd", "x", "true"],
                           capture_output=True, text=True)
    assert wrong.returncode == 2
    assert "argument --output-fd: invalid int value: 'x'" in wrong.stderr


# regmap run as its own command (main() reading sys.argv), with atexit work and buffered output
AS_COMMAND = """
import atexit, sys
atexit.register(lambda: sys.stdout.write("atexit ran\\n"))
sys.stdout.write("buffered before\\n")          # a pipe: block-buffered, not yet written
sys.argv = ["regmap", *sys.argv[1:]]
from regmap.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("program, status", [("true", 0), ("false", 1), ("exit 7", 7)])
def test_ending_without_the_teardown_keeps_the_status_atexit_and_output(program, status):
    command = ["sh", "-c", program] if " " in program else [program]
    done = subprocess.run([sys.executable, "-c", AS_COMMAND, "exec", *command],
                          capture_output=True, text=True)
    assert done.returncode == status
    assert done.stdout == "buffered before\natexit ran\n"
    assert done.stderr == ""
