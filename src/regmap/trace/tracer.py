"""The tracer: spawn a program under ptrace and serve its page-0 faults until every tracee is gone.

One thread, one ``waitpid(-1, __WALL)`` loop.  The program's threads and child
processes are attached automatically (PTRACE_O_TRACECLONE/FORK/VFORK) and killed
with regmap (PTRACE_O_EXITKILL).  What each stop means and what is done:

- signal-delivery-stop for SIGSEGV/SIGBUS raised by a page fault (si_code
  SEGV_MAPERR/ACCERR, BUS_*): emulate the instruction at rip; on success write
  the registers back and continue with the signal suppressed; otherwise
  continue with the signal, which the program then gets exactly as it would
  have without regmap.  A SIGSEGV sent by a process (kill, tgkill, sigqueue:
  si_code <= 0) or raised by a general-protection fault (SI_KERNEL) is passed on
  untouched, as is every other signal;
- PTRACE_EVENT_STOP with a stop signal: a group-stop; PTRACE_LISTEN keeps the
  thread stopped until SIGCONT without resuming it.  When the main program is
  stopped by the terminal (SIGTSTP, SIGTTIN, SIGTTOU) and regmap is the
  terminal's foreground job, regmap stops itself too, so the shell sees the
  job stop and ``fg`` continues both;
- PTRACE_EVENT_STOP with SIGTRAP (a new thread's or child's first stop, the
  end of a group-stop), fork/vfork/clone/exec events: continue;
- exits: the main program's wait status is kept for the end.
"""
from __future__ import annotations

import ctypes
import errno
import os
import signal
import struct
import time

from regmap.errors import (DivideError, InstructionFault, MemoryFault, NotWindowAccess,
                           UnsupportedInstruction, WindowHole)
from regmap.trace import ptrace
from regmap.trace.batch import FETCH_SIZE, FETCHED, FaultCalls, runner
from regmap.trace.groups import ThreadGroups
from regmap.trace.idflag import IdSetter
from regmap.trace.machine import TracedMachine
from regmap.trace.program import FAILURE, NOT_EXECUTABLE, NOT_FOUND, TraceError
from regmap.trace.report import Reporter, signal_source
from regmap.trace.sites import Sites
from regmap.places import ID     # not x86.flags: exec starts without the x86 layer

_raw_ptrace = ptrace.raw_ptrace
_GETSIGINFO, _GETREGS = ptrace.PTRACE_GETSIGINFO, ptrace.PTRACE_GETREGS
_SETREGS, _CONT = ptrace.PTRACE_SETREGS, ptrace.PTRACE_CONT
_now = time.perf_counter_ns

OPTIONS = (ptrace.PTRACE_O_TRACECLONE | ptrace.PTRACE_O_TRACEFORK | ptrace.PTRACE_O_TRACEVFORK
           | ptrace.PTRACE_O_TRACEEXEC | ptrace.PTRACE_O_EXITKILL)

# plain ints: a wait status's signal compares with them without the enum
SIGSEGV, SIGBUS, SIGFPE, SIGTRAP, SIGILL = (int(s) for s in (
    signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGTRAP, signal.SIGILL))
STOP_SIGNALS = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
TERMINAL_STOPS = frozenset({signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})

# regmap's own dispositions while a program runs: the terminal's signals reach the program
# directly (same process group); regmap ignores them, as system(3) does, and forwards the
# signals meant to end it.
IGNORED_WHILE_RUNNING = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN,
                         signal.SIGTTOU)
FORWARDED = (signal.SIGTERM, signal.SIGHUP)
# dispositions Python changes that a program must not inherit
RESET_IN_CHILD = (signal.SIGPIPE, signal.SIGXFSZ)


SPINS = 200          # WNOHANG polls before a blocking wait (about 1 us each)


