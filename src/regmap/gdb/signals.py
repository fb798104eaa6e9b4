"""Linux signal numbers <-> the GDB remote protocol's own numbering (gdb's signals.def).

The protocol numbers signals as gdb's ``enum gdb_signal`` does, not as Linux does: they
agree up to SIGABRT and differ after (gdb's 10 is SIGBUS, Linux's is SIGUSR1).
"""
from __future__ import annotations

import signal

_PAIRS = {
    "SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGILL": 4, "SIGTRAP": 5, "SIGABRT": 6,
    "SIGFPE": 8, "SIGKILL": 9, "SIGBUS": 10, "SIGSEGV": 11, "SIGSYS": 12, "SIGPIPE": 13,
    "SIGALRM": 14, "SIGTERM": 15, "SIGURG": 16, "SIGSTOP": 17, "SIGTSTP": 18, "SIGCONT": 19,
    "SIGCHLD": 20, "SIGTTIN": 21, "SIGTTOU": 22, "SIGIO": 23, "SIGXCPU": 24, "SIGXFSZ": 25,
    "SIGVTALRM": 26, "SIGPROF": 27, "SIGWINCH": 28, "SIGUSR1": 30, "SIGUSR2": 31, "SIGPWR": 32,
}
TO_GDB = {int(getattr(signal, name)): number for name, number in _PAIRS.items()}
# real-time signals: gdb's REALTIME_33 is 45, on to REALTIME_63 at 75; REALTIME_32 is 77
TO_GDB.update({linux: 45 + linux - 33 for linux in range(33, 64)})
TO_GDB[32] = 77
FROM_GDB = {number: linux for linux, number in TO_GDB.items()}
UNKNOWN = 143          # GDB_SIGNAL_UNKNOWN


def to_gdb(linux: int) -> int:
    return TO_GDB.get(linux, UNKNOWN)


def from_gdb(number: int) -> int:
    """The Linux signal for gdb's ``number``; 0 for one Linux does not have."""
    return FROM_GDB.get(number, 0)
