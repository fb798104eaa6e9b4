"""Which process each traced thread belongs to: tid -> thread-group id, one table for the tracer.

The per-process records (the patcher's translations, the known sites' plans, the signals a
process must die of) are keyed by thread group; a fault reports a thread.  /proc is read once
per thread, and the table follows the threads: an exit drops one; an exec leaves the group
one thread under the leader's tid, and the old tid of the thread that called it is never
reported gone (ptrace(2)), so an exec drops every other tid of the group still listed.
"""
from __future__ import annotations


class ThreadGroups:
    def __init__(self):
        self._tgids: dict[int, int] = {}

    def __call__(self, tid: int) -> int:
        tgid = self._tgids.get(tid)
        if tgid is None:
            from regmap.procmaps import status      # (procmaps imports typing: not at start-up)
            found = status(tid).get("Tgid")
            if found is None:       # gone: its own (as a group's leader), and not kept
                return tid
            tgid = self._tgids[tid] = int(found)
        return tgid

    def execed(self, tid: int) -> None:
        """`tid` exec'd: it is its group's leader now, and its group's only thread."""
        self._tgids[tid] = tid
        for other in [t for t, group in self._tgids.items() if group == tid and t != tid]:
            del self._tgids[other]

    def exited(self, tid: int) -> None:
        self._tgids.pop(tid, None)
