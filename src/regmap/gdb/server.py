"""The gdb session: regmap's tracer, stopped and resumed as gdb's remote packets say.

The tracer runs the program as ``regmap exec`` does; this object is its ``observer``.
Every stop the tracer would resume comes here first (`stopped`, `emulated`), and here it
is decided whether gdb hears of it:

- a signal the program gets is gdb's (unless ``QPassSignals`` lists it): the thread stays
  stopped and gdb says, with ``C``/``vCont;C``, whether it is delivered;
- a window fault is emulated silently, except when the thread was single-stepping (the
  emulated instruction is the whole step) or the access touched a watched window byte;
- a SIGTRAP at one of our int3s is a breakpoint (rip moved back onto it, ``swbreak``).

All-stop: when one thread stops for gdb, the others of the program are interrupted
(PTRACE_INTERRUPT) and kept until gdb resumes them.  Events that come in while they stop
wait in ``reports`` and are told one by one at the next resumptions, as gdbserver does.
Only the program's own process is gdb's; its children run under plain regmap, our
breakpoints taken out of their copy of memory at their first stop.
"""
from __future__ import annotations

import ctypes
import os
import select
import signal
from typing import NamedTuple

from regmap.gdb import commands, signals, target
from regmap.gdb.memory import Memory, Unreadable
from regmap.gdb.packets import INTERRUPT, PACKET_SIZE, Channel
from regmap.trace import ptrace
from regmap.trace.machine import TracedMachine

SIGTRAP, SIGINT = int(signal.SIGTRAP), int(signal.SIGINT)
KCMP_VM, SYS_KCMP = 1, 312           # kcmp(2): do two processes share one address space?
_libc = ctypes.CDLL(None, use_errno=True)


class Stop(NamedTuple):
    tid: int
    sig: int                 # Linux numbering
    reason: str = ""         # "swbreak:;", "watch:38;", ...


class Thread:
    __slots__ = ("tid", "held", "signal", "step", "action")

    def __init__(self, tid: int):
        self.tid = tid
        self.held = False    # stopped, and kept stopped by us
        self.signal = 0      # the signal it is stopped with (0: an event stop)
        self.step = False    # resumed by a single-step
        self.action: tuple[str, int] | None = None   # gdb's last vCont for it: kind, signal


