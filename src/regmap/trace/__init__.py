"""regmap.trace: run an unmodified x86-64 Linux program with page 0 mapped onto its registers.

The program runs under ptrace (through ctypes); each page-0 access faults, the
tracer emulates the instruction against the stopped thread's registers and
lets the thread go on.  ``run_traced`` (an exit status) and ``trace_program``
(a ``ProgramExit``: the code, or the signal) are the whole API; ``regmap exec``
and ``regmap run`` are its command line (``regmap.trace.build`` makes the
executable for ``run``).  See docs/tracer.md.
"""
from __future__ import annotations

from regmap.trace.program import TraceError
from regmap.trace.report import ProgramExit
from regmap.trace.run import run_traced, trace_program

__all__ = ["ProgramExit", "TraceError", "run_traced", "trace_program"]
