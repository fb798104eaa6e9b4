"""The ``regmap`` command line: one module per subcommand, each with ``add_parser(subparsers)``.

A subcommand module's ``add_parser`` registers its parser and sets ``func``;
``func(args)`` returns the process exit status.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from regmap import __version__

# subcommand module -> the subcommands it registers
COMMAND_MODULES = (
    "regmap.cli.alias",     # alias
    "regmap.cli.layout",    # layout, explain
    "regmap.cli.execute",   # run, exec
    "regmap.cli.emulate",   # emulate
    "regmap.cli.coverage",  # coverage
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regmap", description="Memory-mapped amd64 registers on page 0.")
    parser.add_argument("--version", action="version", version=f"regmap {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
