"""``regmap exec PROGRAM [ARGS...]`` and ``regmap run FILE [ARGS...]``: programs under the tracer."""
from __future__ import annotations

import os
import signal
import sys

EXEC_DESCRIPTION = """\
Run an unmodified x86-64 Linux program with the register file memory-mapped
onto page 0: each access to page 0 faults, regmap emulates the instruction
against the thread's registers and the program goes on.  Threads and child
processes are followed.  regmap exits with the program's exit code; when signal
N kills the program, regmap says so (unless -q, or N is SIGINT or SIGPIPE) and
dies of signal N too, as a shell sees it: 128+N.  Its messages, the trace and
the stats go to stderr, or to -o FILE."""

RUN_DESCRIPTION = """\
Build FILE (.c with the system C compiler, .s/.S with the assembler) into a
temporary executable and run it as 'regmap exec' does.  A source that defines
_start is linked -nostdlib -static; a program written for the original crate
gets a map_registers() stub that just returns.

As make does, $CC compiles with $CPPFLAGS $CFLAGS and links with $LDFLAGS ...
$LDLIBS.  More source files may follow FILE; compiler options follow '--', and
the program's arguments a second '--' (or come straight after the sources):
  regmap run prog.c util.c -- -lm -masm=intel -- ARGS..."""


TRANSLATE_AFTER = 3   # as map_registers(translate=True): about what one rewrite costs in faults
FAST_FAULTS_AFTER = 16   # as map_registers(fast_faults=True) (regmap.trace.known)

# The options of run and exec, as argparse is given them (flags, keywords); the quick parser
# (regmap.cli.quick) reads the same table.
OPTIONS: tuple[tuple[tuple[str, ...], dict], ...] = (
    (("--layout",), {"metavar": "NAME|FILE",
                     "help": "the page-0 layout: a shipped name or a .regs file (default: default)"}),
    (("--trace",), {"action": "store_true",
                    "help": "print every emulated access and every signal passed on (stderr or -o)"}),
    (("--stats",), {"action": "store_true",
                    "help": "print a summary at exit (faults per mnemonic and site, time)"}),
    (("--json",), {"action": "store_true",
                   "help": "print trace and stats as JSON lines (alone: both)"}),
    (("--strict",), {"action": "store_true",
                     "help": "strict addressing: only constant addresses ([0x38], not [rbx+8]) "
                             "are window accesses; a register-addressed page-0 access is the "
                             "genuine NULL-pointer fault (use it for a JVM)"}),
    (("-q", "--quiet"), {"action": "store_true",
                         "help": "no 'killed by' line when a signal kills the program"}),
    (("--fast-faults",), {"metavar": "N", "type": int, "default": FAST_FAULTS_AFTER,
                          "help": "once a site has been emulated N times, send its faults to a "
                                  "trampoline placed in the program instead of emulating them "
                                  f"(default {FAST_FAULTS_AFTER}; 0: emulate every fault)"}),
)
# -o and --output-fd: one or the other
OUTPUT_OPTIONS: tuple[tuple[tuple[str, ...], dict], ...] = (
    (("-o", "--output"), {"metavar": "FILE",
                          "help": "write the trace, stats and messages to FILE, not stderr"}),
    (("--output-fd",), {"metavar": "N", "type": int,
                        "help": "write them to the open file descriptor N"}),
)
TRANSLATE_OPTION: tuple[tuple[tuple[str, ...], dict], ...] = (
    (("--translate",), {"metavar": "N", "nargs": "?", "default": 0, "const": TRANSLATE_AFTER,
                        "help": "rewrite a window instruction into its exact register form once "
                                f"it has faulted N times (--translate=N; alone N is {TRANSLATE_AFTER}; "
                                "0 or no option: never)"}),
)
GDB_DEFAULT = "127.0.0.1:0"      # localhost, a free port
# --gdb and --gdb-stdio: one or the other (regmap.gdb, docs/gdb.md)
GDB_OPTIONS: tuple[tuple[tuple[str, ...], dict], ...] = (
    (("--gdb",), {"metavar": "HOST:PORT", "nargs": "?", "default": None, "const": GDB_DEFAULT,
                  "help": "serve gdb's remote protocol, the program stopped at its first "
                          "instruction (--gdb=HOST:PORT; alone: a free port on localhost, "
                          "and the gdb command line is printed)"}),
    (("--gdb-stdio",), {"action": "store_true",
                        "help": "serve gdb on stdin/stdout: target remote | regmap exec "
                                "--gdb-stdio PROGRAM (the program's stdin is /dev/null, its "
                                "stdout regmap's stderr)"}),
)


