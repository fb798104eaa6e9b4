"""Every other thread of a traced process kept off its code while the tracer rewrites it.

The tracer patches a site while the faulting thread is stopped; the process's other threads may
be running on other cores, and a core must never execute an instruction half written.  Every
thread is a tracee seized with PTRACE_SEIZE, so PTRACE_INTERRUPT asks each one to stop: the
kernel sets a pending trap (JOBCTL_TRAP_STOP, which keeps TIF_SIGPENDING set) and kicks the
thread's CPU.  From then on the thread cannot return to user mode without first stopping in
that trap (or in another ptrace-stop), and only the tracer resumes it.  So a thread is quiet as
soon as it is off its CPU, which ``/proc/PID/task/TID/syscall`` says without racing: it prints
``running`` for a thread on a CPU, else the thread's user stack pointer and rip (the kernel waits
until the thread is inactive to read them).  A thread interrupted in a blocking system call
shows the rip after its ``syscall``; a thread that was already in a ptrace-stop is not
interrupted at all.

Nothing is reaped here: the stops the interrupts cause (``PTRACE_EVENT_STOP`` with SIGTRAP) and
any other stop a thread reached meanwhile (a signal, an event, a group-stop) reach the
tracer's ``waitpid`` loop afterwards and are served as ever, so nothing a thread had pending
is lost; a thread interrupted in a system call is continued and the kernel restarts the call
(as after a debugger's stop: signal(7) lists the few calls that return EINTR instead).  A
thread stopped in its trap re-enters user mode through the kernel, which serializes its core
(SDM vol. 3, 9.1.3: the modified bytes are fetched anew).
"""
from __future__ import annotations

import errno
import os
import time

from regmap.trace import ptrace

PATIENCE = 0.25      # seconds a thread may stay on its CPU (in the kernel) before the patch is dropped


def stop_others(tgid: int, tid: int) -> list[int] | None:
    """Keep every thread of process `tgid` but `tid` (stopped) off the process's code: the rip
    of each (where it will resume), or None if one could not be stopped in time (then nothing
    may be written; the stops already asked for are served by the loop as usual)."""
    asked: set[int] = {tid}
    quiet: dict[int, int] = {}
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            threads = {int(name) for name in os.listdir(f"/proc/{tgid}/task")}
        except OSError:
            return None
        for thread in threads - asked:       # new ones too: a clone under way adds threads
            asked.add(thread)
            if _state(tgid, thread) == "t":   # a ptrace-stop, or LISTEN: only the tracer resumes it
                continue
            try:
                ptrace.ptrace(ptrace.PTRACE_INTERRUPT, thread)
            except OSError as error:
                if error.errno != errno.ESRCH or _state(tgid, thread) not in ("", "Z", "X"):
                    return None               # not a tracee of ours: it may run on
        waiting = [thread for thread in asked if thread != tid and thread not in quiet]
        for thread in waiting:
            rip = _resumes_at(tgid, thread)
            if rip is None and _state(tgid, thread) in ("", "Z", "X"):
                rip = -1                      # exited: its report is the loop's
            if rip is not None:
                quiet[thread] = rip
        if all(thread in quiet for thread in waiting):
            try:
                if {int(name) for name in os.listdir(f"/proc/{tgid}/task")} <= asked:
                    return [rip for rip in quiet.values() if rip >= 0]
            except OSError:
                return None
            continue
        if time.monotonic() > deadline:
            return None
        os.sched_yield()


def inside(address: int, size: int, rips: list[int]) -> bool:
    """Whether a thread would resume strictly inside the `size` bytes at `address` (in the
    middle of the instruction being replaced, whose new bytes it would run from there)."""
    return any(address < rip < address + size for rip in rips)


def _resumes_at(tgid: int, thread: int) -> int | None:
    """The user rip of a thread off its CPU, -1 for a thread gone, None while it runs."""
    try:
        with open(f"/proc/{tgid}/task/{thread}/syscall") as file:
            fields = file.read().split()
    except FileNotFoundError:
        return -1
    except OSError as error:
        return -1 if error.errno == errno.ESRCH else None
    if not fields or fields[0] == "running":
        return None
    return int(fields[-1], 16)


def _state(tgid: int, thread: int) -> str:
    """The state letter of /proc/TGID/task/TID/stat ("" for a thread gone)."""
    try:
        with open(f"/proc/{tgid}/task/{thread}/stat") as file:
            return file.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return ""
