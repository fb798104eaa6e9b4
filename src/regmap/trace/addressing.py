"""Permissive addressing under the tracer: a register-addressed page-0 access (``[rax+0xc]``
with rax = 0) in a program that has its own SIGSEGV handler is said once, on regmap's stream.

Such a program may be relying on the fault (a JVM's implicit null checks: a load from
[reg+small offset], caught by its own handler); emulated as a register access, it silently
computes something else.  The handler is looked up in /proc (SigCgt) at the 1st, 2nd, 4th, 8th
... such access of each process, so a program that installs it late is still seen, and one
that never does pays for a few reads only.
"""
from __future__ import annotations

from regmap.errors import handler_warning

SIGSEGV_BIT = 1 << (11 - 1)


def _status(tid: int) -> tuple[int, int]:
    """(tgid, caught signals) of thread ``tid``; (tid, 0) when /proc cannot say."""
    from regmap.procmaps import status      # (not at start-up: it imports typing)
    fields = status(tid)
    return int(fields.get("Tgid", tid)), int(fields.get("SigCgt", "0"), 16)


class HandlerWatch:
    """``watch(machine, form)`` for the emulator (`Emulator.watch`): says it once per run."""

    def __init__(self, reporter):
        self.reporter = reporter
        self.seen = 0           # register-addressed window accesses through the emulator
        self.said = False

    def __call__(self, machine, form) -> None:
        if self.said:
            return
        self.seen += 1
        if self.seen & (self.seen - 1):
            return              # not a power of two
        tid = machine.tid
        tgid, caught = _status(tid)
        if caught & SIGSEGV_BIT:
            self.said = True
            self.reporter.message(
                handler_warning(f"process {tgid}", form.disassembly,
                                self.reporter.where(tid, form.address),
                                "regmap exec --strict"),
                event="register-addressed", tid=tid, rip=form.address)