def _common(parser) -> None:
    for flags, keywords in OPTIONS:
        parser.add_argument(*flags, **keywords)
    output = parser.add_mutually_exclusive_group()
    for flags, keywords in OUTPUT_OPTIONS:
        output.add_argument(*flags, **keywords)
    for flags, keywords in TRANSLATE_OPTION:
        parser.add_argument(*flags, **keywords)
    gdb = parser.add_mutually_exclusive_group()
    for flags, keywords in GDB_OPTIONS:
        gdb.add_argument(*flags, **keywords)


def quick_args(command: str, words: list[str]):
    """The arguments of ``regmap run|exec WORDS`` when the quick parser reads them all, else
    None (argparse then parses them: help, usage, errors)."""
    from types import SimpleNamespace

    from regmap.cli import quick
    values = quick.parse(quick.options(OPTIONS + TRANSLATE_OPTION, (OUTPUT_OPTIONS, GDB_OPTIONS)),
                         words)
    if values is None:
        return None
    return SimpleNamespace(**values, func=QUICK_COMMANDS[command], words=words)


def _translate_option(args, command: list[str]) -> str | None:
    """``--translate PROGRAM``: the optional N took the program; give it back to the command.
    What follows ``--translate=`` is N, never the program: not a count there, or a word that
    looks like a number anywhere (``-1``, ``1.5``), is an error (returned)."""
    value = getattr(args, "translate", 0)
    if not isinstance(value, str):
        return None
    if value.isdigit():
        args.translate = int(value)
        return None
    words = getattr(args, "words", [])
    options = words[:len(words) - len(command)]     # the words before the program's
    inline = any(word.partition("=")[2] == value and len(word.partition("=")[0]) > 3
                 and "--translate".startswith(word.partition("=")[0]) for word in options)
    numeric = value[:1] in "-+0123456789" or (value[:1] == "." and value[1:2].isdigit())
    if inline or numeric:                   # (./prog is a program: a number never starts ./)
        return (f"--translate={value}: N is how many faults before a site is rewritten, "
                f"a whole number from 0 (--translate alone: {TRANSLATE_AFTER})")
    command.insert(0, value)
    args.translate = TRANSLATE_AFTER
    return None


def _gdb_option(args, command: list[str]) -> None:
    """``--gdb PROGRAM``: the optional address took the program; give it back."""
    value = getattr(args, "gdb", None)
    if value is not None and value != GDB_DEFAULT and ":" not in value and not value.isdigit():
        command.insert(0, value)
        args.gdb = GDB_DEFAULT


def _debugger(args, program: str):
    """The gdb stub --gdb or --gdb-stdio asks for (None: neither)."""
    if getattr(args, "gdb_stdio", False):
        from regmap import gdb
        return gdb.stdio()
    if getattr(args, "gdb", None) is not None:
        from regmap import gdb
        debugger = gdb.listen(args.gdb)
        debugger.program = program
        return debugger
    return None