class Tracer:
    """Runs one program; ``spawn`` then ``wait`` (which returns the main program's wait status)."""

    def __init__(self, emulator, reporter: Reporter):
        self.emulator = emulator
        self.reporter = reporter
        self.machine = TracedMachine()
        self.siginfo = ptrace.SigInfo()
        self._siginfo_address = ctypes.addressof(self.siginfo)
        self._trace = reporter.trace
        self._timed = reporter.trace or reporter.stats     # someone reads `reporter.emulated`
        self._threads: dict[int, FaultCalls] = {}
        # every tracee not yet reported gone: the loop ends when this is empty, not when the
        # calling process has no child left (a caller's own children are none of its business)
        self._live: set[int] = set()
        self._run = None             # `batch.runner()`, made at the first fault
        self._code_buffer = ctypes.create_string_buffer(FETCH_SIZE)   # the code at rip
        self.sites = Sites(emulator, reporter.trace, memoryview(self._code_buffer).cast("B"))
        self.main = 0
        self.main_status: int | None = None
        self.exec_seen = False
        self.forced_signal: dict[int, int] = {}   # pid -> signal regmap killed it to stand for
        self._error_pipe = -1
        self._saved_dispositions: dict[int, object] = {}
        self.program = ""
        self.patcher = None        # a regmap.trace.patch.Patcher when sites are translated
        self.known = None          # a regmap.trace.known.KnownSites: planned sites' trampolines
        self.groups = ThreadGroups()    # tid -> tgid, for these and the tracer's own records
        self.id_setter = IdSetter()  # a window instruction that changes ID (trace/idflag.py)
        # a debugger (regmap.gdb.server): told of each stop regmap would resume, it may keep
        # the thread stopped instead (`_go`)
        self.observer = None

    # -- spawning ------------------------------------------------------------------------------
    def spawn(self, path: str, argv: list[str], env: dict | None = None) -> int:
        """Fork, attach with PTRACE_SEIZE and the options, then let the child exec ``path``."""
        self.program = self.program or (argv[0] if argv else path)
        environment = os.environ if env is None else env
        go_read, go_write = os.pipe()
        error_read, error_write = os.pipe()      # close-on-exec: EOF means exec succeeded
        saved = {sig: signal.getsignal(sig) for sig in IGNORED_WHILE_RUNNING + FORWARDED}
        pid = os.fork()
        if pid == 0:                              # the child: wait to be seized, then exec
            code = 0
            try:
                os.close(go_write)
                os.close(error_read)
                for sig in RESET_IN_CHILD:
                    signal.signal(sig, signal.SIG_DFL)
                for sig, disposition in saved.items():
                    signal.signal(sig, signal.SIG_IGN if disposition == signal.SIG_IGN
                                  else signal.SIG_DFL)
                os.read(go_read, 1)
                os.execve(path, argv, environment)
            except OSError as error:
                code = error.errno or 0
            except BaseException:
                code = 0
            try:
                os.write(error_write, struct.pack("i", code))
            finally:
                os._exit(127)
        os.close(go_read)
        os.close(error_write)
        self._error_pipe = error_read
        try:
            ptrace.seize(pid, OPTIONS)
        except OSError as error:
            os.close(go_write)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(error_read)
            self._error_pipe = -1
            if error.errno == errno.EPERM:
                raise TraceError(
                    f"not allowed to trace {self.program}: ptrace: {os.strerror(error.errno)} "
                    "(is regmap itself being traced, or ptrace forbidden here? see "
                    "/proc/sys/kernel/yama/ptrace_scope; a container needs CAP_SYS_PTRACE "
                    "or a seccomp profile that allows ptrace)", FAILURE) from None
            raise TraceError(f"cannot trace {self.program}: ptrace: {os.strerror(error.errno)}",
                             FAILURE) from None
        self.main = pid
        self._live.add(pid)
        self._install_dispositions()
        os.write(go_write, b"x")
        os.close(go_write)
        return pid

    def _install_dispositions(self) -> None:
        def forward(signo, _frame):
            try:
                os.kill(self.main, signo)
            except OSError:
                pass
        try:
            for sig in IGNORED_WHILE_RUNNING:
                self._saved_dispositions[sig] = signal.signal(sig, signal.SIG_IGN)
            for sig in FORWARDED:
                self._saved_dispositions[sig] = signal.signal(sig, forward)
        except ValueError:       # not the main thread: leave dispositions alone
            pass

    def _restore_dispositions(self) -> None:
        for sig, disposition in self._saved_dispositions.items():
            try:
                signal.signal(sig, disposition)
            except (ValueError, TypeError):
                pass
        self._saved_dispositions.clear()

    # -- the loop --------------------------------------------------------------------------------
    def wait(self, debugger=None) -> int:
        """Serve every tracee until none is left; return the main program's wait status.
        ``debugger(tracer)`` (regmap.gdb), if given, serves the tracees first, for as long as
        its session lasts."""
        try:
            if debugger is not None:
                debugger(self)
            self._loop()
        finally:
            self._restore_dispositions()
            self.machine.memory.close()
            if self._error_pipe >= 0:
                os.close(self._error_pipe)
                self._error_pipe = -1
        status = self.main_status if self.main_status is not None else 0
        forced = self.forced_signal.get(self.main)
        if forced and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            status = forced                  # a wait status: killed by ``forced``, no core
        return status

    def _loop(self) -> None:
        waitpid = os.waitpid
        event = self.event
        poll = ptrace.WALL | os.WNOHANG
        spins = SPINS if len(os.sched_getaffinity(0)) > 1 else 0
        while self._live:            # a debugger's own loop may have seen every tracee go
            try:
                # A faulting program stops again within microseconds of being continued.
                # Blocking in waitpid puts this thread to sleep, and the stop then costs a
                # cross-CPU wake-up (about 40 us here, against 8 us when both share a CPU);
                # polling briefly first catches it awake.  With one CPU to run on, polling
                # would only take time from the program.
                for _ in range(spins):
                    tid, status = waitpid(-1, poll)
                    if tid:
                        break
                else:
                    tid, status = waitpid(-1, ptrace.WALL)
            except ChildProcessError:
                return
            event(tid, status)
            if not self._live:
                return

    def event(self, tid: int, status: int) -> None:
        """Serve what ``waitpid`` said of ``tid``."""
        if status & 0xFF == 0x7F:                     # a ptrace-stop
            sig = (status >> 8) & 0xFF
            event = status >> 16
            self._live.add(tid)
            if ptrace.PTRACE_EVENT_FORK <= event <= ptrace.PTRACE_EVENT_CLONE:
                self._track_new(tid)
            try:
                if event == 0:
                    if sig == SIGSEGV or sig == SIGBUS:
                        self._fault(tid, sig)
                    elif sig == SIGTRAP and self._punned(tid):
                        pass
                    elif not ((sig == SIGFPE or sig == SIGILL) and self._trampoline_fault(tid, sig)):
                        self._pass_on(tid, sig)        # any other signal, unchanged
                elif event == ptrace.PTRACE_EVENT_STOP:
                    self._event_stop(tid, sig)
                else:
                    if event == ptrace.PTRACE_EVENT_EXEC:
                        self._exec_event(tid)
                    if self.patcher is not None or self.known is not None:
                        self._address_space_event(tid, event)
                    self._go(tid, 0)
            except OSError as error:
                if error.errno != errno.ESRCH:          # ESRCH: killed meanwhile
                    raise
        else:                                          # exited or killed
            self._live.discard(tid)
            self._forget(tid)
            if self.patcher is not None:
                self.patcher.exited(tid)
            self.groups.exited(tid)
            if tid == self.main:
                self.main_status = status
                if not self.exec_seen:
                    self._exec_failed()

    def _go(self, tid: int, sig: int) -> None:
        """Resume ``tid`` with ``sig`` (0: none), unless the debugger keeps it stopped."""
        if self.observer is None or not self.observer.stopped(tid, sig):
            ptrace.cont(tid, sig)

    def _pass_on(self, tid: int, sig: int) -> None:
        """A signal that is no page fault: the program gets it unchanged."""
        rip, source = 0, ""
        if self._trace:                                    # where the thread was, who sent it
            ptrace.check(_raw_ptrace(_GETSIGINFO, tid, 0, self._siginfo_address), _GETSIGINFO, tid)
            source = signal_source(self.siginfo.si_code, self.siginfo.si_pid)
            self.machine.load(tid)
            rip = self.machine.regs.rip
        # reported first: the "killed by" line needs the maps of a process still alive
        self.reporter.delivered_signal(tid, sig, rip, source)
        self._go(tid, sig)

    def _event_stop(self, tid: int, sig: int) -> None:
        if sig in STOP_SIGNALS:
            if self.observer is not None and self.observer.stopped(tid, 0):
                return               # a debugger stopping every thread keeps it in its stop
            ptrace.listen(tid)
            if tid == self.main and sig in TERMINAL_STOPS and self._in_foreground():
                self._stop_self(sig)
        else:
            self._go(tid, 0)

    def _stop_self(self, sig: int) -> None:
        """Stop regmap with the program's stop signal, so the shell sees the job stop (and
        says why); ``fg`` then continues the whole process group, program included."""
        try:
            previous = signal.signal(sig, signal.SIG_DFL)
        except ValueError:                                # not the main thread
            os.kill(os.getpid(), signal.SIGSTOP)
            return
        try:
            os.kill(os.getpid(), sig)                     # stops here until SIGCONT
        finally:
            signal.signal(sig, previous)

    @staticmethod
    def _in_foreground() -> bool:
        for fd in (2, 0, 1):
            try:
                return os.tcgetpgrp(fd) == os.getpgrp()
            except OSError:
                continue
        return False

    def _exec_event(self, tid: int) -> None:
        # a new address space: what was kept for the old one goes (the exec'ing thread may
        # have been another thread of the process, now gone without an exit report)
        self._forget(tid)
        self.id_setter.forget(tid)          # after exec the thread is its process's leader
        if self.reporter.symbols is not None:
            self.reporter.symbols.forget()  # addresses name another program's symbols now
        try:
            former = ptrace.geteventmsg(tid)
        except OSError:
            former = tid
        self._forget(former)
        if former != tid:                   # its old tid is never reported gone
            self._live.discard(former)
        self.groups.execed(tid)
        if self.observer is not None:
            self.observer.execed(tid)
        if tid != self.main:
            return
        self.exec_seen = True
        if self._error_pipe >= 0:
            os.close(self._error_pipe)
            self._error_pipe = -1

    def _track_new(self, tid: int) -> None:
        """A fork, vfork or clone: the new tracee is live before its first stop is seen."""
        try:
            self._live.add(ptrace.geteventmsg(tid))
        except OSError:
            pass

    def _address_space_event(self, tid: int, event: int) -> None:
        """Keep the translation and fast-fault records with the address spaces they describe
        (the patcher's and the known sites' alike: forked, vforked, cloned, execed)."""
        keepers = [keeper for keeper in (self.patcher, self.known) if keeper is not None]
        if event == ptrace.PTRACE_EVENT_EXEC:
            for keeper in keepers:
                keeper.execed(tid)
            return
        name = {ptrace.PTRACE_EVENT_FORK: "forked", ptrace.PTRACE_EVENT_VFORK: "vforked",
                ptrace.PTRACE_EVENT_CLONE: "cloned"}.get(event)
        if name is None:
            return
        try:
            child = ptrace.geteventmsg(tid)
        except OSError:
            return
        for keeper in keepers:
            getattr(keeper, name)(tid, child)

    def _exec_failed(self) -> None:
        data = b""
        if self._error_pipe >= 0:
            try:
                data = os.read(self._error_pipe, 4)
            except OSError:
                pass
        if len(data) == 4:
            code = struct.unpack("i", data)[0]
            status = NOT_FOUND if code == errno.ENOENT else NOT_EXECUTABLE
            reason = os.strerror(code) if code else "exec failed"
            raise TraceError(f"cannot execute {self.program}: {reason}", status)

    # -- one fault ----------------------------------------------------------------------------
    def _fault(self, tid: int, sig: int) -> None:
        started = _now() if self._timed else 0
        calls = self._threads.get(tid) or self._thread(tid)
        enter = calls.enter
        done = self._run(*enter.arguments)          # GETSIGINFO, GETREGS, the code at rip
        if done < 2:
            raise enter.error(done, f"ptrace({_GETREGS if done else _GETSIGINFO:#x}, {tid})")
        self.machine.original = None
        if (self.patcher is not None or self.known is not None) \
                and self._trampoline_fault(tid, sig, loaded=True):
            return
        code = self.siginfo.si_code
        if code <= 0 or code >= ptrace.SI_KERNEL:
            # sent by a process, or a general-protection fault: never a window access
            self._deliver(tid, sig, "not a page fault", self.siginfo.si_addr if code > 0 else 0)
            return
        machine = self.machine
        machine.reset(tid)
        regs = machine.regs
        if regs.cs != ptrace.USER_CS_64:
            self._deliver(tid, sig, "not in 64-bit mode", regs.rip)
            return
        known = self.known
        if known is not None:
            target = known.target(tid, regs, self.sites.code, enter.results[FETCHED] if done == 3 else 0)
            if target:               # a planned site: its trampoline does the instruction
                rip, regs.rip = regs.rip, target
                done = self._run(*calls.leave.arguments)
                if done != 2:
                    raise calls.leave.error(done, f"ptrace({_CONT if done else _SETREGS:#x}, {tid})")
                if started:
                    self.reporter.served(rip, _now() - started)
                return
        flags_before = regs.eflags
        at = None if self.patcher is None else self.patcher.hot_address(tid, machine)
        try:
            step = self.sites.step(machine, enter.results[FETCHED] if done == 3 else 0)
        except WindowHole as error:
            self._deliver(tid, sig, error.hole, regs.rip, error.instruction)
            return
        except (NotWindowAccess, MemoryFault) as error:
            if self.patcher is not None and machine.original is None \
                    and self.patcher.rewritten(tid, regs.rip):
                # it faulted on the old bytes before they were rewritten (the other threads
                # run on while one is served): run the site again, as what it now is
                self._go(tid, 0)
                return
            reason = getattr(error, "reason", "not a window access") \
                if isinstance(error, NotWindowAccess) else str(error)
            self._deliver(tid, sig, reason, regs.rip)
            return
        except UnsupportedInstruction as error:
            self.reporter.unsupported(tid, error, sig)
            self._go(tid, sig)
            return
        except DivideError:
            self._divide_error(tid)
            return
        except InstructionFault as fault:
            self._instruction_fault(tid, fault.signo, fault.si_code, fault.si_addr, str(fault))
            return
        except Exception as error:      # a bug in regmap must not take the program with it
            self.reporter.internal_error(tid, regs.rip, error, sig)
            self._go(tid, sig)
            return
        if (regs.eflags ^ flags_before) & ID:       # SETREGS cannot set ID: the tracee does
            self.id_setter.resume_through(tid, self.groups(tid), regs, machine.memory)
        # (a site about to be planned keeps its thread stopped until its trampoline is placed)
        learning = known is not None and known.due(tid, step.address, step.code, regs)
        if self.patcher is None and self.observer is None and not machine.xstate.dirty \
                and not learning:
            done = self._run(*calls.leave.arguments)    # SETREGS (rip moved at least), CONT
            if done == 2:
                if started:
                    self.reporter.emulated(tid, step, _now() - started)
                return
            if done == 1:
                raise calls.leave.error(1, f"ptrace({_CONT:#x}, {tid})")
            refusal = calls.leave.error(0, f"ptrace({_SETREGS:#x}, {tid})")
        else:
            refusal = self._store(calls)
        if refusal is not None:
            if refusal.errno == errno.ESRCH:
                raise refusal
            # the kernel refused the new state (e.g. a bad segment selector): the CPU
            # would have faulted as well
            self._deliver(tid, sig, f"cannot set registers: {os.strerror(refusal.errno)}", regs.rip)
            return
        # the thread is stopped: a hot site may be rewritten now, before it runs on
        translation = self.patcher.fault(tid, step, self.observer is None, at) \
            if self.patcher is not None else None
        if learning and translation is None:
            known.learn(tid, step.address, step.code, regs)
        if self.observer is None or not self.observer.emulated(tid, step):
            ptrace.cont(tid, 0)
        if started:
            self.reporter.emulated(tid, step, _now() - started)
        if translation is not None:
            self.reporter.translated(tid, translation)

    def _punned(self, tid: int) -> bool:
        """A trap on the int3 a short site's jump puts on the instruction after it (a jump to
        that instruction, regmap.x86.stub): on in the instruction's copy, the trap gone."""
        if self.patcher is None or not self.patcher.trampolines.puns:
            return False
        ptrace.check(_raw_ptrace(_GETSIGINFO, tid, 0, self._siginfo_address), _GETSIGINFO, tid)
        if self.siginfo.si_code != ptrace.SI_KERNEL:
            return False
        self.machine.load(tid)
        regs = self.machine.regs
        boundary = regs.rip - 1
        moved = self.patcher.trampolines.punned(self.groups(tid), boundary)
        if moved is None:
            return False
        regs.rip = moved
        ptrace.setregs(tid, regs)
        self.patcher.trapped(tid, boundary)
        self._go(tid, 0)
        return True

    def _trampoline_fault(self, tid: int, sig: int, loaded: bool = False) -> bool:
        """A CPU exception inside a trampoline (trace/trampolines.py): delivered as the site's.
        `loaded`: the registers and siginfo have been read."""
        patcher = self.patcher if self.patcher is not None else self.known
        if patcher is None or patcher.trampolines is None or not patcher.trampolines.tables:
            return False
        if not loaded:
            ptrace.check(_raw_ptrace(_GETSIGINFO, tid, 0, self._siginfo_address), _GETSIGINFO, tid)
            self.machine.load(tid)
        entry = patcher.trampolines.fault(tid, self.groups(tid), self.machine.regs, self.siginfo,
                                          patcher.memory)
        if entry is None:
            return False
        original = patcher.trampolines.original(entry)
        if original is not None and (sig == SIGSEGV or sig == SIGBUS):
            # a stub's copy of its site's instruction: the fault is the site's, emulated there
            # from its own bytes (another window address) or delivered (trace/trampolines.py)
            self.machine.original = original
            return False
        self._deliver(tid, sig, "raised by a translated instruction", self.machine.regs.rip)
        return True

    def _store(self, calls) -> OSError | None:
        """Write the registers back (general ones always: a step moves rip at least); the
        error if the kernel refuses."""
        if self._run(*calls.setregs.arguments) != 1:
            return calls.setregs.error(0, f"ptrace({_SETREGS:#x}, {self.machine.tid})")
        try:
            self.machine.xstate.store()
        except OSError as error:
            return error
        return None

    def _thread(self, tid: int) -> FaultCalls:
        """Thread ``tid``'s calls, kept until it exits or execs (`_forget`)."""
        if self._run is None:
            self._run = runner()
        machine = self.machine
        calls = self._threads[tid] = FaultCalls(
            tid, self._siginfo_address, machine.regs_address, machine.memory.descriptor(tid),
            ctypes.addressof(self._code_buffer))
        return calls

    def _forget(self, tid: int) -> None:
        self._threads.pop(tid, None)
        self.machine.memory.forget(tid)

    def _deliver(self, tid: int, sig: int, reason: str, rip: int, instruction: str = "") -> None:
        # reported first: the "killed by" line needs the maps of a process still alive
        self.reporter.delivered_signal(tid, sig, rip, reason, instruction)
        self._go(tid, sig)

    def _divide_error(self, tid: int) -> None:
        """#DE: the program gets SIGFPE with si_code FPE_INTDIV and si_addr = the instruction's
        address, rip left on the instruction, as the kernel sends it for the CPU's #DE."""
        self._instruction_fault(tid, SIGFPE, ptrace.FPE_INTDIV, None, "divide error")

    def _instruction_fault(self, tid: int, sig: int, code: int, address: int | None, reason: str) -> None:
        """An exception of the instruction itself (#DE, or the native engine's #GP, #XM, #MF,
        #UD, #AC): signal ``sig`` with ``code`` and ``address`` (None: the instruction's),
        rip left on the instruction, as the kernel sends it."""
        rip = self.machine.regs.rip
        address = rip if address is None else address
        mask = 1 << (sig - 1)
        from regmap.procmaps import status      # (not at start-up: it imports typing)
        fields = status(tid)
        if (int(fields.get("SigBlk", "0"), 16) | int(fields.get("SigIgn", "0"), 16)) & mask:
            # the kernel would force SIGFPE (reset to default, unblock) and the program would
            # die of it; a traced SIGFPE cannot be forced, so regmap kills the process and
            # reports SIGFPE as the cause
            name = signal.Signals(sig).name
            self.reporter.message(
                f"thread {tid} faults at {rip:#x} ({reason}) with {name} blocked or ignored; "
                f"the CPU would kill the process with {name}, so regmap kills it",
                event="forced-signal", tid=tid, rip=rip, signal=name)
            self.forced_signal[self.groups(tid)] = sig
            ptrace.cont(tid, signal.SIGKILL)
            return
        info = self.siginfo
        for index in range(len(info._rest)):
            info._rest[index] = 0
        info.si_signo = sig
        info.si_errno = 0
        info.si_code = code
        info._pad = 0
        info.si_addr = address
        ptrace.setsiginfo(tid, info)
        self._deliver(tid, sig, reason, rip)
