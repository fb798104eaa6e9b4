"""The tracer's entry points: what runs a program under it, with which emulator and options.

``trace_program`` (a ``ProgramExit``) and ``run_traced`` (an exit status) set up a `Tracer`
(regmap.trace.tracer): the emulator (made at the first fault for the default layout, so that a
program that never touches page 0 does not pay for the x86 layer), translation, fast faults,
a debugger; then run the program to its end.
"""
from __future__ import annotations

import os
import sys

from regmap.trace.addressing import HandlerWatch
from regmap.trace.program import TraceError
from regmap.trace.report import ProgramExit, Reporter
from regmap.trace.tracer import Tracer


def _make_emulator(layout, addressing=(False, None)):
    """The x86 emulator; ``addressing`` is (strict, the permissive mode's `Emulator.watch`)."""
    from regmap.x86 import Emulator
    emulator = Emulator(layout, strict=addressing[0])
    emulator.watch = addressing[1]
    return emulator


class _FirstFault:
    """The default emulator, made at the first fault: a program that never touches page 0
    does not pay for importing the x86 layer (iced-x86, the semantics) at start-up, nor,
    with the default layout (`layout` None), for solving the register file."""

    def __init__(self, layout, addressing=(False, None)):
        self.layout = layout
        self.addressing = addressing

    def step(self, machine, trace: bool = False):
        emulator = _make_emulator(_load_layout(self.layout), self.addressing)
        self.step = emulator.step           # every later fault calls it directly
        self.form_at = emulator.form_at     # and the tracer keeps its sites (`Sites`)
        return emulator.step(machine, trace=trace)


def _load_layout(layout):
    if layout is None or isinstance(layout, (str, os.PathLike)):
        from regmap.layout import load_layout
        return load_layout(None if layout is None else os.fspath(layout))
    return layout


def run_traced(argv, layout=None, trace=False, stats=False, json=False, **options) -> int:
    """Run ``argv`` under the tracer (see ``trace_program``); return the program's exit code,
    or 128 + the signal that killed it.  (``regmap exec`` instead dies of that signal.)"""
    return trace_program(argv, layout, trace, stats, json, **options).status


def trace_program(argv, layout=None, trace=False, stats=False, json=False, *, stream=None,
                  quiet=False, emulator=None, env=None, executable=None, name=None,
                  translate=0, strict=False, debugger=None, fast_faults=True) -> ProgramExit:
    """Run ``argv`` under the tracer with page 0 mapped by ``layout``; return how it ended
    (``.code``, or ``.signal`` and ``.core_dumped``; ``.status`` is the shell's number).

    ``layout``: a ``Layout``, a layout name or file, or ``None`` for the default.  ``trace``,
    ``stats``, ``json``: what to print on ``stream`` (stderr by default); ``quiet``: no
    "killed by" line (a death by SIGINT or SIGPIPE never gets one).  ``emulator``: any
    object with ``step(machine, trace=...)``; by default ``regmap.x86.Emulator(layout)``.
    ``executable``: the file to run (default: ``argv[0]`` looked up on PATH); ``name``: the
    program's name in messages (default ``argv[0]``).  ``env``: its environment.
    ``translate``: N > 0 rewrites a site into its exact register form once it has faulted N
    times in a process (``regmap.trace.patch``); 0 never does.  ``strict``: only constant
    addresses (``[0x38]``, not ``[rbx+8]``) are window accesses; a register-addressed page-0
    access is the genuine NULL-pointer fault it is without regmap (docs/tracer.md).  Without
    it, such an access in a program with its own SIGSEGV handler is said once.  ``debugger``:
    a ``regmap.gdb.Debugger``, which serves gdb from the program's first instruction on.
    ``fast_faults``: True (16) or N: a site emulated N times in a process gets its trampoline
    there, and its later faults are sent to it instead of being emulated
    (``regmap.trace.known``); False or 0 never.  Not with ``trace``, a debugger or a stand-in
    ``emulator``, which see every fault.

    Raises ``TraceError`` (with ``.status``: 127 not found, 126 not executable or not x86-64,
    1 otherwise) for a program that cannot be run.  While it runs, ``trace_program`` reaps any
    child of the calling process (it waits with ``waitpid(-1)``), ignores SIGINT, SIGQUIT and
    the terminal stop signals and forwards SIGTERM and SIGHUP to the program.
    """
    from regmap.trace.program import check_executable, resolve
    argv = [os.fspath(arg) for arg in argv]
    if not argv:
        raise TraceError("no program given", 2)
    path = resolve(argv[0]) if executable is None else os.fspath(executable)
    check_executable(path)
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        from regmap.errors import UnsupportedPlatform
        raise UnsupportedPlatform("regmap exec needs Linux on x86-64")
    stand_in = emulator is not None         # a test's emulator: every fault is its to see
    reporter = Reporter(stream, trace=trace, stats=stats, json=json, quiet=quiet)
    addressing = (True, None) if strict else (False, HandlerWatch(reporter))
    if emulator is not None:
        layout = getattr(emulator, "layout", None)
    elif translate or layout is not None:
        layout = _load_layout(layout)       # a named layout is checked before the program runs
        emulator = _make_emulator(layout, addressing) if translate else _FirstFault(layout, addressing)
    else:
        emulator = _FirstFault(None, addressing)    # the default, loaded at the first fault
    tracer = Tracer(emulator, reporter)
    if translate and layout is not None:
        from regmap.trace.patch import Patcher
        from regmap.x86.translate import warm_up
        tracer.patcher = Patcher(layout, translate, tracer.groups)
        warm_up(layout, emulator)
    if fast_faults and not (trace or stand_in) and debugger is None:
        from regmap.trace.known import AFTER, KnownSites
        patcher = tracer.patcher
        tracer.known = KnownSites(
            None if patcher is None else patcher.trampolines, tracer.groups, owns=patcher is None,
            layout_of=lambda: _load_layout(getattr(emulator, "layout", None)),
            # (a site translation would rewrite gets its turn first)
            after=max(AFTER if fast_faults is True else int(fast_faults), translate + 1))
    tracer.program = name or ""
    tracer.spawn(path, argv, env)
    status = tracer.wait(debugger)
    end = reporter.exited(tracer.program, status)
    reporter.summary()
    return end
