"""A small parser for the plain command lines of ``regmap exec`` and ``regmap run``.

Building the argparse parser costs a traced program's start-up about 7 ms of ~38 (argparse,
gettext, locale and shutil are imported; every option is formatted once): measured by
benchmarks/quick_parser.py, which is why this parser is kept.  This parser reads
the same option table a subcommand gives argparse and understands its plain spellings only:
an exact option (``--trace``, ``-q``), a value as the next word or after ``=`` on a long
option, then the program and its arguments.  On anything else (``-h``, an abbreviation,
``-qo FILE``, a missing value, a ``--``, two exclusive options, no program) it returns None
and the caller asks argparse, so help, usage and every error come from argparse as before.
"""
from __future__ import annotations


class _Option:
    """What one option of a spec sets.  A spec is what argparse is given, (flags, keywords);
    understood here: action "store_true", nargs "?" with const, type, default (metavar and
    help are argparse's alone)."""

    __slots__ = ("dest", "flag", "optional", "convert", "const", "default", "group")

    def __init__(self, flags: tuple[str, ...], keywords: dict, group: int | None):
        if keywords.get("action", "store_true") != "store_true" or keywords.get("nargs", "?") != "?":
            raise ValueError(f"{flags[0]}: the quick parser knows no {keywords}")
        long_flags = [flag for flag in flags if flag.startswith("--")]
        self.dest = (long_flags or flags)[0].lstrip("-").replace("-", "_")   # as argparse
        self.flag = keywords.get("action") == "store_true"
        self.optional = keywords.get("nargs") == "?"
        self.convert = keywords.get("type")
        self.const = keywords.get("const")
        self.default = keywords.get("default", False if self.flag else None)
        self.group = group                    # options of one group exclude each other


def options(specs, groups=()) -> dict[str, _Option]:
    """Every flag of ``specs`` and of the mutually exclusive ``groups`` (each a tuple of specs)
    -> what it sets."""
    table = {}
    for group, group_specs in [(None, specs), *enumerate(groups)]:
        for flags, keywords in group_specs:
            option = _Option(flags, keywords, group)
            table.update(dict.fromkeys(flags, option))
    return table


def parse(table: dict[str, _Option], words: list[str]) -> dict | None:
    """``{dest: value, ..., "command": [PROGRAM, ARGS...]}`` for a plain command line, as
    argparse would give it; None for anything else."""
    values = {option.dest: option.default for option in table.values()}
    groups_seen: dict[int, str] = {}
    index = 0
    while index < len(words) and words[index].startswith("-"):
        word = words[index]
        name, equals, inline = word.partition("=") if word.startswith("--") else (word, "", "")
        option = table.get(name)
        if option is None:
            return None
        if option.group is not None:
            if groups_seen.setdefault(option.group, option.dest) != option.dest:
                return None
        index += 1
        if option.flag:
            if equals:
                return None
            values[option.dest] = True
            continue
        if equals:
            if not inline:
                return None
            value = inline
        elif index < len(words) and not words[index].startswith("-"):
            value = words[index]
            index += 1
        elif option.optional:
            values[option.dest] = option.const
            continue
        else:
            return None
        if option.convert is not None:
            try:
                value = option.convert(value)
            except (TypeError, ValueError):
                return None
        values[option.dest] = value
    command = words[index:]
    if not command or "--" in command:      # argparse's '--' rules differ between versions
        return None
    if any(_ambiguous(word, table) for word in command):
        return None
    values["command"] = command
    return values


def _ambiguous(word: str, table: dict[str, _Option]) -> bool:
    """Whether argparse refuses ``word`` even among the program's arguments: it reads every
    word of the line as a possible option first, and a word that abbreviates two options
    (``--tr``, ``--=x``) is an error wherever it stands."""
    name = word.split("=", 1)[0]
    if not name.startswith("--") or name in table or name == "--help":
        return False
    return sum(flag.startswith(name) for flag in (*table, "--help")) > 1
