"""The documentation runs: every Python example in README.md and docs/*.md, every `console`
transcript of a regmap command, and every block that quotes a file of the repository.

- a ```python block with ``>>>`` prompts is a doctest (ELLIPSIS on); one without is run whole;
  each block stands alone (its own imports);
- a ```console block is a transcript: each ``$ regmap ...`` line is run and its output compared;
- a block right after ``<!-- file: PATH -->`` must be PATH's text, verbatim.
- a ```regs block is a whole register file: it must parse and solve (a fragment has no tag).
A block right after ``<!-- needs: native -->`` needs Linux on x86-64 with gcc, one after
``<!-- needs: as -->`` the system assembler; elsewhere they are skipped with the reason.
Examples run from the repository root.
"""
from __future__ import annotations

import doctest
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import why_not_native  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(?:<!-- (?P<note>[a-z]+): (?P<value>[^>]*?) -->\n)?"
                   r"^```(?P<language>[a-z]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)


class Block(NamedTuple):
    document: Path
    line: int
    language: str
    body: str
    note: str | None
    value: str | None

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks(language: str | None = None, note: str | None = None) -> list[Block]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for match in FENCE.finditer(text):
            block = Block(document, text.count("\n", 0, match.start("body")) + 1,
                          match["language"], match["body"], match["note"], match["value"])
            if (language is None or block.language == language) and (note is None or block.note == note):
                found.append(block)
    return found


def ids(found: list[Block]) -> list[str]:
    return [block.where for block in found]


@pytest.fixture(autouse=True)
def at_the_repository_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    yield
    runtime = sys.modules.get("regmap.runtime")
    if runtime is not None and runtime.is_mapped():   # an example that failed half-way
        runtime.set_trace(None)
        runtime.unmap_registers()


NEEDS = {
    "native": why_not_native,
    "as": lambda: None if shutil.which("as") else "needs the system assembler (as) on PATH",
}


def needs(block: Block) -> None:
    if block.note == "needs":
        reason = NEEDS[block.value]()
        if reason is not None:
            pytest.skip(f"{block.where}: {reason}")


PYTHON = blocks("python")


def test_every_document_with_python_has_its_examples_found():
    assert {block.document.name for block in PYTHON} >= {"README.md", "alias.md", "emulator.md",
                                                         "runtime.md"}


@pytest.mark.parametrize("block", PYTHON, ids=ids(PYTHON))
def test_python_examples_run(block):
    needs(block)
    if ">>>" not in block.body:
        exec(compile(block.body, block.where, "exec"), {"__name__": "__doc_example__"})
        return
    test = doctest.DocTestParser().get_doctest(block.body, {"__name__": "__doc_example__"},
                                                block.where, str(block.document), block.line - 1)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


CONSOLE = blocks("console")


@pytest.mark.parametrize("block", CONSOLE, ids=ids(CONSOLE))
def test_console_transcripts_are_what_regmap_prints(block, capsys):
    from regmap.cli import main
    needs(block)
    commands = re.findall(r"^\$ (.*)\n((?:(?!\$ ).*\n)*)", block.body, re.MULTILINE)
    assert commands, f"{block.where}: no '$ regmap ...' line"
    for command, expected in commands:
        words = shlex.split(command)
        assert words[0] == "regmap", f"{block.where}: only regmap commands are checked"
        status = main(words[1:])
        out, err = capsys.readouterr()
        assert status == 0, f"{block.where}: {command}: {err}"
        assert out == expected, f"{block.where}: {command}"


QUOTES = blocks(note="file")


@pytest.mark.parametrize("block", QUOTES, ids=ids(QUOTES))
def test_quoted_files_are_quoted_verbatim(block):
    assert block.body == (ROOT / block.value).read_text(), f"{block.where} differs from {block.value}"


REGS = blocks("regs")


@pytest.mark.parametrize("block", REGS, ids=ids(REGS))
def test_register_files_in_the_docs_parse_and_solve(block):
    from regmap import alias
    from regmap.layout import Layout
    registers = alias.parse(block.body, filename=block.where)
    if registers.layouts:
        Layout(registers, block.where)
