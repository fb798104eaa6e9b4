"""regmap's handler stays first for SIGSEGV and SIGBUS when faulthandler comes after it.

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
  regmap passes it on to what it replaced itself (`handler.forward`).

Both also give the calling thread back an alternate stack the handler can run
on (`handler.ensure_altstack`): faulthandler.enable() puts up its own, a ~16 KiB
heap block, and regmap's handler, which runs the emulator in Python there, ran
off its bottom into the heap.

While faulthandler.enable() runs, regmap is not installed: a window access
from another thread at that instant is not emulated.
"""
from __future__ import annotations

import contextlib
import functools

from regmap.runtime import _sys
from regmap.runtime import handler as _handler


def watch_faulthandler() -> None:
    """Wrap faulthandler.enable and faulthandler.disable (once)."""
    import faulthandler
    for name in ("enable", "disable"):
        function = getattr(faulthandler, name)
        if not getattr(function, "regmap_guard", False):
            setattr(faulthandler, name, _guarded(function))


def _guarded(function):
    @functools.wraps(function)
    def guarded(*args, **kwargs):
        with stepped_aside():
            return function(*args, **kwargs)
    guarded.regmap_guard = True
    return guarded


@contextlib.contextmanager
def stepped_aside():
    """Put back what regmap replaced for the duration of the block, then install regmap on top
    of whatever the block left."""
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
                _handler.ensure_altstack(state)     # faulthandler.enable() puts up a small one


def keep_first() -> None:
    """Put regmap's handler back on top of any handler installed over it since it was mapped."""
    with _handler._LOCK:
        state = _handler.ACTIVE
        if state is None:
            return
        for signo in _handler.SIGNALS:
            if not _first(state, signo) and signo not in state.handed_over:
                _handler.install_on_top(state, signo)
        _handler.ensure_altstack(state)


def _first(state, signo: int) -> bool:
    return _sys.get_action(signo).key() == state.installed[signo]
