"""Known sites under the tracer: a fault at a planned site is sent to its trampoline, not emulated.

In-process, a known site's fault never reaches Python (`regmap.runtime.dispatch`).  A traced
thread cannot be spared its stop: the kernel stops a traced thread at every signal it is
sent, whatever handler the program has, so the tracer sees every fault.  What it can spare
is the work done during the stop.  Emulating ``addsd xmm0, [8]`` reads and writes the
thread's XSAVE state (11 KB on an AVX-512 host, two more ptrace calls); an instruction with
a trampoline needs none of that: the tracer only sets the thread's rip to the trampoline
(the instruction run on a copy of its window bytes, `regmap.x86.trampoline`) in the same
``SETREGS``/``CONT`` that would have resumed it after emulation, and the CPU does the rest.

Once a site has been emulated `AFTER` times in a process, the tracer places its trampoline in
the process (`regmap.trace.trampolines`, as ``--translate`` does, but the site itself is never
rewritten: this works where patching does not, in code shared with another process, under a
debugger's threads, for sites shorter than a jump, and without ``--translate``).  A
register-addressed site gets one trampoline per window address it was emulated with, at most
`MAX_ADDRESSES`; at any other address, or with other bytes at rip, the fault is emulated as
before.  A CPU exception inside a trampoline is mapped back onto the site as for
``--translate`` (`Tracer._trampoline_fault`).

Records per process (thread-group id), kept with the address spaces as the trampolines are:
a fork child gets a copy, a process sharing the memory (vfork, CLONE_VM) the same records,
and exec drops them.
"""
from __future__ import annotations

from functools import partial

AFTER = 16                  # emulated faults at a site before it is planned (as in-process)
MAX_ADDRESSES = 8
LOWEST_STACK = 0x2000       # rsp below it: emulated (as in-process, `runtime.dispatch`)


class Plan:
    """A site's instruction bytes as planned: how its operand's address is worked out from the
    registers (None: declined), and the trampoline for each window address (0: none)."""

    __slots__ = ("code", "length", "operand", "targets", "only")

    def __init__(self, site: int, code: bytes):
        from regmap.x86.trampoline import Declined, operand_address
        self.code, self.length = code, len(code)
        self.targets: dict[int, int] = {}
        self.only = 0           # a constant address's trampoline: no address to work out
        try:
            self.operand = operand_address(site, code)
        except Declined:
            self.operand = None


