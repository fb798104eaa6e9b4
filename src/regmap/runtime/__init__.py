"""The in-process runtime: page 0 of this process becomes the register file.

>>> import regmap
>>> regmap.map_registers()          # doctest: +SKIP
>>> # native code may now use [0x38] for rdi, [8] for rcx, ...
>>> regmap.unmap_registers()        # doctest: +SKIP

`map_registers` installs a SIGSEGV/SIGBUS handler (a ctypes callback) that
emulates each page-0 access of the faulting thread against its saved
registers; every other fault reaches whoever would have had it without
regmap.  See docs/runtime.md for the design, the costs and the limits.
"""
from __future__ import annotations

import contextlib
import platform
import struct
import sys

from regmap.errors import UnsupportedPlatform
from regmap.runtime.registers import RegisterHandle, Registers, registers

__all__ = ["map_registers", "unmap_registers", "mapped", "is_mapped", "registers", "stats",
           "reset_stats", "set_trace", "set_cache_limits", "RegisterHandle", "Registers",
           "current_layout"]


def _check_platform() -> None:
    system, machine = sys.platform, platform.machine().lower()
    if not system.startswith("linux") or machine not in ("x86_64", "amd64") \
            or struct.calcsize("P") != 8:
        raise UnsupportedPlatform(
            "map_registers() needs Linux on x86-64 (it rewrites the interrupted thread's saved "
            f"x86-64 registers from a SIGSEGV handler); this is {system} on {machine or 'unknown'}"
            f" with {8 * struct.calcsize('P')}-bit pointers. The pure emulator "
            "(regmap.emulate) works everywhere.")


def _resolve_layout(layout):
    from regmap.layout import Layout, load_layout
    if isinstance(layout, Layout):
        return layout
    return load_layout(layout)


TRANSLATE_AFTER = 3   # faults at a site before ``translate=True`` rewrites it (~ the rewrite's cost)
# Faults at a site before its faults are served by machine code.  Planning a site (its
# trampoline built and written) costs about 55 us, 20 faults of ``add rax, [8]`` through Python
# or 8 of ``addsd``; each fault after saves 1.3-6 us: a site that faults only a few times never
# pays for it (the ski-rental bound: the threshold near cost / saving).
FAST_FAULTS_AFTER = 16


def map_registers(layout=None, *, emulator=None, translate=False, strict=False,
                  fast_faults=True) -> Registers:
    """Map the register file onto page 0 for every thread of this process.

    `layout` is a `regmap.layout.Layout`, a shipped layout's name or a path
    (None: the default layout).  Calling it again is harmless; with another
    layout it switches to that layout.  `emulator` replaces the x86 emulator
    (anything with ``step(machine, trace=False)``), for testing.
    Calling it again also puts regmap's handler back in front of any handler installed over
    it (docs/runtime.md, "faulthandler and other handlers").
    `translate`: False (the default) or 0 never rewrites code; N > 0 rewrites
    a site into its exact register form (``add rax, [8]`` -> ``add rax, rcx``)
    once it has faulted N times; True is N = `TRANSLATE_AFTER`.  See
    docs/runtime.md, "Hot-site translation".
    `strict`: only constant addresses (``[0x38]``, not ``[rbx+8]``) are window accesses; a
    register-addressed page-0 access is the genuine NULL-pointer fault it is without regmap.
    False (the default): it reads and writes registers, and a process with a SIGSEGV handler
    of its own is told once on stderr (docs/runtime.md, "Strict addressing").
    `fast_faults`: True (the default) or N > 0: once a site has faulted N times (True: 16) and
    its instruction has a trampoline, its faults are sent there by machine code in the signal
    handler, with no Python and no GIL (docs/runtime.md, "Fast faults"); False or 0: every
    fault through Python.
    Returns `regmap.registers`.
    """
    _check_platform()
    from regmap.runtime import addressing, dispatch, guard, handler
    after = _after("translate", translate, TRANSLATE_AFTER)
    dispatch_after = _after("fast_faults", fast_faults, FAST_FAULTS_AFTER)
    state = handler.install(emulator, _resolve_layout(layout))
    addressing.set_strict(state, bool(strict))
    guard.keep_first()              # a handler installed over regmap's since: regmap goes first
    guard.watch_faulthandler()      # and faulthandler.enable() from now on leaves it first
    if after:
        from regmap.x86.translate import warm_up
        warm_up(state.layout, state.emulator)   # not at the program's first hot site
    handler.set_translate(after)
    dispatch.set_after(dispatch_after)
    return registers


