"""The tracer's site cache: a fault at a site whose compiled fast path ran before runs that
path again, without the emulator's fetch, decode-cache lookup and checks.

The emulator caches a decoded `Form` per address and checks, at every fault, that the bytes
fetched at rip still start with the form's (code can change: a JIT, a patched page, another
process at the same address).  Here the fault's one read of the code at rip (`FaultCalls`)
is compared with the form's bytes; only when they are the same does the form's compiled
function run, exactly what ``Emulator.step`` would run for them.  Anything else -- a site not
seen, changed bytes, a read that failed, a compiled function declining -- is the emulator's.
"""
from __future__ import annotations

from regmap import clock

# the bound of the cache; past it the older half goes (a site still hot comes back at its
# next fault, through the emulator)
MAX_SITES = 4096


def _never(_form) -> bool:
    return False


class Sites:
    """rip -> the emulator's Form whose compiled fast path ran there.  ``code`` is the buffer
    the fault path reads the code at rip into (a memoryview of bytes)."""

    __slots__ = ("emulator", "trace", "code", "forms", "declined")

    def __init__(self, emulator, trace: bool, code: memoryview):
        self.emulator = emulator
        self.trace = trace          # every step through the emulator, which records accesses
        self.code = code
        self.forms: dict[int, object] = {}
        self.declined = ()          # the compiler's `Declined`, once there is a form to run

    def step(self, machine, fetched: int):
        """The step of the instruction at rip, ``fetched`` bytes of it read into ``code``."""
        rip = machine.regs.rip
        form = self.forms.get(rip)
        if form is not None:
            code = form.code
            if fetched >= len(code) and self.code[:len(code)] == code:
                try:
                    form.fast(machine.regs, machine)
                    return form.result
                except self.declined:
                    pass            # not an address its compiled code covers: the emulator decides
        step = self.emulator.step(machine, trace=self.trace)
        if not self.trace:
            self._remember(rip, step)
        return step

    def _remember(self, rip: int, step) -> None:
        """Keep the site of a step its compiled fast path did (the emulator's ``form.result``)
        if the instruction lies within one page, as the fault path reads it."""
        form_at = getattr(self.emulator, "form_at", None)
        if form_at is None or step.address != rip or (rip & 0xFFF) + len(step.code) > 0x1000:
            return
        form = form_at(rip, step.code)
        if form.result is not step:
            return                  # the generic path ran: nothing to repeat
        if len(self.forms) >= MAX_SITES:
            clock.evict(self.forms, MAX_SITES // 2, _never)
        if self.declined == ():
            from regmap.x86.compiler import Declined
            self.declined = Declined
        self.forms[rip] = form
