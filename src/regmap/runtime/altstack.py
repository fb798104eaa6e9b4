"""Alternate signal stacks: the handler runs Python, which needs far more than SIGSTKSZ.

A thread that faults with no alternate stack gets one of regmap's from the
moment the handler returns (`give_altstack`, through the frame's uc_stack);
the thread that maps gets one at once if its own is missing or too small
(`ensure_altstack`), and its old one back at unmap (`restore_altstack`).
Regions of exited threads are reused.
"""
from __future__ import annotations

import os
import threading

from regmap.runtime import _sys

# Alternate signal stacks regmap gives threads: the handler runs Python, which needs far more
# than SIGSTKSZ.  Reserved, not committed: only the pages the handler touches cost memory.
ALTSTACK_SIZE = 512 * 1024
ALTSTACK_GUARD = 64 * 1024
ALTSTACK_MIN = 256 * 1024       # a smaller alternate stack is replaced where regmap can

ALTSTACKS: dict[int, int] = {}   # native thread id -> base of the region regmap gave it


def _new_altstack_region() -> int:
    """A region from a thread that has exited, or a fresh one.

    Threads at their first fault look for one at the same time, and the
    existence check lets the GIL go: a region is claimed by taking it out of
    ALTSTACKS (one atomic pop), never by deleting an entry another thread may
    have claimed since.
    """
    if len(ALTSTACKS) >= 16:
        for tid in list(ALTSTACKS):
            if not os.path.exists(f"/proc/self/task/{tid}"):
                base = ALTSTACKS.pop(tid, None)
                if base is not None:
                    return base
    return _sys.map_stack(ALTSTACK_SIZE, ALTSTACK_GUARD)


def give_altstack(frame) -> None:
    """Give the interrupted thread (which has no alternate signal stack) one of regmap's.

    sigreturn re-installs the alternate stack recorded in the frame's
    uc_stack, so that is where it is set: the thread has it from the moment
    this handler returns.
    """
    try:
        tid = _sys.gettid()
        base = ALTSTACKS.get(tid)   # a region this very thread id had before: free now
        if base is None:
            base = _new_altstack_region()
        frame.ss_sp = base + ALTSTACK_GUARD
        frame.ss_size = ALTSTACK_SIZE
        frame.ss_flags = 0
        ALTSTACKS[tid] = base
    except OSError:
        pass  # the handler still runs, on the thread's own stack


def ensure_altstack(state) -> None:
    """At map time: make sure the calling thread's alternate stack can run the handler."""
    current = _sys.get_altstack()
    if current.flags & _sys.SS_ONSTACK:
        return
    if not current.flags & _sys.SS_DISABLE and current.size >= ALTSTACK_MIN:
        return
    tid = _sys.gettid()
    base = ALTSTACKS.get(tid)
    if base is None:
        base = _new_altstack_region()
    old = _sys.set_altstack(base + ALTSTACK_GUARD, ALTSTACK_SIZE)
    ALTSTACKS[tid] = base
    state.altstack = (threading.get_ident(), old, base)


def restore_altstack(state) -> None:
    """At unmap time, on the thread that mapped: put its previous alternate stack back."""
    if state.altstack is None:
        return
    ident, old, base = state.altstack
    if ident != threading.get_ident():
        return  # another thread's alternate stack cannot be changed from here; ours stays
    current = _sys.get_altstack()
    if current.sp == base + ALTSTACK_GUARD and not current.flags & _sys.SS_ONSTACK:
        _sys.set_altstack(old.sp, old.size, old.flags & _sys.SS_DISABLE)
