"""What ``--trace``, ``--stats`` and ``--json`` print, and regmap's own run-time messages.

Everything goes to one text stream (stderr by default), one line per event;
with ``json=True`` every line is one JSON object with an ``"event"`` key.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter, namedtuple

from regmap.accesses import access_record, format_access

# deaths a shell does not report (bash says nothing for ^C, nor for a pipe's reader gone)
SILENT_DEATHS = frozenset({signal.SIGINT, signal.SIGPIPE})

# si_code of a signal sent by a process (kill, sigqueue, tgkill) and of the other senders
SENT_BY_PROCESS = frozenset({0, -1, -6})
# the signals a faulting instruction raises: their "killed by" line says where and why
FAULTS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL})
SIGNAL_SOURCES = {-2: "a POSIX timer", -3: "a message queue", -4: "asynchronous I/O",
                  -5: "queued SIGIO"}


TYPE_CHECKING = False
if TYPE_CHECKING:          # the fields' types, for type checkers
    from typing import NamedTuple

    class _ProgramExit(NamedTuple):
        code: int | None
        signal: int | None = None
        core_dumped: bool = False
else:                      # the same tuple, without importing typing (~5 ms of start-up)
    _ProgramExit = namedtuple("ProgramExit", ("code", "signal", "core_dumped"),
                              defaults=(None, False))


class ProgramExit(_ProgramExit):
    """How the main program ended: an exit ``code``, or the ``signal`` that killed it."""
    __slots__ = ()

    @classmethod
    def from_wait_status(cls, status: int) -> ProgramExit:
        if os.WIFSIGNALED(status):
            return cls(None, os.WTERMSIG(status), os.WCOREDUMP(status))
        return cls(os.WEXITSTATUS(status))

    @property
    def status(self) -> int:
        """The status a shell gives it: the exit code, or 128 + the signal."""
        return self.code if self.signal is None else 128 + self.signal


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        if signal.SIGRTMIN <= number <= signal.SIGRTMAX:
            return f"SIGRTMIN+{number - signal.SIGRTMIN}"
        return f"signal {number}"


def signal_source(code: int, pid: int) -> str:
    """Who sent a signal, from its siginfo's ``si_code`` (and ``si_pid``)."""
    if code in SENT_BY_PROCESS:
        return f"sent by pid {pid}"
    return SIGNAL_SOURCES.get(code, "from the kernel" if code > 0 else f"si_code {code}")


def _json_line(record: dict) -> str:
    import json           # only a --json run pays for importing it
    return json.dumps(record, separators=(",", ":"))


