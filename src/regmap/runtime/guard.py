"""regmap's handler stays first for SIGSEGV and SIGBUS when faulthandler comes after it, and
keeps an alternate stack it can run on.

`faulthandler.enable()` installs its handler over whatever is there; on a
fault it prints its report, puts back what it replaced and raises the signal
again.  Enabled after `map_registers()` it would stand in front of regmap, and
the first window access would end the process with "Fatal Python error".

Two defences:

- While regmap is imported, `faulthandler.enable` and `faulthandler.disable`
  are wrapped (`watch_faulthandler`): regmap steps aside (puts back the
  dispositions it replaced), the real function runs, and regmap installs itself
  again on top, with whatever is there now as the handler it forwards genuine
  faults to.  The chain is then exactly that of faulthandler enabled first:
  regmap, then faulthandler, then what was there before either.
- `map_registers()` checks that regmap's handler is still the one installed
  (`keep_first`): a handler installed over it by other means (a reference to
  `faulthandler.enable` taken before regmap was imported, a native library)
  is put behind regmap, which forwards genuine faults to it.  If that handler
  hands a fault back to regmap (faulthandler re-raises into what it replaced),
  regmap passes it on to what it replaced itself (`genuine.forward`).

The alternate stack: the first `faulthandler.enable()` or
`faulthandler.register()` of a process also installs faulthandler's own
alternate signal stack on the calling thread (16 880 bytes of heap, CPython
3.10 to 3.13 alike), over whatever that thread had, regmap's 512 KiB
included.  regmap's handler runs Python and needs 10 to 31 KiB there for the
first fault at a site (more on 3.12 than on 3.10, 3.11 and 3.13): on
faulthandler's stack it writes below it into the heap, and the process dies
later, at exit while garbage-collecting or wherever the damaged objects are
next used.  So after each wrapped call (`faulthandler.register` is wrapped for
this alone) and in every `map_registers()`, `keep_altstack` gives the calling
thread regmap's stack back; unmapping on the mapping thread puts faulthandler's
back (faulthandler frees it at exit, and only uninstalls it if it is still
there).

While faulthandler.enable() runs, regmap is not installed: a window access
from another thread at that instant is not emulated.
"""
from __future__ import annotations

import contextlib
import functools
import threading

from regmap.runtime import _sys
from regmap.runtime import handler as _handler


def watch_faulthandler() -> None:
    """Wrap faulthandler.enable, disable and register (once)."""
    import faulthandler
    for name, around in WRAPPERS.items():
        function = getattr(faulthandler, name)
        if not getattr(function, "regmap_guard", False):
            setattr(faulthandler, name, _guarded(function, around))


def _guarded(function, around):
    @functools.wraps(function)
    def guarded(*args, **kwargs):
        with around():
            return function(*args, **kwargs)
    guarded.regmap_guard = True
    return guarded


@contextlib.contextmanager
def stepped_aside():
    """Put back what regmap replaced for the duration of the block, then install regmap on top
    of whatever the block left, and keep its alternate stack."""
    with _handler._LOCK:
        state = _handler.ACTIVE
        aside = [] if state is None else [signo for signo in _handler.SIGNALS if _first(state, signo)]
        for signo in aside:
            _sys.set_action(signo, state.previous[signo])
        try:
            yield
        finally:
            for signo in aside:
                _handler.install_on_top(state, signo)
            if state is not None:
                keep_altstack(state)


@contextlib.contextmanager
def altstack_kept():
    """Give the calling thread regmap's alternate stack back after the block if it lost it."""
    try:
        yield
    finally:
        with _handler._LOCK:
            if _handler.ACTIVE is not None:
                keep_altstack(_handler.ACTIVE)


# What each wrapped faulthandler function may take from regmap: its SIGSEGV/SIGBUS
# dispositions and the thread's alternate stack (enable, disable), or the alternate stack only
# (register refuses the fatal signals, but allocates faulthandler's stack all the same).
WRAPPERS = {"enable": stepped_aside, "disable": stepped_aside, "register": altstack_kept}


def keep_first() -> None:
    """Put regmap's handler back on top of any handler installed over it since it was mapped,
    and regmap's alternate stack back on the calling thread."""
    with _handler._LOCK:
        state = _handler.ACTIVE
        if state is None:
            return
        for signo in _handler.SIGNALS:
            if not _first(state, signo) and signo not in state.handed_over:
                _handler.install_on_top(state, signo)
        keep_altstack(state)


def keep_altstack(state) -> None:
    """If the calling thread's alternate stack is now too small for the handler (faulthandler
    installed its own over regmap's), install regmap's again.  Call with `_handler._LOCK` held.

    `ensure_altstack` records what it replaces for unmap.  Only the mapping thread's record is
    kept: another thread keeps regmap's stack after unmap, like the ones regmap gives threads
    at their first fault.
    """
    mapping_thread = state.altstack
    _handler.ensure_altstack(state)
    if mapping_thread is not None and mapping_thread[0] != threading.get_ident():
        state.altstack = mapping_thread


def _first(state, signo: int) -> bool:
    return _sys.get_action(signo).key() == state.installed[signo]
