"""The ``regmap`` command line: one module per subcommand, each with ``add_parser(subparsers)``.

A subcommand module's ``add_parser`` registers its parser and sets ``func``;
``func(args)`` returns the process exit status.  The subcommands in ``QUICK`` (exec, run)
start and end as fast as they can: their module reads a plain command line itself, so a
traced program's start-up neither imports argparse nor builds its parser, and ``regmap exec``
ends without the interpreter's teardown.
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
    "regmap.cli.doctor",    # doctor
)
# subcommand -> its module: a command line that names one imports only that module (a traced
# program's start-up does not pay for the emulate and alias commands' imports)
COMMANDS = {"alias": "regmap.cli.alias", "layout": "regmap.cli.layout",
            "explain": "regmap.cli.layout", "run": "regmap.cli.execute",
            "exec": "regmap.cli.execute", "emulate": "regmap.cli.emulate",
            "doctor": "regmap.cli.doctor"}
# the subcommands that run a program: their module reads a plain command line itself
# (``quick_args(command, words)``: the arguments, or None for argparse), and run from the
# process's own command line they end the process directly (``_end_process``)
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
    for subparser in subparsers.choices.values():     # for `parse`: whose usage an error shows
        subparser.set_defaults(parser=subparser)
    return parser


def parse(parser: argparse.ArgumentParser, words: list[str]) -> argparse.Namespace:
    """`parser`'s reading of ``regmap WORDS``.  A subcommand's positional words may come after
    its options too (``emulate CODE --json rax=1``: argparse would have taken CODE and the values
    together and called ``rax=1`` unrecognized), and a word that is no option of the subcommand
    is reported with the subcommand's usage, not the top level's."""
    args, extras = parser.parse_known_args(words)
    later = getattr(args, "intermixed", None)        # the list more positional words join
    if later is not None:
        getattr(args, later).extend(word for word in extras if not word.startswith("-"))
        extras = [word for word in extras if word.startswith("-")]
    if extras:
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(extras)}")
    args.words = words[1:]
    return args


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    command = words[0] if words else None
    args = _quick_args(command, words[1:]) if command in QUICK else None
    if args is None:
        args = parse(build_parser(command), words)
    try:
        status = args.func(args)
    except BrokenPipeError:
        return 0
    if argv is None and command in QUICK:
        _end_process(status)
    return status


def _end_process(status: int) -> None:
    """End the ``regmap exec``/``run`` process with ``status`` as ``sys.exit`` would (atexit
    handlers run, stdout and stderr are flushed) but without the interpreter's teardown, which
    frees every module and object one by one: 5 to 10 ms, a quarter of a traced ``/bin/true``'s
    start-up.  regmap keeps nothing that needs it (its -o stream is closed), and it already
    leaves the same way when it dies of the program's signal.  Returns (for ``sys.exit``) if
    a thread that the teardown would wait for is running."""
    threading = sys.modules.get("threading")
    if threading is not None and any(not thread.daemon and thread is not threading.main_thread()
                                     for thread in threading.enumerate()):
        return
    import atexit
    import os
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def _quick_args(command: str, words: list[str]):
    # __import__, not importlib.import_module: importing importlib costs ~1 ms
    module = __import__(COMMANDS[command], fromlist=["quick_args"])
    return module.quick_args(command, words)


if __name__ == "__main__":
    sys.exit(main())
