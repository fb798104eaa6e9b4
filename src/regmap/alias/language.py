"""The text language for register files (see docs/alias.md).

::

    # comment
    include i386;                       # a shipped file, or "relative/path.regs"
    reg rax, rcx : 64;                  # basis registers
    alias eax, ecx : 32;                # alias registers
    alias ax;                           # re-mark an included basis register as an alias
    reg zmm{0..31} : 512;               # {a..b} ranges expand names
    def rax [unk; reg eax];             # rax = unk . eax (most significant part first)
    def zmm{0..31} [unk; reg ymm{0..31}];
    def page [unk * 208; reg xmm15];    # unk * N: N unknown parts
    def x [reg r{3..0}]                 # = [reg r3; reg r2; reg r1; reg r0]
    layout mine : 4096 {                # a page layout: registers placed at byte addresses
      0x000: rdi;                       #   (see regmap.alias.placement)
      0x800: rax, rcx;                  #   consecutive: rcx at 0x808
    }

Every error is an :class:`AliasError` whose location is ``file:line:col``.
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable, NamedTuple

from regmap.errors import AliasError
from regmap.alias.model import Bit, Def, Part, Reg, Register, RegisterFile, Unk
from regmap.alias.placement import Placed, layout_def

__all__ = ["parse", "load", "SHIPPED", "FILES_DIR"]

FILES_DIR = Path(__file__).resolve().parent / "files"
SHIPPED = ("i8086", "i386", "amd64", "aarch64", "avr")

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOKEN_RE = re.compile(r"""
    (?P<space>[ \t\r\f\v]+)
  | (?P<newline>\n)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"[^"\n]*")
  | (?P<word>(?:[A-Za-z0-9_]+|\{[ \t]*\d+[ \t]*\.\.[ \t]*\d+[ \t]*\})+)
  | (?P<punct>[;,:\[\]*{}])
  | (?P<unclosed>"[^"\n]*)