class Reporter:
    def __init__(self, stream=None, *, trace: bool = False, stats: bool = False, json: bool = False,
                 quiet: bool = False):
        self.stream = stream if stream is not None else sys.stderr
        self.trace = trace
        self.stats = stats
        self.json = json
        self.quiet = quiet          # no "killed by" line
        self.faults = 0
        self.delivered = 0
        self.tracer_ns = 0
        self.started = time.perf_counter()
        self.mnemonics: Counter = Counter()
        self.sites: Counter = Counter()
        self.site_text: dict[int, str] = {}
        self.site_mnemonic: dict[int, str] = {}
        self.fast = 0          # of `faults`, those sent to a trampoline (regmap.trace.known)
        self.translations: list[tuple[int, object]] = []   # (tid, Translation) of each rewrite
        self.symbols = None         # a regmap.trace.symbols.Symbols, made at the first use
        # the last fault passed on: (signal, rip, instruction, what it was, where in a file)
        self.last_fault: tuple | None = None

    def where(self, tid: int, address: int) -> str:
        """``0x55d0c3a1d13d main+0x14 (list.c:7)``: an address and, if it lies in an ELF file
        of thread ``tid``'s process, its symbol and source line."""
        name = self.symbols(tid, address) if self.symbols is not None else self._symbols()(tid, address)
        return f"{address:#x} {name}" if name else f"{address:#x}"

    def _symbols(self):
        from regmap.trace.symbols import Symbols
        self.symbols = Symbols()
        return self.symbols

    def _keep_fault(self, tid: int, signo: int, rip: int, instruction: str, reason: str) -> None:
        """Where a fault passed on happened, found now: if it kills the program, its maps are
        gone when the "killed by" line is written."""
        symbols = self.symbols or self._symbols()
        self.last_fault = (signo, rip, instruction, reason, symbols.locate(tid, rip))

    # -- output ------------------------------------------------------------------------------
    def _emit(self, record: dict, text: str) -> None:
        line = _json_line(record) if self.json else text
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):     # a closed pipe, a hung-up terminal: nothing to say to
            pass

    def message(self, text: str, **record) -> None:
        """One of regmap's own messages (always shown)."""
        record.setdefault("event", "message")
        record["message"] = text
        self._emit(record, f"regmap: {text}")

    # -- events ------------------------------------------------------------------------------
    def emulated(self, tid: int, step, elapsed_ns: int) -> None:
        self.faults += 1
        self.tracer_ns += elapsed_ns
        if self.stats:
            mnemonic = getattr(step, "mnemonic", "?")
            self.mnemonics[mnemonic] += 1
            address = step.address
            self.sites[address] += 1
            if address not in self.site_text:
                self.site_text[address] = step.disassembly
                self.site_mnemonic[address] = mnemonic
        if self.trace:
            self._trace_step(tid, step)

    def served(self, rip: int, elapsed_ns: int) -> None:
        """A fault at `rip`, a site emulated before, sent to its trampoline (never traced: with
        a trace every fault is emulated)."""
        self.faults += 1
        self.fast += 1
        self.tracer_ns += elapsed_ns
        if self.stats:
            self.mnemonics[self.site_mnemonic.get(rip, "?")] += 1
            self.sites[rip] += 1

    def _trace_step(self, tid: int, step) -> None:
        accesses = getattr(step, "accesses", None) or []
        if not accesses:
            self._emit({"event": "step", "tid": tid, "rip": step.address,
                        "instruction": step.disassembly},
                       f"regmap: [{tid}] {self.where(tid, step.address)}  {step.disassembly}")
        for access in accesses:       # the access's own form: regmap.accesses
            self._emit(
                {"event": "access", "tid": tid, "rip": step.address,
                 "instruction": step.disassembly, "mnemonic": getattr(step, "mnemonic", None),
                 **access_record(access)},
                f"regmap: [{tid}] {self.where(tid, step.address)}  {step.disassembly}  "
                f"{format_access(access)}")

    def translated(self, tid: int, translation) -> None:
        """A site rewritten into its register form (shown with ``--trace``, listed by ``--stats``)."""
        self.translations.append((tid, translation))
        if self.trace:
            t = translation
            self._emit({"event": "translate", "tid": tid, "rip": t.address,
                        "instruction": t.old_text, "translation": t.new_text, "kind": t.kind,
                        "old_bytes": t.old.hex(), "new_bytes": t.new.hex()},
                       f"regmap: [{tid}] {t.address:#x}  {t.old_text}  translated to {t.new_text}")

    def delivered_signal(self, tid: int, signo: int, rip: int, reason: str,
                         instruction: str = "") -> None:
        """A signal regmap passed on to the program unchanged (only shown with ``--trace``);
        a fault's ``instruction`` and ``reason`` are kept for the "killed by" line."""
        self.delivered += 1
        if rip and signo in FAULTS:
            self._keep_fault(tid, signo, rip, instruction, reason)
        if self.trace:
            name = signal_name(signo)
            self._emit({"event": "signal", "tid": tid, "rip": rip, "signal": name, "reason": reason},
                       f"regmap: [{tid}] {self.where(tid, rip)}  {name} delivered ({reason})")

    def unsupported(self, tid: int, error, signo: int) -> None:
        self.delivered += 1
        self._keep_fault(tid, signo, error.address, error.disassembly,
                         f"a window access in a form regmap does not support ({error.reason})")
        code = error.code.hex(" ")
        self._emit(
            {"event": "unsupported", "tid": tid, "rip": error.address, "bytes": error.code.hex(),
             "instruction": error.disassembly, "reason": error.reason, "signal": signal_name(signo)},
            f"regmap: unsupported instruction at {error.address:#x} in thread {tid}: "
            f"{code}  {error.disassembly} ({error.reason}); {signal_name(signo)} delivered")

    def internal_error(self, tid: int, rip: int, error: BaseException, signo: int) -> None:
        self.delivered += 1
        self._emit({"event": "internal-error", "tid": tid, "rip": rip,
                    "error": f"{type(error).__name__}: {error}", "signal": signal_name(signo)},
                   f"regmap: internal error emulating the instruction at {rip:#x} in thread {tid}: "
                   f"{type(error).__name__}: {error}; {signal_name(signo)} delivered")

    def exited(self, program: str, status: int) -> ProgramExit:
        """Report how the main program ended (``status``: its wait status).

        A death by signal gets one line, as a shell would print it: none for the deaths a
        shell keeps quiet about, nor with ``quiet``.  With ``json`` the exit record is
        always written: it is part of the stream asked for."""
        end = ProgramExit.from_wait_status(status)
        if end.signal is None:
            if self.json:
                self._emit({"event": "exit", "program": program, "code": end.code,
                            "status": end.status}, "")
            return end
        name = signal_name(end.signal)
        if self.json or not (self.quiet or end.signal in SILENT_DEATHS):
            record = {"event": "exit", "program": program, "signal": name,
                      "core_dumped": end.core_dumped, "status": end.status}
            fault = self._fault(end.signal)
            why = ""
            if fault is not None:
                record["fault"] = fault
                at = f"{fault['rip']:#x} {fault['symbol']}" if fault["symbol"] else f"{fault['rip']:#x}"
                why = (f": {fault['instruction']} at {at}: {fault['reason']}" if fault["instruction"]
                       else f" at {at}: {fault['reason']}")
            self._emit(record, f"regmap: {program} killed by {name}"
                               f"{' (core dumped)' if end.core_dumped else ''}{why}")
        return end

    def _fault(self, signo: int) -> dict | None:
        """The last fault passed on, if it is the signal the program died of: its `rip`,
        `symbol` (or ""), `instruction` (a window access's, else "") and `reason`."""
        if self.last_fault is None or self.last_fault[0] != signo:
            return None
        _signo, rip, instruction, reason, place = self.last_fault
        symbol = self.symbols.name(place) if self.symbols is not None else ""
        return {"rip": rip, "symbol": symbol, "instruction": instruction, "reason": reason}

    def summary(self) -> None:
        if not self.stats:
            return
        wall = time.perf_counter() - self.started
        each_us = self.tracer_ns / self.faults / 1000 if self.faults else 0.0
        sites = self.sites.most_common()
        if self.json:
            self._emit({"event": "stats", "faults": self.faults, "fast_faults": self.fast,
                        "delivered": self.delivered,
                        "tracer_seconds": self.tracer_ns / 1e9, "per_fault_us": each_us,
                        "wall_seconds": wall, "mnemonics": dict(self.mnemonics.most_common()),
                        "sites": [{"rip": rip, "instruction": self.site_text[rip], "count": count}
                                  for rip, count in sites],
                        "translated": [{"tid": tid, "rip": t.address, "instruction": t.old_text,
                                        "translation": t.new_text, "kind": t.kind}
                                       for tid, t in self.translations]}, "")
            return
        plural = "" if self.faults == 1 else "s"
        self._emit({}, f"regmap: stats: {self.faults} fault{plural} emulated, "
                       f"{each_us:.1f} us each in the tracer ({self.tracer_ns / 1e6:.1f} ms), "
                       f"{self.delivered} signal{'' if self.delivered == 1 else 's'} passed on, "
                       f"{wall:.3f} s wall")
        if self.fast:
            self._emit({}, f"regmap: stats: {self.fast} of them sent to the site's trampoline "
                           "(fast faults)")
        if self.mnemonics:
            self._emit({}, "regmap: stats:   count  mnemonic")
            for mnemonic, count in self.mnemonics.most_common():
                self._emit({}, f"regmap: stats: {count:7d}  {mnemonic}")
            self._emit({}, "regmap: stats:   count  site")
            for rip, count in sites[:20]:
                self._emit({}, f"regmap: stats: {count:7d}  {rip:#x}  {self.site_text[rip]}")
            if len(sites) > 20:
                self._emit({}, f"regmap: stats:          ({len(sites) - 20} more sites)")
        self._summary_translations()

    def _summary_translations(self) -> None:
        if not self.translations:
            return
        self._emit({}, f"regmap: stats: {len(self.translations)} site"
                       f"{'' if len(self.translations) == 1 else 's'} translated")
        for tid, t in self.translations:
            self._emit({}, f"regmap: stats:   [{tid}] {t.address:#x}  {t.old_text}  ->  {t.new_text}")