class Session:
    """One gdb connection (``channel``) over one traced program (``tracer``, spawned)."""

    def __init__(self, tracer, channel: Channel, layout, avx512: bool):
        self.tracer = tracer
        self.channel = channel
        self.registers = target.registers(avx512)
        self.xml = target.description(avx512).encode()
        self.memory = Memory(layout)
        self.machine = TracedMachine()
        self.main = tracer.main
        self.threads: dict[int, Thread] = {}
        self.others: set[int] = set()          # tids of other processes: not gdb's
        self.running = True                    # until the first stop, at the exec
        self.started = False
        self.reports: list[Stop] = []
        self.queued: list = []                 # packets that came while the program ran
        self.breakpoints: dict[int, bytes] = {}          # address -> the byte under the int3
        self.watchpoints: dict[tuple[int, int], str] = {}   # (address, length) -> kind
        self.pass_signals: set[int] = set()
        self.interrupting: set[int] = set()
        self.ctrl_c = False
        self.general = self.main
        self.last_reply = "W00"
        self.finished = False
        self.channel_limit = (PACKET_SIZE - 16) // 2     # bytes an 'm' reply can carry
        self.memory.attach(self.main)
        self._watch_trace = tracer.sites.trace
        tracer.observer = self

    # -- the tracer's questions ----------------------------------------------------------------
    def _thread(self, tid: int) -> Thread | None:
        thread = self.threads.get(tid)
        if thread is not None or tid in self.others or self.finished:
            return thread
        if tid == self.main or self.tracer.groups(tid) == self.main:
            thread = self.threads[tid] = Thread(tid)
            return thread
        self.others.add(tid)
        self._clean_child(tid)
        return None

    def stopped(self, tid: int, sig: int) -> bool:
        """The tracer would resume ``tid`` with ``sig``: True if we keep it stopped instead."""
        thread = self._thread(tid)
        if thread is None:
            return False
        if not self.started:
            if tid != self.main or not self.tracer.exec_seen:
                return False
            self.started = True                # the program's first instruction
            return self._hold(thread, 0, Stop(tid, SIGTRAP))
        if sig == 0:                           # an event: a new thread, a clone, our interrupt
            if tid in self.interrupting:
                self.interrupting.discard(tid)
                if self.running and self.ctrl_c:
                    self.ctrl_c = False
                    return self._hold(thread, 0, Stop(tid, SIGINT))
            if self.running and thread.action is not None:
                return self._let_go(thread)
            # not resumed by gdb: a thread born while gdb steps another over a breakpoint
            # (taken out meanwhile) would run through it unseen
            return self._hold(thread, 0, None)
        if sig == SIGTRAP:
            return self._hold(thread, sig, self._trap(thread))
        if self.running and sig in self.pass_signals:
            return self._let_go(thread, sig)
        return self._hold(thread, sig, Stop(tid, sig))

    def emulated(self, tid: int, step) -> bool:
        """``tid`` did a window instruction: True if that stops it for gdb."""
        thread = self.threads.get(tid)
        if thread is None:
            return False
        reason = self._watched(step) if self.watchpoints else ""
        if thread.step or reason:
            return self._hold(thread, 0, Stop(tid, SIGTRAP, reason))
        if not self.running:
            return self._hold(thread, 0, None)
        return False

    def execed(self, tid: int) -> None:
        """A new program image in ``tid``'s process: our int3s went with the old one."""
        if tid == self.main or self.tracer.groups(tid) == self.main:
            self.breakpoints.clear()
            self.memory.attach(self.main)
            for stale in [t for t in self.threads if t != self.main]:
                del self.threads[stale]

    def _hold(self, thread: Thread, sig: int, stop: Stop | None) -> bool:
        thread.held = True
        thread.signal = sig
        if stop is not None:
            self.reports.append(stop)
            self.running = False
        return True

    def _let_go(self, thread: Thread, sig: int = 0) -> bool:
        if not thread.step:
            return False                      # the tracer continues it
        ptrace.ptrace(ptrace.PTRACE_SINGLESTEP, thread.tid, 0, sig)
        return True

    def _trap(self, thread: Thread) -> Stop:
        info = ptrace.SigInfo()
        ptrace.ptrace(ptrace.PTRACE_GETSIGINFO, thread.tid, 0, ctypes.addressof(info))
        machine = self._load(thread.tid)
        rip = machine.regs.rip
        if info.si_code == ptrace.SI_KERNEL and rip - 1 in self.breakpoints:
            machine.regs.rip = rip - 1             # onto the breakpoint, as gdb expects
            machine.regs_dirty = True
            machine.store()
            return Stop(thread.tid, SIGTRAP, "swbreak:;")
        return Stop(thread.tid, SIGTRAP)           # a step's trap, or the program's own

    def _watched(self, step) -> str:
        for access in getattr(step, "accesses", None) or ():
            for (address, length), kind in self.watchpoints.items():
                if access.address < address + length and address < access.address + access.size:
                    if kind == "watch" and not access.write or kind == "rwatch" and access.write:
                        continue
                    return f"{kind}:{address:x};"
        return ""

    def _clean_child(self, tid: int) -> None:
        """A child process's first stop: take our int3s out of its copy of memory (not out of
        a vfork child's, which shares the parent's)."""
        if not self.breakpoints:
            return
        if _libc.syscall(SYS_KCMP, ctypes.c_long(tid), ctypes.c_long(self.main), KCMP_VM, 0, 0) == 0:
            return
        child = Memory(None)
        child.attach(tid)
        for address, byte in self.breakpoints.items():
            try:
                child.write(None, address, byte)
            except Unreadable:
                pass
        child.close()

    # -- running -------------------------------------------------------------------------------
    def serve(self) -> None:
        """Run the program to its first instruction, then serve gdb until the program ends,
        gdb kills or detaches it, or gdb goes away (then the program is killed)."""
        try:
            self._serve()
        finally:                               # what is left is plain regmap's
            self.tracer.observer = None
            self.tracer.sites.trace = self._watch_trace
            self.memory.close()

    def _serve(self) -> None:
        self._wait()
        if self.channel.closed:
            self._kill()
            return
        self.last_reply = self._report()
        while not self.finished:
            packet = self._next_packet()
            if packet is None:                  # gdb has gone
                self._kill()
                return
            if packet is INTERRUPT:
                continue                        # the program is stopped already
            reply = self.handle(packet)
            if reply is not None:
                self.channel.send(reply)

    def _next_packet(self):
        while not self.queued:
            if self.channel.closed:
                return None
            select.select([self.channel], [], [])
            self.queued += self.channel.receive()
        return self.queued.pop(0)

    def _wait(self) -> None:
        """Serve the tracer until a stop for gdb (then stop every thread) or the end."""
        if INTERRUPT in self.queued:           # a ^C right behind the resumption
            self.queued = [item for item in self.queued if item is not INTERRUPT]
            self._interrupt()
        # SIGCHLD wakes the select below through a pipe (signal.set_wakeup_fd); off the main
        # thread, where Python allows neither, the select's timeout is the wake-up
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            previous = signal.signal(signal.SIGCHLD, lambda *_: None)
            previous_fd = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        except ValueError:
            previous, previous_fd = None, None
        try:
            while not self.reports and not self.finished:
                if self._drain(os.WNOHANG):
                    continue
                if self.threads and all(thread.held for thread in self.threads.values()):
                    break                   # what gdb resumed has exited: nothing will stop

                ready, _, _ = select.select([self.channel, wake_read], [], [],
                                            1.0 if previous_fd is not None else 0.01)
                if wake_read in ready:
                    while os.read(wake_read, 512) == 512:
                        pass
                if self.channel in ready:
                    for item in self.channel.receive():
                        if item is INTERRUPT:
                            self._interrupt()
                        else:
                            self.queued.append(item)
                    if self.channel.closed:
                        return
        finally:
            if previous_fd is not None:
                signal.set_wakeup_fd(previous_fd)
                signal.signal(signal.SIGCHLD, previous)
            os.close(wake_read)
            os.close(wake_write)
        self.running = False
        self.ctrl_c = False              # answered by whichever stop came first
        self._stop_all()

    def _drain(self, flags: int) -> bool:
        """Serve what waitpid has; whether there was anything."""
        served = False
        while True:
            try:
                tid, status = os.waitpid(-1, ptrace.WALL | flags)
            except ChildProcessError:
                self.finished = True
                return served
            if tid == 0:
                return served
            served = True
            self._event(tid, status)
            if not self.tracer._live:          # every tracee gone (the caller's children
                self.finished = True           # are not ours to wait for)
                return served
            if flags == 0:
                return served

    def _event(self, tid: int, status: int) -> None:
        if status >> 16 == ptrace.PTRACE_EVENT_CLONE and status & 0xFF == 0x7F:
            self._born(tid)
        self.tracer.event(tid, status)
        if status & 0xFF == 0x7F:
            return
        self.threads.pop(tid, None)
        self.interrupting.discard(tid)
        if tid == self.main:
            self.finished = True

    def _born(self, parent: int) -> None:
        """``parent`` cloned a thread: it runs only if gdb let its parent run on (a continue),
        as gdbserver does.  Its first stop may come before or after this one of its parent."""
        creator = self.threads.get(parent)
        try:
            tid = ptrace.geteventmsg(parent)
        except OSError:
            return
        if creator is None or tid in self.others:
            return
        thread = self.threads.get(tid)
        if thread is None:
            if self.tracer.groups(tid) != self.main:
                return                         # a process of its own: left to _thread
            thread = self.threads[tid] = Thread(tid)
        runs = self.running and creator.action is not None and creator.action[0] == "c"
        thread.action = ("c", 0) if runs else None
        if runs and thread.held and thread.tid not in (stop.tid for stop in self.reports):
            thread.held = False                # stopped first, held until its parent said
            try:
                ptrace.cont(tid, 0)
            except OSError:
                pass

    def _interrupt(self) -> None:
        self.ctrl_c = True
        for thread in self.threads.values():
            if not thread.held:
                self._interrupt_one(thread)
                return

    def _interrupt_one(self, thread: Thread) -> None:
        try:
            ptrace.ptrace(ptrace.PTRACE_INTERRUPT, thread.tid)
            self.interrupting.add(thread.tid)
        except OSError:
            pass

    def _stop_all(self) -> None:
        for thread in self.threads.values():
            if not thread.held and thread.tid not in self.interrupting:
                self._interrupt_one(thread)
        while any(not t.held for t in self.threads.values()) and not self.finished:
            for thread in [t for t in self.threads.values() if not t.held]:
                if _zombie(thread.tid):
                    self._bury(thread.tid)
            # polled: a thread group's leader that exits before the others (pthread_exit in
            # main) becomes a zombie, and waitpid says nothing of it until the last one goes
            if not self._drain(os.WNOHANG):
                select.select([], [], [], 0.005)

    def _bury(self, tid: int) -> None:
        """``tid`` is dead, its exit not reported yet: no thread of gdb's any more."""
        self.threads.pop(tid, None)
        self.interrupting.discard(tid)
        if tid == self.memory.pid and self.threads:
            self.memory.attach(next(iter(self.threads)))     # a zombie has no memory

    def _report(self, left: frozenset[int] = frozenset()) -> str:
        """The stop reply for gdb: the first report of a thread gdb resumed (not one of
        ``left``), or how the program ended."""
        if self.finished:
            return self._exit_reply()
        for index, stop in enumerate(self.reports):
            if stop.tid not in left:
                del self.reports[index]
                break
        else:
            return "N"                         # no thread resumed is left (gdb's no-resumed)
        self.general = stop.tid
        return f"T{signals.to_gdb(stop.sig):02x}thread:{stop.tid:x};{stop.reason}"

    def _exit_reply(self) -> str:
        status = self.tracer.main_status or 0
        self.finished = True
        if os.WIFSIGNALED(status):
            return f"X{signals.to_gdb(os.WTERMSIG(status)):02x}"
        return f"W{os.WEXITSTATUS(status) & 0xFF:02x}"

    def resume(self, actions: list[tuple[str, int, int]]) -> str:
        """vCont: ``actions`` (kind "c"/"s", Linux signal, tid or -1), the first match wins."""
        for thread in self.threads.values():
            thread.action = next(((kind, sig) for kind, sig, tid in actions
                                  if tid in (-1, thread.tid)), None)
        # gdb hears only of threads it resumed: the others' news waits for their resumption
        left = frozenset(tid for tid, thread in self.threads.items() if thread.action is None)
        self.reports = [stop for stop in self.reports if stop.tid in self.threads
                        and (stop.tid in left or not self._stale(stop))]
        if any(stop.tid not in left for stop in self.reports):
            return self._report(left)          # news from the last stop: told first
        waiting, self.reports = self.reports, []      # all of threads left stopped
        self.running = True
        for thread in list(self.threads.values()):
            if thread.action is None or not thread.held:
                continue
            kind, sig = thread.action
            thread.step = kind == "s"
            thread.held = False
            request = ptrace.PTRACE_SINGLESTEP if thread.step else ptrace.PTRACE_CONT
            try:                               # a signal only where one is being delivered
                ptrace.ptrace(request, thread.tid, 0, sig if thread.signal else 0)
            except OSError:
                pass
        self._wait()
        self.reports[:0] = waiting
        for thread in self.threads.values():
            thread.step = False
        return self._report(left)

    def _stale(self, stop: Stop) -> bool:
        """A breakpoint hit not told yet whose breakpoint gdb has removed since: the thread
        (rip already back on it) runs the original instruction as if it never trapped."""
        if not stop.reason.startswith("swbreak"):
            return False
        return self._load(stop.tid).regs.rip not in self.breakpoints

    def _kill(self) -> None:
        try:
            os.kill(self.main, signal.SIGKILL)
        except OSError:
            pass
        self.detach()

    def detach(self) -> None:
        """Give the program back to plain regmap: breakpoints out, every thread resumed."""
        for address, byte in list(self.breakpoints.items()):
            try:
                self.memory.write(None, address, byte)
            except Unreadable:
                pass
        self.breakpoints.clear()
        self.watchpoints.clear()
        self.tracer.sites.trace = self._watch_trace
        self.tracer.observer = None
        for thread in self.threads.values():
            if thread.held:
                try:
                    ptrace.cont(thread.tid, thread.signal if thread.signal != SIGTRAP else 0)
                except OSError:
                    pass
        self.memory.close()
        self.finished = True

    # -- packets -------------------------------------------------------------------------------
    def handle(self, packet: bytes) -> str | None:
        try:
            return commands.handle(self, packet)
        except (ValueError, IndexError, KeyError, UnicodeDecodeError, OverflowError):
            return "E16"                       # malformed: EINVAL, and the stub goes on
        except Unreadable:
            return "E0e"                       # EFAULT
        except OSError as error:
            return f"E{(error.errno or 5) & 0xFF:02x}"
        except Exception as error:             # a bug here must not end gdb's session
            if self.channel.log:
                self.channel.log(f"{packet[:40]!r}: {type(error).__name__}: {error}")
            return "E01"

    def _load(self, tid: int) -> TracedMachine:
        machine = self.machine
        machine.load(tid)
        return machine

    def thread_for_registers(self) -> int:
        if self.general in self.threads:
            return self.general
        return self.main if self.main in self.threads or not self.threads else next(iter(self.threads))


def _zombie(tid: int) -> bool:
    try:
        with open(f"/proc/{tid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return True                              # gone altogether
