"""Hot-site translation under the tracer: register forms written into the tracee's code.

`regmap.x86.translate` decides what a site becomes (``add rax, [8]`` ->
``add rax, rcx``); the `Patcher` counts faults per site and process, and once
a site has faulted `after` times writes the new bytes through
``/proc/PID/mem``, which (like PTRACE_POKEDATA, as a debugger's breakpoints
are written) copies a read-only private page on write and leaves its
protection as it was.  Only private executable mappings are written.

Threads: the faulting thread is stopped in its signal-delivery-stop while the
bytes are written, and every other thread of its process is kept off the code
(`regmap.trace.quiesce`: PTRACE_INTERRUPT, and each one seen off its CPU); a
thread that would resume strictly inside the site's bytes leaves the site
faulting.  Under a debugger (which may hold threads itself) only a process of
one thread is patched.  No process is patched while another process shares its
memory: a vfork child before its exec or exit (and its parent meanwhile), a
clone without CLONE_THREAD, a clone(CLONE_VM | SIGCHLD) that ptrace reports as
a fork (both, from then on); its sites keep faulting, correctly.

A site with no exact register form gets a trampoline instead
(`regmap.trace.trampolines`, placed in the tracee), when the process may be
written: the site becomes a ``jmp`` to it, written the same way.

Bookkeeping per process (thread-group id): the sites written and their
original bytes, and the trampolines.  A fork child inherits the patched pages, so it inherits the
records; exec replaces the address space, so the records go.
"""
from __future__ import annotations

import ctypes
import os

from regmap.procmaps import private_code
from regmap.trace.ptrace import RemoteMemory
from regmap.trace.quiesce import inside, stop_others
from regmap.trace.trampolines import Trampolines
from regmap.x86 import stub
from regmap.x86.translate import Translation, overlaps, translate


