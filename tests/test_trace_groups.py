"""The tracer's one tid -> tgid table (regmap.trace.groups), on this process's own threads."""
from __future__ import annotations

import os
import threading

from regmap.trace.groups import ThreadGroups


def test_threads_map_to_their_process_and_the_table_follows_exit_and_exec():
    groups = ThreadGroups()
    tids, ready, done = [], threading.Event(), threading.Event()

    def thread():
        tids.append(threading.get_native_id())
        ready.set()
        done.wait()
    worker = threading.Thread(target=thread)
    worker.start()
    ready.wait()
    try:
        assert groups(tids[0]) == os.getpid() == groups(os.getpid())
        assert tids[0] != os.getpid()
        groups.execed(os.getpid())              # the other threads are gone without a report
        assert groups._tgids == {os.getpid(): os.getpid()}
        groups(tids[0])
        groups.exited(tids[0])
        assert tids[0] not in groups._tgids
    finally:
        done.set()
        worker.join()