class KnownSites:
    """The planned sites of every traced process.  `trampolines`: where they are placed (the
    patcher's when sites are translated too: one table for the faults inside them); `owns`:
    whether process events are this object's to pass on to them."""

    def __init__(self, trampolines, tgid, owns: bool, layout_of, after: int = AFTER):
        from regmap.trace.ptrace import RemoteMemory
        self.trampolines = trampolines      # None until the first is placed (`_placer`)
        self.tgid = tgid                    # the tracer's `ThreadGroups`
        self.memory = RemoteMemory()        # the tracee's, for placing trampolines
        self.owns = owns
        self.layout_of = layout_of
        self.after = after
        self.plans: dict[int, dict[int, Plan]] = {}          # tgid -> site -> plan
        self.counts: dict[tuple[int, int], int] = {}         # (tgid, site) -> emulated faults

    # -- the fault path -----------------------------------------------------------------------
    def target(self, tid: int, regs, code, fetched: int) -> int:
        """Where thread `tid`, stopped by a page fault with `regs` and `fetched` bytes of the
        code at rip in `code`, goes instead of being emulated: its trampoline, or 0."""
        sites = self.plans.get(self.tgid(tid))
        plan = sites.get(regs.rip) if sites else None
        if plan is None or plan.operand is None or regs.rsp < LOWEST_STACK:
            return 0                      # (a stack in the window: the scratch would be in it)
        length = plan.length
        if fetched < length or code[:length] != plan.code:
            return 0
        if plan.only:
            return plan.only
        return plan.targets.get(plan.operand.value(partial(getattr, regs)), 0)

    def due(self, tid: int, site: int, code: bytes, regs) -> bool:
        """Count an emulated fault at `site` (`code` its bytes, `regs` the thread's registers
        after it); whether `learn` has something to do (the thread must then stay stopped
        until it has run)."""
        key = (self.tgid(tid), site)
        count = self.counts.get(key, 0) + 1
        self.counts[key] = count
        if count < self.after:
            return False
        plan = self.plans.get(key[0], {}).get(site)
        if plan is None or plan.code != code:
            return True
        if plan.operand is None or len(plan.targets) >= MAX_ADDRESSES:
            return False
        return plan.operand.value(partial(getattr, regs)) not in plan.targets

    def learn(self, tid: int, site: int, code: bytes, regs) -> None:
        """Thread `tid` (stopped, its registers `regs` as the emulated instruction left them:
        none of its operand's address registers changed) was emulated at `site`: place the
        trampoline for this window address, if it gets one and has none yet."""
        tgid = self.tgid(tid)
        sites = self.plans.setdefault(tgid, {})
        plan = sites.get(site)
        if plan is None or plan.code != code:
            plan = sites[site] = Plan(site, code)
        if plan.operand is None:
            return
        address = plan.operand.value(partial(getattr, regs))
        if address in plan.targets or len(plan.targets) >= MAX_ADDRESSES:
            return
        registers = plan.operand.base is not None or plan.operand.index is not None
        trampoline = self._placer().place(tid, tgid, site, code, self.memory,
                                          address if registers else None)
        plan.targets[address] = trampoline.address if trampoline is not None else 0
        if not registers:                 # a constant address: the one trampoline, or none
            plan.only = plan.targets[address]
            if not plan.only:
                plan.operand = None

    def _placer(self):
        if self.trampolines is None:
            from regmap.trace.trampolines import Trampolines
            self.trampolines = Trampolines(self.layout_of())
        return self.trampolines

    # -- process events (as `regmap.trace.patch.Patcher`'s) ------------------------------------
    # None matter before the first plan: the program's start-up exec costs nothing.
    def forked(self, parent_tid: int, child: int) -> None:
        """A fork child has a copy of the parent's memory, trampolines included; ptrace reports
        clone(CLONE_VM | SIGCHLD) as a fork too, and that child shares the parent's."""
        if not self.plans:
            return
        from regmap.trace.patch import same_memory
        parent = self.tgid(parent_tid)
        if same_memory(parent_tid, child):
            self._shared(parent, child)
            return
        if parent in self.plans:
            self.plans[self.tgid(child)] = {site: _copy(plan) for site, plan in self.plans[parent].items()}
        if self.owns and self.trampolines is not None:
            self.trampolines.copied(parent, self.tgid(child))

    def vforked(self, parent_tid: int, child: int) -> None:
        if self.plans:
            self._shared(self.tgid(parent_tid), child)

    def cloned(self, parent_tid: int, child: int) -> None:
        """A clone that is not a thread may share the memory (as the patcher takes it)."""
        if self.plans and self.tgid(child) != self.tgid(parent_tid):
            self._shared(self.tgid(parent_tid), child)

    def _shared(self, parent: int, child: int) -> None:
        """`child` runs in `parent`'s memory: one set of records for both."""
        self.plans[self.tgid(child)] = self.plans.setdefault(parent, {})
        if self.owns:
            self._placer().shared(parent, self.tgid(child))

    def execed(self, tid: int) -> None:
        if not self.plans:
            return
        tgid = self.tgid(tid)
        self.plans.pop(tgid, None)
        for key in [key for key in self.counts if key[0] == tgid]:
            del self.counts[key]
        if self.owns and self.trampolines is not None:
            self.trampolines.execed(tgid)


def _copy(plan: Plan) -> Plan:
    copy = Plan.__new__(Plan)
    copy.code, copy.length, copy.operand, copy.only = plan.code, plan.length, plan.operand, plan.only
    copy.targets = dict(plan.targets)
    return copy
