"""Alternate stack regions: threads at their first fault claim the region of an exited thread
at the same time.

The existence check of the exited thread (a stat of /proc/self/task/TID) lets the GIL go, so two
threads can find the same exited thread.  Both used to delete its entry: the second died of a
KeyError inside the handler, reported as an internal error and forwarded as a genuine fault
(seen as a flaky crash of the eight-thread translation test).  Here the two threads are made to
check the same exited thread at the same moment.
"""
from __future__ import annotations

import os
import threading

import pytest

from regmap.runtime import handler

try:
    from regmap.runtime import altstack as stacks      # where the handler split puts them
except ImportError:
    stacks = handler

pytestmark = pytest.mark.skipif(handler.platform_problem() is not None,
                                reason="the in-process runtime needs Linux")

EXITED = [10**9 + n for n in range(16)]     # above any pid_max: no such thread
BASES = [0x10000 * (n + 1) for n in range(16)]


def test_two_threads_never_claim_one_exited_threads_region(monkeypatch):
    monkeypatch.setattr(stacks, "ALTSTACKS", dict(zip(EXITED, BASES)))
    monkeypatch.setattr(stacks._sys, "map_stack", lambda size, guard: pytest.fail("no region"))
    both_checking = threading.Barrier(2, timeout=10)
    real_exists = os.path.exists

    def exists(path):
        if path == f"/proc/self/task/{EXITED[0]}":
            both_checking.wait()    # the second thread looks before the first has claimed
        return real_exists(path)

    monkeypatch.setattr(stacks.os.path, "exists", exists)
    claimed, errors = [], []

    def claim():
        try:
            claimed.append(stacks._new_altstack_region())
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=claim) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(claimed) == BASES[:2]
    assert sorted(stacks.ALTSTACKS) == EXITED[2:]
