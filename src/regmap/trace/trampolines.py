"""Trampolines under the tracer: placed in the tracee, and faults inside them mapped back.

`regmap.x86.trampoline` builds a site's trampoline, as in-process
(`regmap.runtime.trampolines`, whose docstring says what one does).  Here the
tracer has the stopped thread map read+execute regions (`regmap.trace.inject`:
an ``mmap`` with MAP_FIXED_NOREPLACE at the gap nearest the site, so that
``jmp rel32`` reaches it), writes the trampoline through /proc/PID/mem, and
`regmap.trace.patch.Patcher` writes the site's ``jmp`` as it writes a
register form (its other threads kept off the code meanwhile, and never while
another process shares its memory).

Records per process (thread-group id): the regions and the table from each
trampoline's moved instruction to the trampoline.  A fork child has the same
trampolines at the same addresses, so it gets a copy; a process that shares
the memory (a vfork child, a CLONE_VM clone) shares the records themselves;
exec drops them.  Trampolines are never unmapped: a thread may be
inside one.

Faults.  Only the moved instruction can fault (#GP, #AC, #DE, #XM, #MF, #UD).
The tracer sees the signal-delivery-stop with rip on it (`at`); `map_back`
gives the thread the state the instruction had at the site (rsp and the base
register restored, rip the site's) and rewrites the siginfo's si_addr where
it was the moved instruction's address, so the program gets the signal the
untranslated instruction would have raised.  A signal sent by a process while
a thread is inside a trampoline is passed on as it is (its handler sees the
trampoline's state, which it may look at and return to, as in-process).
"""
from __future__ import annotations

import ctypes

from regmap.procmaps import gaps_near
from regmap.trace import ptrace
from regmap.trace.inject import map_code, write_code
from regmap.x86 import host, stub
from regmap.x86.stub import Copy
from regmap.x86.trampoline import SAVED_BASE, Declined, Trampoline, build, plan
from regmap.x86.translate import Translation

REGION_SIZE = 1 << 16             # one mapping holds many trampolines
REACH = (1 << 31) - REGION_SIZE   # a rel32 jump from the site reaches anywhere in the region
LOWEST = 1 << 16                  # below vm.mmap_min_addr's usual value: never asked for
ALIGN = 16
TRIES = 4                         # gaps tried before a site is left faulting