class Patcher:
    """The translation records of every traced process; `fault` is called for each emulated fault.

    `tgid(tid)` is the thread-group id of a thread (the tracer's `ThreadGroups`).  A site is
    considered once, at its `after`-th fault in a process.
    """

    def __init__(self, layout, after: int, tgid):
        self.layout = layout
        self.after = after
        self.tgid = tgid
        self.counts: dict[tuple[int, int], int] = {}          # (tgid, site) -> faults
        self.patches: dict[int, dict[int, Translation]] = {}  # tgid -> site -> translation
        self.shared: set[int] = set()     # processes whose memory another process shares
        self.vforks: dict[int, int] = {}  # vfork child -> parent, until the child execs or exits
        self.pun_traps: dict[tuple[int, int], int] = {}       # (tgid, boundary) -> traps
        self.trampolines = Trampolines(layout)
        self.memory = RemoteMemory()      # the tracee's, for placing trampolines

    # -- faults -------------------------------------------------------------------------------
    def hot_address(self, tid: int, machine) -> int | None:
        """If the next `fault` at the stopped thread's rip (`machine`, loaded) makes the site hot
        and its instruction is register-addressed: its window address, from the registers
        before the instruction runs (through the window it may change its own address's)."""
        rip = machine.regs.rip
        if self.counts.get((self.tgid(tid), rip), 0) + 1 != self.after:
            return None
        return stub.window_address(rip, machine.fetch(rip), machine.read_register)

    def fault(self, tid: int, step, others: bool = True, at: int | None = None) -> Translation | None:
        """Thread `tid` (stopped) just had the window instruction `step` emulated.  `others`:
        the process's other threads may be stopped for the write (not under a debugger).
        `at`: `hot_address`'s answer."""
        tgid = self.tgid(tid)
        key = (tgid, step.address)
        count = self.counts.get(key, 0) + 1
        self.counts[key] = count
        if count != self.after or self.sharing(tgid) or not (others or self._alone(tid, tgid)):
            return None
        translation = translate(step.address, step.code, self.layout)
        if translation is None:         # placed while the others run: nothing jumps there yet
            code = step.code            # (a short register-addressed site's stub takes the next too)
            if at is not None:
                code += self.memory.fetch(tid, step.address + len(step.code))
            translation = self.trampolines.translate(tid, tgid, step.address, code, self.memory, at)
        if translation is None or overlaps(translation, self.patches.get(tgid, {}).values()) \
                or not private_code(tgid, translation.address, len(translation.old)):
            return None                 # (checked before the other threads are stopped)
        rips = stop_others(tgid, tid)
        if rips is not None:            # (one at a moved instruction's start traps there, on to
            puns = self.trampolines.puns.get(tgid, {})       # the instruction's copy)
            rips = [rip for rip in rips if rip not in puns]
        if rips is None or inside(translation.address, len(translation.old), rips) \
                or not self._write(tgid, translation):
            return None
        self.patches.setdefault(tgid, {})[step.address] = translation
        return translation

    def trapped(self, tid: int, boundary: int) -> None:
        """Thread `tid` trapped on the pun at a short site's moved instruction `boundary` (and
        goes on in its copy); `stub.PUN_TRAPS` such traps (a loop's head, say: every turn would
        trap) give the site its bytes back (`unpun`)."""
        key = (self.tgid(tid), boundary)
        self.pun_traps[key] = self.pun_traps.get(key, 0) + 1
        if self.pun_traps[key] >= stub.PUN_TRAPS:
            self.unpun(tid, boundary)

    def unpun(self, tid: int, boundary: int) -> None:
        """The short site whose moved instruction was at `boundary` gets its old bytes back
        in `tid`'s process, for good (in-process: `regmap.runtime.patch._unpun`): entered by a
        jump, that instruction traps every time.  Not now if a thread is stopped inside."""
        tgid = self.tgid(tid)
        sites = self.patches.get(tgid, {})
        found = [t for t in sites.values() if t.address < boundary < t.address + len(t.old)]
        if not found or self.sharing(tgid) \
                or not private_code(tgid, found[0].address, len(found[0].old)):
            return
        rips = stop_others(tgid, tid)
        back = found[0]._replace(old=found[0].new, new=found[0].old)
        # (a thread just past the pun has trapped on it: its stop sends it to the moved copy)
        rips = rips if rips is None else [rip for rip in rips if rip != boundary + 1]
        if rips is None or inside(back.address, len(back.old), rips) or not self._write(tgid, back):
            return
        del sites[back.address]         # (its count is past `after`: never considered again)

    def rewritten(self, tid: int, address: int) -> bool:
        """Whether a site at `address` was rewritten in `tid`'s process."""
        return address in self.patches.get(self.tgid(tid), ())

    def sharing(self, tgid: int) -> bool:
        """Whether another process runs in `tgid`'s memory (then it is never written)."""
        return tgid in self.shared or tgid in self.vforks or tgid in self.vforks.values()

    def _write(self, tgid: int, translation: Translation) -> bool:
        """`translation.new` over `translation.old`, if those are still there (the callers have
        checked that the code is the process's own copy, before stopping its threads)."""
        address, old = translation.address, translation.old
        try:
            fd = os.open(f"/proc/{tgid}/mem", os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            if os.pread(fd, len(old), address) != old:
                return False            # the code changed since it was decoded
            return os.pwrite(fd, translation.new, address) == len(translation.new)
        except OSError:
            return False
        finally:
            os.close(fd)

    @staticmethod
    def _alone(tid: int, tgid: int) -> bool:
        try:
            return os.listdir(f"/proc/{tgid}/task") == [str(tid)]
        except OSError:
            return False

    # -- process events -----------------------------------------------------------------------
    def forked(self, parent_tid: int, child: int) -> None:
        """A fork child: its pages are a copy of the parent's, patched sites included.  ptrace
        reports clone(CLONE_VM | SIGCHLD) as a fork too: that child shares the parent's memory,
        and then neither is patched from then on."""
        parent = self.tgid(parent_tid)
        if same_memory(parent_tid, child):
            self.shared.update((parent, self.tgid(child)))
            self.trampolines.shared(parent, self.tgid(child))
            return
        self.trampolines.copied(parent, child)
        if parent in self.patches:
            self.patches[child] = dict(self.patches[parent])

    def vforked(self, parent_tid: int, child: int) -> None:
        """A vfork child runs in its parent's memory until it execs or exits: neither is patched
        meanwhile, and the child's trampoline faults are mapped back as the parent's."""
        parent = self.tgid(parent_tid)
        self.vforks[self.tgid(child)] = parent
        self.trampolines.shared(parent, self.tgid(child))

    def cloned(self, parent_tid: int, child: int) -> None:
        """A clone that is not a thread may share memory with its parent (CLONE_VM): neither is
        patched from then on (there is no cheap way to tell)."""
        parent = self.tgid(parent_tid)
        if self.tgid(child) != parent:
            self.shared.update((parent, self.tgid(child)))
            self.trampolines.shared(parent, self.tgid(child))

    def execed(self, tid: int) -> None:
        """A new address space: the records of the old one go."""
        tgid = self.tgid(tid)
        self.patches.pop(tgid, None)
        self.trampolines.execed(tgid)
        self.shared.discard(tgid)
        self.vforks.pop(tgid, None)     # its parent's memory is the parent's alone again
        for key in [key for key in self.counts if key[0] == tgid]:
            del self.counts[key]
        for key in [key for key in self.pun_traps if key[0] == tgid]:
            del self.pun_traps[key]

    def exited(self, tid: int) -> None:
        self.vforks.pop(tid, None)      # a vfork child is one thread: its tid is its tgid

    def translated(self) -> list[tuple[int, Translation]]:
        """(pid, translation) of every site patched, in every process seen."""
        return [(pid, t) for pid, sites in self.patches.items() for t in sites.values()]


_SYS_KCMP, _KCMP_VM = 312, 1
_libc = ctypes.CDLL(None, use_errno=True)


def same_memory(pid: int, other: int) -> bool:
    """Whether two processes share one address space (kcmp(2) KCMP_VM; a kernel without kcmp
    answers no, as a fork's child would)."""
    return _libc.syscall(ctypes.c_long(_SYS_KCMP), ctypes.c_long(pid), ctypes.c_long(other),
                         ctypes.c_long(_KCMP_VM), ctypes.c_long(0), ctypes.c_long(0)) == 0