""", re.VERBOSE)
_RANGE_RE = re.compile(r"\{[ \t]*(\d+)[ \t]*\.\.[ \t]*(\d+)[ \t]*\}")
_NUMBER_RE = re.compile(r"\d+|0[xX][0-9a-fA-F]+")
KEYWORDS = ("include", "reg", "alias", "def", "unk", "bit", "layout")


class Token(NamedTuple):
    kind: str          # "word", "number", "string", "punct", "eof"
    text: str
    line: int
    col: int


class Pattern(NamedTuple):
    """A name with optional ``{a..b}`` ranges: ``pieces`` are strings and range tuples."""
    pieces: tuple
    length: int | None   # how many names it expands to; None without a range
    location: str

    def name(self, i: int = 0) -> str:
        out = []
        for p in self.pieces:
            if isinstance(p, str):
                out.append(p)
            else:
                a, b = p
                out.append(str(a + i if a <= b else a - i))   # ranges of one name: lockstep
        return "".join(out).lower()

    def names(self) -> list[str]:
        return [self.name(i) for i in range(self.length or 1)]


def _tokenize(text: str, filename: str) -> list[Token]:
    tokens = []
    line, line_start, pos = 1, 0, 0
    n = len(text)
    while pos < n:
        m = _TOKEN_RE.match(text, pos)
        col = pos - line_start + 1
        if m is None:
            raise AliasError(f"unexpected character {text[pos]!r}", f"{filename}:{line}:{col}")
        kind = m.lastgroup
        s = m.group()
        if kind == "newline":
            line += 1
            line_start = m.end()
        elif kind == "word":
            tokens.append(Token("number" if _NUMBER_RE.fullmatch(s) else "word", s, line, col))
        elif s == "{" and pos and (text[pos - 1].isalnum() or text[pos - 1] == "_"):
            # a brace glued to a name is a range that did not match, not a layout's block
            raise AliasError("malformed range: write {FIRST..LAST} with two numbers",
                             f"{filename}:{line}:{col}")
        elif kind in ("string", "punct"):
            tokens.append(Token(kind, s, line, col))
        elif kind == "unclosed":
            raise AliasError("unterminated string (a quoted path ends at the same line's \")",
                             f"{filename}:{line}:{col}")
        pos = m.end()
    tokens.append(Token("eof", "", line, pos - line_start + 1))
    return tokens


def _describe(tok: Token) -> str:
    return "the end of the file" if tok.kind == "eof" else repr(tok.text)


class _State:
    """Everything collected while reading a file and the files it includes."""

    def __init__(self, include_dirs: Iterable):
        self.include_dirs = [Path(d) for d in include_dirs]
        self.registers: dict[str, list] = {}      # name -> [width, is_alias]
        self.locations: dict[str, str] = {}
        self.defs: list[Def] = []
        self.layouts: list[str] = []
        self.stack: list[Path] = []
        self.done: set[Path] = set()


class _Parser:
    def __init__(self, text: str, filename: str, state: _State, path: Path | None):
        self.filename = filename
        self.tokens = _tokenize(text, filename)
        self.i = 0
        self.state = state
        self.path = path

    # -- tokens ---------------------------------------------------------------------------

    def loc(self, tok: Token) -> str:
        return f"{self.filename}:{tok.line}:{tok.col}"

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def error(self, message: str, tok: Token | None = None):
        raise AliasError(message, self.loc(tok or self.peek()))

    def expect(self, text: str, what: str) -> Token:
        tok = self.peek()
        if tok.kind != "punct" or tok.text != text:
            self.error(f"expected {text!r} {what}, found {_describe(tok)}", tok)
        return self.next()

    def keyword(self, tok: Token) -> str | None:
        if tok.kind == "word" and tok.text.lower() in KEYWORDS:
            return tok.text.lower()
        return None

    def end_statement(self, what: str):
        tok = self.peek()
        if tok.kind == "eof":
            return
        self.expect(";", f"after {what}")

    def at(self, punct: str) -> bool:
        tok = self.peek()
        return tok.kind == "punct" and tok.text == punct

    def number(self, what: str, minimum: int = 1) -> int:
        tok = self.peek()
        if tok.kind != "number":
            self.error(f"expected {what} (a number), found {_describe(tok)}", tok)
        self.next()
        value = int(tok.text, 0) if tok.text[1:2] in ("x", "X") else int(tok.text)
        if value < minimum:
            self.error(f"{what} must be positive, not {value}", tok)
        return value

    def pattern(self, what: str) -> Pattern:
        tok = self.peek()
        if tok.kind != "word":
            self.error(f"expected {what}, found {_describe(tok)}", tok)
        self.next()
        pieces: list[str | tuple[int, int]] = []
        count = None
        pos = 0
        for m in _RANGE_RE.finditer(tok.text):
            if m.start() > pos:
                pieces.append(tok.text[pos:m.start()])
            a, b = int(m.group(1)), int(m.group(2))
            n = abs(b - a) + 1
            if count is not None and n != count:
                self.error(f"the ranges in {tok.text} have different lengths ({count} and {n}); "
                           f"ranges in one name run in lockstep", tok)
            count = n
            pieces.append((a, b))
            pos = m.end()
        if pos < len(tok.text):
            pieces.append(tok.text[pos:])
        p = Pattern(tuple(pieces), count, self.loc(tok))
        bad = next((nm for nm in p.names() if not NAME_RE.match(nm)), None)
        if bad is not None:
            self.error(f"{bad!r} is not a register name (a letter or '_', then letters, "
                       f"digits or '_')", tok)
        return p

    def pattern_list(self, what: str) -> list[Pattern]:
        out = [self.pattern(what)]
        while self.peek().kind == "punct" and self.peek().text == ",":
            self.next()
            out.append(self.pattern(what))
        return out

    # -- statements -----------------------------------------------------------------------

    def parse(self):
        while self.peek().kind != "eof":
            tok = self.peek()
            kw = self.keyword(tok)
            if kw == "include":
                self.include()
            elif kw == "reg":
                self.declare(alias=False)
            elif kw == "alias":
                self.declare(alias=True)
            elif kw == "def":
                self.define()
            elif kw == "layout":
                self.layout()
            else:
                self.error(f"expected a statement (include, reg, alias, def or layout), found "
                           f"{_describe(tok)}", tok)

    def declare(self, alias: bool):
        kw = self.next().text.lower()
        pats = self.pattern_list("a register name")
        tok = self.peek()
        regs = self.state.registers
        if tok.kind == "punct" and tok.text == ":":
            self.next()
            width = self.number("a width in bits")
            for p in pats:
                for name in p.names():
                    self.declare_name(name, width, alias, p.location)
        elif alias:
            # `alias x, y;` re-marks declared registers (typically from an included file) as aliases
            for p in pats:
                for name in p.names():
                    if name not in regs:
                        raise AliasError(f"cannot mark {name} as an alias: it is not declared "
                                         f"(give a width to declare it)", p.location)
                    regs[name][1] = True
        else:
            self.error(f"expected ':' and a width after the names in {kw}, found {_describe(tok)}",
                       tok)
        self.end_statement(f"the {kw} declaration")

    def declare_name(self, name: str, width: int, alias: bool, location: str):
        if name in self.state.registers:
            raise AliasError(f"register {name} is already declared at "
                             f"{self.state.locations[name]}", location)
        self.state.registers[name] = [width, alias]
        self.state.locations[name] = location

    def layout(self):
        """``layout NAME : BYTES { ADDRESS: NAMES; ... }`` -- see regmap.alias.placement."""
        layout_tok = self.next()
        target = self.pattern("the name of the layout")
        if target.length is not None:
            raise AliasError(f"a layout's name has no range: {_pattern_text(target)}",
                             target.location)
        name = target.name()
        self.expect(":", f"and the size in bytes after the layout name {name}")
        size = self.number("the layout's size in bytes")
        self.expect("{", f"to start the placements of layout {name}")
        placed: list[Placed] = []
        while not self.at("}"):
            address = self.number("an address (a byte offset in the layout)", minimum=0)
            self.expect(":", "after the address")
            for pattern in self.pattern_list("a register name to place"):
                for register in pattern.names():
                    size_of = self.placed_size(register, name, pattern.location)
                    placed.append(Placed(register, address, size_of, pattern.location))
                    address += size_of
            if not self.at("}"):
                self.expect(";", "or '}' after a placement")
        self.expect("}", f"to end layout {name}")
        self.declare_name(name, 8 * size, True, target.location)
        self.state.defs.append(layout_def(name, size, placed, self.loc(layout_tok)))
        self.state.layouts.append(name)
        if self.at(";"):
            self.next()

    def placed_size(self, register: str, layout: str, location: str) -> int:
        if register not in self.state.registers:
            raise AliasError(f"layout {layout} places undeclared register {register}", location)
        width = self.state.registers[register][0]
        if width % 8:
            bits = f"{width} bit{'s' if width != 1 else ''}"
            raise AliasError(f"layout {layout} cannot place {register}: it is {bits} wide, "
                             f"and a layout places whole bytes", location)
        return width // 8

    def define(self):
        def_tok = self.next()
        target = self.pattern("the name of the register being defined")
        self.expect("[", f"to start the parts of {target.name() if target.length is None else 'the def'}")
        parts = []     # (kind, pattern or None, repeat)
        tok = self.peek()
        if not (tok.kind == "punct" and tok.text == "]"):
            while True:
                tok = self.peek()
                kw = self.keyword(tok)
                if kw == "unk":
                    self.next()
                    repeat = 1
                    if self.peek().kind == "punct" and self.peek().text == "*":
                        self.next()
                        repeat = self.number("a count after 'unk *'")
                    parts.append(("unk", None, repeat, self.loc(tok)))
                elif kw in ("reg", "bit"):
                    self.next()
                    parts.append((kw, self.pattern(f"a register name after {kw!r}"), 1, self.loc(tok)))
                else:
                    self.error(f"expected a part (reg NAME, bit NAME or unk), found {_describe(tok)}",
                               tok)
                tok = self.peek()
                if tok.kind == "punct" and tok.text == ";":
                    self.next()
                    if self.peek().kind == "punct" and self.peek().text == "]":
                        break
                    continue
                if tok.kind == "punct" and tok.text == "]":
                    break
                self.error(f"expected ';' or ']' after a part, found {_describe(tok)}", tok)
        self.expect("]", "to end the parts")
        location = self.loc(def_tok)
        n = target.length
        if n is not None:
            for kind, pat, _, _ in parts:
                if pat is not None and pat.length is not None and pat.length != n:
                    raise AliasError(f"range in {_pattern_text(pat)} has {pat.length} names but the "
                                     f"def's name has {n}; ranges in a def run in lockstep",
                                     pat.location)
            for i in range(n):
                self.add_def(target, i, parts, location, lockstep=True)
        else:
            self.add_def(target, 0, parts, location, lockstep=False)
        self.end_statement("the def")

    def add_def(self, target: Pattern, i: int, parts, location: str, lockstep: bool):
        name = target.name(i)
        if name not in self.state.registers:
            raise AliasError(f"def of undeclared register {name}", target.location)
        out: list[Part] = []
        for kind, pat, repeat, ploc in parts:
            if kind == "unk":
                out.extend([Unk(ploc)] * repeat)
                continue
            cls = Reg if kind == "reg" else Bit
            names = [pat.name(i)] if lockstep else pat.names()
            for nm in names:
                if nm not in self.state.registers:
                    raise AliasError(f"def {name} uses undeclared register {nm}", pat.location)
                out.append(cls(nm, pat.location))
        self.state.defs.append(Def(name, tuple(out), location, target.location))

    def include(self):
        self.next()
        tok = self.peek()
        if tok.kind == "string":
            rel = tok.text[1:-1]
            base = self.path.parent if self.path is not None else Path.cwd()
            path = Path(rel) if os.path.isabs(rel) else base / rel
            if not path.is_file():
                self.error(f"cannot include {rel!r}: no such file ({path})", tok)
        elif tok.kind == "word" and NAME_RE.match(tok.text):
            name = tok.text.lower()
            dirs = list(self.state.include_dirs) + [FILES_DIR]
            path = next((d / f"{name}.regs" for d in dirs if (d / f"{name}.regs").is_file()), None)
            if path is None:
                self.error(f"cannot include {tok.text}: no file {name}.regs among the shipped "
                           f"register files ({', '.join(SHIPPED)}) or the include directories",
                           tok)
        else:
            self.error(f"expected a register file to include (a name or a \"quoted path\"), "
                       f"found {_describe(tok)}", tok)
        self.next()
        resolved = path.resolve()
        if resolved in self.state.stack:
            chain = " -> ".join(p.name for p in self.state.stack[self.state.stack.index(resolved):])
            self.error(f"include cycle: {chain} -> {resolved.name}", tok)
        if resolved not in self.state.done:
            _parse_file(path, self.state)
        self.end_statement("the include")


def _pattern_text(p: Pattern) -> str:
    return "".join(x if isinstance(x, str) else f"{{{x[0]}..{x[1]}}}" for x in p.pieces)


def _parse_file(path: Path, state: _State):
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise AliasError(f"cannot read register file {path}: {e}") from None
    resolved = path.resolve()
    state.stack.append(resolved)
    _Parser(text, str(path), state, path).parse()
    state.stack.pop()
    state.done.add(resolved)


def _solve(state: _State) -> RegisterFile:
    regs = [Register(n, w, a) for n, (w, a) in state.registers.items()]
    return RegisterFile.build(regs, state.defs, locations=state.locations, layouts=state.layouts)


def parse(text: str, filename: str = "<string>", include_dirs: Iterable = ()) -> RegisterFile:
    """Parse and solve a register file given as text.

    ``include NAME;`` looks for ``NAME.regs`` in ``include_dirs`` and then among the
    shipped files; ``include "path";`` is relative to ``filename``'s directory (the
    current directory for ``<string>``).
    """
    state = _State(include_dirs)
    path = None
    if not filename.startswith("<"):
        path = Path(filename)
        state.stack.append(path.resolve())
    _Parser(text, filename, state, path).parse()
    return _solve(state)


@lru_cache(maxsize=None)
def _load_shipped(name: str) -> RegisterFile:
    state = _State(())
    _parse_file(FILES_DIR / f"{name}.regs", state)
    return _solve(state)


def load(name_or_path) -> RegisterFile:
    """A shipped register file by name (``amd64``, ``i386``, ``i8086``, ``aarch64``, ``avr``;
    cached), or a user's register file by path."""
    if isinstance(name_or_path, str) and name_or_path.lower() in SHIPPED:
        return _load_shipped(name_or_path.lower())
    path = Path(name_or_path)
    if path.exists() and not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise AliasError(f"{name_or_path}: not a register file ({kind})")
    if not path.is_file():
        raise AliasError(f"no register file {str(name_or_path)!r}: not a shipped name "
                         f"({', '.join(SHIPPED)}) and no such file")
    state = _State(())
    _parse_file(path, state)
    return _solve(state)
