"""The ``regmap`` command line: one module per subcommand, each with ``add_parser(subparsers)``.

A subcommand module's ``add_parser`` registers its parser and sets ``func``;
``func(args)`` returns the process exit status.  A module named in ``QUICK`` also reads its
plain command lines itself (``quick_args``), so a traced program's start-up does not build
the argparse parser nor import argparse.
"""
from __future__ import annotations

import sys

from regmap import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

# subcommand module -> the subcommands it registers
COMMAND_MODULES = (
    "regmap.cli.alias",     # alias
    "regmap.cli.layout",    # layout, explain
    "regmap.cli.execute",   # run, exec
    "regmap.cli.emulate",   # emulate
    "regmap.cli.coverage",  # coverage
)
# subcommand -> its module: a command line that names one imports only that module (a traced
# program's start-up does not pay for the emulate and alias commands' imports)
COMMANDS = {"alias": "regmap.cli.alias", "layout": "regmap.cli.layout",
            "explain": "regmap.cli.layout", "run": "regmap.cli.execute",
            "exec": "regmap.cli.execute", "emulate": "regmap.cli.emulate"}
# subcommands whose module has ``quick_args(command, words)``: the arguments, or None for argparse
QUICK = ("run", "exec")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with a known `command`, only that subcommand's (help and errors for anything
    else come from the full parser)."""
    import argparse
    import importlib
    parser = argparse.ArgumentParser(
        prog="regmap", description="Memory-mapped amd64 registers on page 0.")
    parser.add_argument("--version", action="version", version=f"regmap {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES
    for module_name in modules:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    command = words[0] if words else None
    args = _quick_args(command, words[1:]) if command in QUICK else None
    if args is None:
        args = build_parser(command).parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        return 0


def _quick_args(command: str, words: list[str]):
    module = __import__(COMMANDS[command], fromlist=["quick_args"])   # not importlib: ~1 ms
    return module.quick_args(command, words)


if __name__ == "__main__":
    sys.exit(main())