def add_parser(subparsers) -> None:
    import argparse
    run = subparsers.add_parser(
        "run", help="build a .c/.s/.S file and run it with page 0 mapped",
        usage="%(prog)s [-h] [OPTIONS] [--translate[=N]] FILE [FILE...] [-- CC-OPTIONS... --] [ARGS...]",
        description=RUN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(run)
    run.add_argument("command", metavar="FILE [ARGS...]", nargs=argparse.REMAINDER,
                     help="a .c, .s or .S source file, and arguments for the program")
    run.set_defaults(func=run_command, parser=run)

    execute = subparsers.add_parser(
        "exec", help="run a program with page 0 mapped onto its registers",
        usage="%(prog)s [-h] [OPTIONS] [--translate[=N]] PROGRAM [ARGS...]",
        description=EXEC_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(execute)
    execute.add_argument("command", metavar="PROGRAM [ARGS...]", nargs=argparse.REMAINDER,
                         help="the program (searched on PATH) and its arguments")
    execute.set_defaults(func=exec_command, parser=execute)


def _error(message: str, detail: str = "") -> None:
    sys.stderr.write(f"regmap: {message}\n")
    if detail:
        sys.stderr.write(detail + "\n")
    sys.stderr.flush()


def _options(args) -> dict:
    trace, stats = args.trace, args.stats
    if args.json and not trace and not stats:
        trace = stats = True
    return {"trace": trace, "stats": stats, "json": args.json, "quiet": args.quiet,
            "translate": args.translate, "strict": args.strict,
            "fast_faults": max(0, args.fast_faults)}


def _open_output(args):
    """The stream for the trace, stats and messages, or None for stderr.  The program does
    not inherit it: Python opens files close-on-exec, and fd N is made so (or, for 0-2, which
    the program needs, duplicated)."""
    if args.output is not None:
        return open(args.output, "w", encoding="utf-8", errors="replace")
    if args.output_fd is None:
        return None
    fd = args.output_fd
    if fd <= 2:
        fd = os.dup(fd)
    else:
        os.set_inheritable(fd, False)
    return os.fdopen(fd, "w", encoding="utf-8", errors="replace")


_DEFAULT = object()      # the shipped default layout, not loaded yet


def _load_layout(args):
    """The layout named by --layout, checked before the program runs; for the shipped default,
    None: the tracer loads it at the first fault, so a program that never touches page 0
    does not wait for the register file to be parsed and solved."""
    if args.layout is None:
        return _DEFAULT
    from regmap.errors import RegmapError
    from regmap.layout import load_layout
    try:
        return load_layout(args.layout)
    except (RegmapError, OSError) as error:
        _error(f"--layout {args.layout or 'default'}: {error}")
        return None


def _traced(argv, args, **extra):
    """Run the program; return how it ended (a ``ProgramExit``), or regmap's exit status if
    it could not run."""
    from regmap.errors import RegmapError
    from regmap.trace import TraceError, trace_program
    layout = _load_layout(args)
    if layout is None:
        return 1                 # as `regmap layout` says of the same layout
    if layout is _DEFAULT:
        layout = None
    try:
        stream = _open_output(args)
    except OSError as error:
        where = f"-o {args.output}" if args.output is not None else f"--output-fd {args.output_fd}"
        _error(f"{where}: {error.strerror}")
        return 1
    try:
        debugger = _debugger(args, extra.get("executable") or argv[0])
        options = _options(args)
        if debugger is not None:
            options["translate"] = 0     # a translated site faults no more: gdb would not see it
        return trace_program(argv, layout, **options, stream=stream, debugger=debugger, **extra)
    except TraceError as error:
        _error(str(error), error.detail)
        return error.status
    except RegmapError as error:
        _error(str(error))
        return 1
    finally:
        if stream is not None:
            stream.close()


def _end_as(end) -> int:
    """regmap's own end: the program's exit code, or death by the signal that killed it."""
    if isinstance(end, int):
        return end
    if end.signal is not None:
        _die_of(end.signal)
    return end.status


def _die_of(signo: int) -> None:
    """Kill regmap with ``signo``, as strace does: the parent's waitpid then sees the
    program's death (a shell stops its loop at ^C, Python sees returncode -N).  Without a
    core: the program dumped its own if it was to."""
    import resource                        # POSIX only: imported here, not with the CLI
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        signal.signal(signo, signal.SIG_DFL)
    except (OSError, ValueError):          # SIGKILL: its action cannot be changed
        pass
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signo})
    signal.raise_signal(signo)


def _command(args, what: str) -> list[str] | None:
    command = list(args.command)
    wrong = _translate_option(args, command)
    if wrong is not None:
        parser = getattr(args, "parser", None)
        if parser is not None:
            parser.print_usage(sys.stderr)
        _error(wrong)
        return None
    _gdb_option(args, command)
    if command and command[0] == "--":
        command.pop(0)
    if not command:
        parser = getattr(args, "parser", None)
        if parser is not None:
            parser.print_usage(sys.stderr)
        _error(f"{what} is required")
        return None
    return command


def exec_command(args) -> int:
    command = _command(args, "PROGRAM")
    if command is None:
        return 2
    return _end_as(_traced(command, args))


def run_command(args) -> int:
    import tempfile                      # only `run` builds: `exec` starts without it
    from regmap.trace import TraceError
    from regmap.trace.build import build
    command = _command(args, "FILE")
    if command is None:
        return 2
    sources, options, arguments = _run_words(command)
    source = sources[0]
    with tempfile.TemporaryDirectory(prefix="regmap-run-") as directory:
        try:
            executable = build(sources, directory, options)
        except TraceError as error:
            _error(str(error), error.detail)
            return error.status
        end = _traced([executable, *arguments], args, executable=executable,
                      name=os.path.splitext(source)[0] or source)
    return _end_as(end)                # the directory is gone before regmap may die


def _run_words(command: list[str]) -> tuple[list[str], list[str], list[str]]:
    """``run``'s words after its options: the sources (the first word, and each next word that
    names a .c, .s or .S file), compiler options (after a ``--`` that follows the sources, up to
    the next ``--``), and the program's arguments (the rest)."""
    end = 1
    while end < len(command) and command[end].endswith((".c", ".s", ".S")) \
            and os.path.isfile(command[end]):
        end += 1
    sources, rest = command[:end], command[end:]
    if rest[:1] != ["--"]:
        return sources, [], rest
    rest = rest[1:]
    split = rest.index("--") if "--" in rest else len(rest)
    return sources, rest[:split], rest[split + 1:]


QUICK_COMMANDS = {"exec": exec_command, "run": run_command}


def main(argv: list[str] | None = None) -> int:
    """This module's two subcommands alone (``python -m regmap.cli.execute run FILE``)."""
    import argparse
    parser = argparse.ArgumentParser(prog="regmap")
    add_parser(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
