"""A fork while another thread is inside the native engine, or rewriting code, leaves the child
able to use both: the child has only the forking thread, so a lock another thread held at the
fork would otherwise stay held in it forever (the child's next native instruction, or its
unmap_registers(), would hang)."""
from __future__ import annotations

import os
import platform
import sys
import threading

import pytest

import regmap
from regmap.runtime import patch
from regmap.x86.native import engine

pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                                reason="the native engine and the runtime need Linux on x86-64")
ONE = 0x3FF0000000000000


def in_child_while_held(lock, work) -> int:
    """Fork while another thread holds ``lock``; the child's exit status after ``work()``
    (2 if it hangs for 10 s)."""
    held, release = threading.Event(), threading.Event()

    def holder():
        with lock:
            held.set()
            release.wait()

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait()
    try:
        pid = os.fork()
        if pid == 0:
            done = threading.Event()
            threading.Thread(target=lambda: (work(), done.set()), daemon=True).start()
            os._exit(0 if done.wait(10) else 2)
    finally:
        release.set()
        thread.join()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_the_child_runs_native_instructions_after_a_fork_inside_the_engine():
    regmap.emulate(bytes.fromhex("f2 0f 58 04 25 08 00 00 00"), {"rcx": ONE, "xmm0": ONE})   # addsd
    assert in_child_while_held(engine.LOCK, lambda: regmap.emulate(
        bytes.fromhex("f2 0f 58 04 25 08 00 00 00"), {"rcx": ONE, "xmm0": ONE})) == 0


def test_the_child_restores_its_sites_after_a_fork_inside_a_rewrite():
    assert in_child_while_held(patch._LOCK, patch.restore_all) == 0


def test_the_child_unmaps_after_a_fork_while_a_site_is_being_planned():
    from regmap.runtime import dispatch
    assert in_child_while_held(dispatch._LOCK, dispatch.forget) == 0


def test_a_child_forked_mid_rewrite_runs_the_site_as_it_was():
    """The fork comes between the int3 and the new bytes of a multi-threaded rewrite: in the child,
    nobody will finish it, so the site gets its old bytes back (the child's only thread spun on
    the int3 for ever before)."""
    if not patch.sync_core_available():
        pytest.skip("no membarrier SYNC_CORE: multi-threaded processes are not patched")
    import ctypes
    import mmap
    from regmap.x86.translate import Translation
    page = mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                     prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    old, new = bytes.fromhex("b8 01 00 00 00"), bytes.fromhex("b8 02 00 00 00")   # mov eax, 1 / 2
    page.write(old + b"\xc3")                                                      # ret
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    function = ctypes.CFUNCTYPE(ctypes.c_int)(address)
    planted, forked = threading.Event(), threading.Event()
    real_sync = patch._sync

    def paused_sync():
        real_sync()
        if not planted.is_set():       # the int3 is in: let the main thread fork now
            planted.set()
            forked.wait()

    patch._sync = paused_sync
    try:
        rewriter = threading.Thread(target=patch.apply, args=(Translation(address, old, new, "", ""),))
        rewriter.start()
        planted.wait()
        pid = os.fork()
        if pid == 0:
            done = threading.Event()
            result = []
            threading.Thread(target=lambda: (result.append(function()), done.set()), daemon=True).start()
            os._exit(0 if done.wait(10) and result == [1] and address not in patch.PATCHES else 2)
        forked.set()
        rewriter.join()
        _, status = os.waitpid(pid, 0)
    finally:
        patch._sync = real_sync
        patch.PATCHES.pop(address, None)
    assert os.waitstatus_to_exitcode(status) == 0
    assert function() == 2                 # the parent finished its rewrite