class Trampolines:
    """The trampolines of every traced process."""

    def __init__(self, layout):
        self.layout = layout
        # tgid -> moved (or a stub's copied) instruction -> its entry
        self.tables: dict[int, dict[int, Trampoline | Copy]] = {}
        self.regions: dict[int, list[list[int]]] = {}        # tgid -> [start, end, next free]
        # tgid -> a short site's next instruction's old address -> its copy (`regmap.x86.stub`)
        self.puns: dict[int, dict[int, int]] = {}
        self.width = host.vector_width()

    def translate(self, tid: int, tgid: int, site: int, code: bytes, memory,
                  at: int | None = None) -> Translation | None:
        """Build and place the trampoline of the instruction `code` at `site` in the process of the
        stopped thread `tid`: the Translation the site becomes (a ``jmp``), or None.  `at`: the
        window address of a register-addressed operand, whose site gets a stub (as in-process,
        `regmap.runtime.trampolines.place_stub`)."""
        if at is not None:
            return self._stub(tid, tgid, site, code, memory, at)
        trampoline = self.place(tid, tgid, site, code, memory)
        if trampoline is None:
            return None
        return Translation(site, trampoline.old, trampoline.jump, trampoline.old_text,
                           trampoline.new_text, "trampoline")

    def place(self, tid: int, tgid: int, site: int, code: bytes, memory,
              at: int | None = None) -> Trampoline | None:
        """The trampoline of the instruction `code` at `site` (for a register-addressed operand,
        the one for window address `at`), placed in the process of the stopped thread `tid`
        within reach of the site and entered in its table; or None."""
        try:
            p = plan(site, code, self.layout, self.width, at)
            size = len(build(p, site, self.width).code)   # the same anywhere: its jumps are rel32
            address = self._room(tid, tgid, site, size, memory)
            if address is None:
                return None
            trampoline = build(p, address, self.width)
        except Declined:
            return None
        if not write_code(tgid, address, trampoline.code):
            return None
        self.tables.setdefault(tgid, {})[trampoline.instruction] = trampoline
        return trampoline

    def _stub(self, tid: int, tgid: int, site: int, code: bytes, memory, at: int) -> Translation | None:
        """The stub of a register-addressed site and, right after it, its window trampoline."""
        try:
            p = plan(site, code, self.layout, self.width, at)
            room = stub.size(site, code, at)
            address = self._room(tid, tgid, site, room + len(build(p, site, self.width).code),
                                 memory, stub.pun(site, code))
            if address is None:
                return None
            # (a short site's trampoline returns to the copy of the instruction after it)
            moved = stub.build(site, code, at, address, address, pun=False).follower or None
            trampoline = build(p, address + room, self.width, exit=moved)
            placed = stub.build(site, code, at, address, trampoline.address)
        except Declined:
            return None
        if not (write_code(tgid, trampoline.address, trampoline.code)
                and write_code(tgid, address, placed.code)):
            return None
        table = self.tables.setdefault(tgid, {})
        table[trampoline.instruction] = trampoline
        for entry in stub.copies(placed):
            table[entry.instruction] = entry
        if placed.boundary:
            self.puns.setdefault(tgid, {})[placed.boundary] = placed.follower
        return Translation(site, placed.old, placed.jump, placed.old_text, placed.new_text,
                           "register-addressed")

    def _room(self, tid: int, tgid: int, site: int, size: int, memory,
              pun: stub.Pun | None = None) -> int | None:
        regions = self.regions.setdefault(tgid, [])
        for region in regions:
            start, end, free = region
            at = free if pun is None else stub.punned_from(pun, free, ALIGN)
            if at + size <= end and abs(start - site) < REACH and abs(end - site) < REACH:
                region[2] = (at + size + ALIGN - 1) // ALIGN * ALIGN
                return at
        start = self._map_near(tid, tgid, site, memory, pun)
        if start is None:
            return None
        regions.append([start, start + REGION_SIZE, start])
        return self._room(tid, tgid, site, size, memory, pun)

    @staticmethod
    def _map_near(tid: int, tgid: int, site: int, memory,
                  pun: stub.Pun | None = None) -> int | None:
        """A new region near `site`; for a short site's stub (`pun`), one holding an address its
        jump puns to (`stub.pun_windows`)."""
        try:
            if pun is None:
                candidates = gaps_near(tgid, site, REGION_SIZE, REACH, LOWEST)[:TRIES]
            else:
                candidates = [at & ~0xFFF for at in stub.pun_windows(pun, REACH, REGION_SIZE)
                              if at & ~0xFFF >= LOWEST][:TRIES * 8]
            regs = ptrace.UserRegs()
            ptrace.ptrace(ptrace.PTRACE_GETREGS, tid, 0, ctypes.addressof(regs))
        except (OSError, ValueError):
            return None
        for at in candidates:
            got = map_code(tid, regs, memory, at, REGION_SIZE, fixed=True)
            if got is not None:
                return got
        return None

    # -- faults -------------------------------------------------------------------------------
    def at(self, tgid: int, rip: int) -> Trampoline | Copy | None:
        """The trampoline whose moved instruction (or the stub whose copy) is at `rip` in process
        `tgid`, if any."""
        table = self.tables.get(tgid)
        return table.get(rip) if table else None

    @staticmethod
    def original(entry: Trampoline | Copy) -> bytes | None:
        """A stub's copy (whose fault is emulated at its site): the site's bytes; else None."""
        return entry.old if isinstance(entry, Copy) else None

    def fault(self, tid: int, tgid: int, regs, siginfo, memory) -> Trampoline | Copy | None:
        """Thread `tid` of process `tgid` stopped with a signal, `regs` and `siginfo` read: if it
        is a CPU exception of a trampoline's moved instruction (or of a stub's copy), the thread
        and the signal are now the site's (`map_back`): the entry."""
        entry = self.at(tgid, regs.rip)
        if entry is None or not self.map_back(tid, entry, regs, siginfo, memory):
            return None
        return entry

    def map_back(self, tid: int, trampoline: Trampoline | Copy, regs, siginfo, memory) -> bool:
        """Thread `tid` (registers `regs`, signal `siginfo`, both read) stopped on `trampoline`'s
        moved instruction (or a stub's copy) with a CPU exception: make it the site's, in the
        thread and in the signal.  False if the thread's state could not be read or written."""
        if not 0 < siginfo.si_code <= ptrace.SI_KERNEL:
            return False                    # sent by a process: not the instruction's
        if isinstance(trampoline, Trampoline):
            saved = memory.read(tid, regs.rsp + SAVED_BASE, 8)
            if saved is None or len(saved) != 8:
                return False
            setattr(regs, trampoline.base, int.from_bytes(saved, "little"))
            regs.rsp += trampoline.frame
        regs.rip = trampoline.site
        try:
            ptrace.setregs(tid, regs)
            if siginfo.si_addr == trampoline.instruction:
                siginfo.si_addr = trampoline.site
                ptrace.setsiginfo(tid, siginfo)
        except OSError:
            return False
        return True

    # -- process events -----------------------------------------------------------------------
    def copied(self, parent: int, child: int) -> None:
        """`child` has `parent`'s trampolines (a fork's copy, or the same memory)."""
        if parent in self.tables:
            self.tables[child] = dict(self.tables[parent])
            self.regions[child] = [list(region) for region in self.regions.get(parent, [])]
            self.puns[child] = dict(self.puns.get(parent, {}))

    def shared(self, parent: int, child: int) -> None:
        """`child` runs in `parent`'s memory (vfork, CLONE_VM): one table for both, so that a
        trampoline either places is the other's too."""
        self.tables[child] = self.tables.setdefault(parent, {})
        self.regions[child] = self.regions.setdefault(parent, [])
        self.puns[child] = self.puns.setdefault(parent, {})

    def execed(self, tgid: int) -> None:
        self.tables.pop(tgid, None)
        self.regions.pop(tgid, None)
        self.puns.pop(tgid, None)

    def punned(self, tgid: int, trapped_at: int) -> int | None:
        """Where a thread of `tgid` that executed the int3 at `trapped_at` goes on: the copy of a
        short site's next instruction, if that is where the instruction was; else None."""
        puns = self.puns.get(tgid)
        return puns.get(trapped_at) if puns else None