def _after(name: str, value, default: int) -> int:
    if value is True:
        return default
    if value is False or value is None:
        return 0
    if isinstance(value, int) and value >= 0:
        return value
    raise ValueError(f"map_registers({name}={value!r}): expected True, False or a number "
                     "of faults >= 0")


def unmap_registers() -> bool:
    """Put back the SIGSEGV/SIGBUS dispositions that `map_registers` replaced, exactly.

    Returns whether regmap was mapped.
    """
    if "regmap.runtime.handler" not in sys.modules:
        return False
    from regmap.runtime import handler
    return handler.uninstall()


def is_mapped() -> bool:
    handler = sys.modules.get("regmap.runtime.handler")
    return handler is not None and handler.is_installed()


@contextlib.contextmanager
def mapped(layout=None, *, emulator=None, translate=False, strict=False, fast_faults=True):
    """``with regmap.mapped(): ...`` maps the registers for the block (if they were not already)."""
    already = is_mapped()
    map_registers(layout, emulator=emulator, translate=translate, strict=strict,
                  fast_faults=fast_faults)
    try:
        yield registers
    finally:
        if not already:
            unmap_registers()


def current_layout():
    """The layout that is mapped, or the default layout."""
    handler = sys.modules.get("regmap.runtime.handler")
    if handler is not None and handler.ACTIVE is not None:
        return handler.ACTIVE.layout
    return _resolve_layout(None)


def stats():
    """Counters of the in-process runtime (`regmap.runtime.handler.Stats`): faults emulated, per
    mnemonic and per site, the signals forwarded as genuine, and the sites translated."""
    _check_platform()
    from regmap.runtime import handler
    return handler.snapshot()


def reset_stats() -> None:
    _check_platform()
    from regmap.runtime import handler
    handler.reset()


def set_trace(target=None) -> None:
    """Trace every emulated window access: `target` is a callable taking a `TraceEvent`
    (thread, rip, disassembly, address, size, write, names, before, after) or a file-like
    object (one line per access); None stops tracing.

    The callback runs inside the signal handler, on the faulting thread: it must not touch
    page 0 or call native code that does.
    """
    _check_platform()
    from regmap.runtime import handler
    handler.set_trace(target)


def set_cache_limits(*, sites: int | None = None, forms: int | None = None) -> None:
    """Bound the runtime's caches: `sites` instruction addresses in the site cache (default
    1048576, about 0.25 KiB each) and `forms` decoded instructions in the emulator's form cache
    (default 8192, about 1.5 KiB each, a few hundred bytes for another address of the same
    bytes; a site with a fast path does not need its form).  Both evict with CLOCK (the least
    recently faulting first, a fraction at a time): past the bound a program pays a decode per
    site it comes back to, never a cliff.  None leaves a limit as it is."""
    _check_platform()
    from regmap.runtime import handler
    from regmap.runtime import sites as site_cache
    if sites is not None:
        site_cache.MAX_SITES = max(16, int(sites))
        if len(site_cache.CODE_SITES) > site_cache.MAX_SITES:
            site_cache.evict_sites(site_cache.MAX_SITES)
    if forms is not None:
        handler.RUNTIME_FORMS = max(16, int(forms))
        state = handler.ACTIVE
        if state is not None and hasattr(state.emulator, "max_forms"):
            state.emulator.max_forms = handler.RUNTIME_FORMS
