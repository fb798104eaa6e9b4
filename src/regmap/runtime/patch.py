"""Hot-site translation in-process: writing register forms into live code, and taking them out.

`regmap.x86.translate` decides what a site becomes; this module writes it,
records it and puts the old bytes back at `unmap_registers()`.

Writing.  Through /proc/self/mem (`_sys.write_code`), as a debugger plants a
breakpoint: page protections are never changed, and a read-only private
file mapping gets a private copy of the page (copy on write), never the
file's own.  Only private executable mappings are patched.

Threads.  A thread must never execute a torn instruction: half old bytes,
half new.  With the faulting thread the only one in the process (it is
inside regmap's handler, not executing the site) the new bytes are written
at once.  Otherwise regmap follows the kernel's own protocol for live code
(text_poke_bp, arch/x86/kernel/alternative.c), with membarrier(2)'s
PRIVATE_EXPEDITED_SYNC_CORE (Linux >= 4.16) as the "sync" that makes every
other running thread execute a core-serializing instruction:

1. write int3 over the first byte; sync;
2. write the rest of the new bytes; sync;
3. write the new first byte; sync.

A short register-addressed site's jump covers the instruction after it too
(`regmap.x86.stub`), where a thread may start as well.  The places a thread may start are
where the program's own instructions start (the translation's old bytes: the jump's int3
padding is never entered), whichever way the bytes are going: step 1 puts int3 on each,
step 2 writes every other byte, step 3 those (the site's own last).  A thread that traps at
the second instruction's start goes on in its copy in the stub (`trampolines.PUNNED`), as one
does for good once the jump is there (its byte there is int3).  A site whose moved
instruction keeps trapping (a loop's head: every turn would trap) gets its old bytes back
after `stub.PUN_TRAPS` traps and stays faulting (`_unpun`).

A thread reaching the site meanwhile executes int3 (never the tail): regmap's
SIGTRAP handler sees a trap just after a site being patched, puts rip back
on the site and returns, and the thread tries again.  A thread that had
already fetched the old instruction faults as before; the SIGSEGV handler
sees a site being (or already) rewritten and likewise resumes there
(`settle`).  Without membarrier SYNC_CORE a multi-threaded process is not
patched: its sites keep faulting.
"""
from __future__ import annotations

import ctypes
import os
import threading
from typing import NamedTuple

from regmap.procmaps import private_code
from regmap.runtime import _sys, genuine, trampolines
from regmap.runtime.frame import CODE_SITES, Frame
from regmap.x86 import stub
from regmap.x86.translate import Translation, overlaps, translate

INT3 = 0xCC
TRAP_FLAGS = _sys.SA_SIGINFO | _sys.SA_ONSTACK | _sys.SA_RESTART
TRAP_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)

PATCHES: dict[int, Translation] = {}   # site address -> what was written there
BUSY: dict[int, bytes] = {}            # sites being rewritten right now -> the bytes they held
PLANTED: set[int] = set()              # every site where regmap ever wrote an int3


class Trap(NamedTuple):
    previous: _sys.KernelSigaction
    callback: object


TRAP: list[Trap] = []          # the SIGTRAP handler while installed
_LOCK = threading.Lock()       # one thread rewrites code at a time
_SYNC_CORE: list[bool] = []    # [whether membarrier SYNC_CORE is registered] once tried


class TranslationEvent(NamedTuple):
    """A site rewritten into its register form (given to the trace sink, as TraceEvents are)."""
    thread: int
    translation: Translation

    def __str__(self) -> str:
        t = self.translation
        return f"[{self.thread}] {t.address:#x}  translated: {t.old_text} -> {t.new_text}"


# -- deciding ---------------------------------------------------------------------------------

def hot_site(site, layout, trace=None, at: int | None = None) -> None:
    """The site has faulted often enough: translate it, and tell the trace sink if it was.
    `at`: a register-addressed operand's window address (its stub sends that one to its
    trampoline)."""
    translation = translate_site(site, layout, at)
    if translation is not None and trace is not None:
        try:
            trace(TranslationEvent(threading.get_native_id(), translation))
        except Exception as error:  # noqa: BLE001 - a broken trace sink must not stop emulation
            os.write(2, f"regmap: trace callback failed: {type(error).__name__}: {error}\n"
                     .encode("utf-8", "replace"))


def translate_site(site, layout, at: int | None = None) -> Translation | None:
    """Rewrite the site once it is hot, if its register form is exact; at most one try per site.

    One thread at a time: another thread's hot site waits for its next fault (its handler
    must not block on a thread that may be waiting for the GIL it holds)."""
    if not _LOCK.acquire(blocking=False):
        return None
    try:
        if site.translation is not None:
            return None
        site.translation = False
        if not site.in_place or not site.code:
            return None         # bytes not viewable in place (execute-only, or across a page)
        # (a short register-addressed site's stub takes the instruction after it too)
        code = site.code if at is None else _sys.read_code(site.address, len(site.code) + 15)
        translation = translate(site.address, site.code, layout) \
            or trampolines.translate(site.address, code, layout, at)
        if translation is None or overlaps(translation, PATCHES.values()) \
                or site.address in GIVEN_BACK:
            return None
        if trampolines.PUNNED:
            install_trap_handler()      # (before the jump is written: its pun traps)
        if not apply(translation):
            return None
        site.translation = translation
        return translation
    finally:
        _LOCK.release()


def translated() -> tuple[Translation, ...]:
    return tuple(PATCHES.values())


# -- writing ------------------------------------------------------------------------------------

def apply(translation: Translation) -> bool:
    """Write `translation.new` over `translation.old` if the old bytes are still there."""
    # recorded first: a thread that faulted on the old bytes must find it when its handler runs
    PATCHES[translation.address] = translation
    if _swap(translation):
        return True
    del PATCHES[translation.address]
    return False


def restore_all() -> int:
    """Put every site's original bytes back (where they are still the translation's); count them."""
    restored = 0
    with _LOCK:
        for address, translation in list(PATCHES.items()):
            restored += _restore(address, translation)
        _PUN_COUNTS.clear()
        GIVEN_BACK.clear()
    return restored


def _restore(address: int, translation: Translation) -> bool:
    restored = _swap(translation, back=True)
    del PATCHES[address]
    site = CODE_SITES.get(address)
    if site is not None:
        site.translation = None
    return restored


def _swap(translation: Translation, back: bool = False) -> bool:
    """Write the translation's new bytes over its old ones (its old ones back over the new, if
    `back`) if the bytes replaced are still there.  Where the program's own (old) instructions
    start is where a thread may start."""
    address, expected, replacement = translation.address, translation.old, translation.new
    if back:
        expected, replacement = replacement, expected
    if _sys.read_code(address, len(expected)) != expected \
            or not private_code("self", address, len(expected)):
        return False
    if len(os.listdir("/proc/self/task")) == 1:
        return _sys.write_code(address, replacement)
    if not sync_core_available():
        return False
    install_trap_handler()
    first = sorted(_starts(address, translation.old))
    BUSY[address] = expected
    PLANTED.update(address + start for start in first)
    try:
        if not all(_sys.write_code(address + start, bytes([INT3])) for start in first):
            _write_around(address, expected, first)
            return False
        _sync()
        if not _write_around(address, replacement, first):
            _write_around(address, expected, first)     # the old instructions whole again
            return False
        return True
    finally:
        BUSY.pop(address, None)


def _write_around(address: int, code: bytes, first: list[int]) -> bool:
    """Steps 2 and 3: `code`'s bytes but those at `first`; sync; those, the site's own last;
    sync."""
    written = all(_sys.write_code(address + start + 1, code[start + 1:end])
                  for start, end in zip(first, first[1:] + [len(code)]) if end > start + 1)
    _sync()
    for start in first[1:] + first[:1]:
        written = _sys.write_code(address + start, code[start:start + 1]) and written
    _sync()
    return written


def _starts(address: int, code: bytes) -> set[int]:
    """The offsets in `code` (placed at `address`) where an instruction starts."""
    from iced_x86 import Decoder
    return {ins.ip - address for ins in Decoder(64, code, ip=address)}


def sync_core_available() -> bool:
    if not _SYNC_CORE:
        _SYNC_CORE.append(_sys.membarrier(_sys.MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE))
    return _SYNC_CORE[0]


def _sync() -> None:
    if not _sys.membarrier(_sys.MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE):
        # registration is per address space: a forked child registers again
        _sys.membarrier(_sys.MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE)
        _sys.membarrier(_sys.MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)


def _after_fork_in_child() -> None:
    """The child has only the thread that forked: a rewrite another thread had under way will never
    be finished here (its int3 would trap for ever), and a lock it held would never be released.
    The child being alone, each such site gets its old bytes back at once."""
    global _LOCK
    _LOCK = threading.Lock()
    for address, before in list(BUSY.items()):
        _sys.write_code(address, before)
        translation = PATCHES.get(address)
        if translation is not None and translation.new != before:
            del PATCHES[address]        # it was being applied: the site is in memory form again
    BUSY.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- threads that meet a site being rewritten ---------------------------------------------------

def settle(frame) -> bool:
    """A fault at a site being rewritten, or rewritten since the thread fetched it: run it again.

    (The thread had fetched the old instruction; it faulted without effect.
    Returning with rip unchanged executes whatever the site holds now.)
    """
    rip = frame.rip
    if rip in BUSY:
        return True
    translation = PATCHES.get(rip)
    return translation is not None and _sys.read_code(rip, len(translation.new)) == translation.new


def on_trap(signo: int, info: int, ctx: int) -> None:
    try:
        frame = Frame.from_address(ctx)
        site = frame.rip - 1
        moved = trampolines.PUNNED.get(site)
        if moved is not None and frame.si_code == _sys.SI_KERNEL:    # an int3's trap
            frame.rip = moved       # a short site's next instruction, or where it was
            _count_pun(site)
            return
        if site in BUSY or (site in PLANTED and _sys.read_code(site, 1) != bytes([INT3])):
            frame.rip = site        # the int3 regmap planted (maybe gone by now): try again
            return
        forward_trap(signo, info, ctx)
    except BaseException:  # noqa: BLE001 - nothing may escape a signal handler
        _sys.set_action(signo, TRAP[0].previous if TRAP else _sys.KernelSigaction())


_PUN_COUNTS: dict[int, int] = {}
GIVEN_BACK: set[int] = set()    # sites `_unpun` gave their bytes back: not rewritten again


def _count_pun(boundary: int) -> None:
    count = _PUN_COUNTS[boundary] = _PUN_COUNTS.get(boundary, 0) + 1
    if count >= stub.PUN_TRAPS:
        _unpun(boundary)


def _unpun(boundary: int) -> None:
    """The site whose moved instruction is at `boundary` gets its old bytes back while the
    registers stay mapped: entering that instruction by a jump traps every time (its copy
    stays, for threads on their way through it).  Another thread rewriting code meanwhile:
    the next trap tries again."""
    found = [t for t in PATCHES.values() if t.address < boundary < t.address + len(t.old)]
    if not found or not _LOCK.acquire(blocking=False):
        return
    try:
        GIVEN_BACK.add(found[0].address)
        _restore(found[0].address, found[0])
        _PUN_COUNTS.pop(boundary, None)
    finally:
        _LOCK.release()


def forward_trap(signo: int, info: int, ctx: int) -> None:
    """A SIGTRAP that is not regmap's: to the previous handler, or re-raised under the default."""
    previous = TRAP[0].previous
    if previous.handler == _sys.SIG_IGN and _sent_by_a_process(info):
        return          # kill(2), sigqueue(3), tgkill(2): ignored, as the kernel ignores it
    if previous.handler in (_sys.SIG_DFL, _sys.SIG_IGN):
        # int3 and single steps are traps (rip is past them): re-queue the same siginfo, which
        # the default action receives as soon as this handler returns (the kernel forces a
        # trap's SIGTRAP through SIG_IGN as well)
        default = _sys.KernelSigaction.from_buffer_copy(previous)
        default.handler = _sys.SIG_DFL
        _sys.set_action(signo, default)
        _sys.queue_to_self(signo, ctypes.string_at(info, 128))
        return
    genuine.call_previous(previous, signo, info, ctx, Frame.from_address(ctx).sigmask)


def _sent_by_a_process(info: int) -> bool:
    """Whether the siginfo's si_code says a process sent the signal (SI_USER, SI_QUEUE, SI_TKILL:
    zero or negative), not the CPU (a trap's si_code is positive)."""
    return ctypes.c_int.from_address(info + 8).value <= 0


def install_trap_handler() -> None:
    if TRAP:
        return
    callback = TRAP_TYPE(on_trap)
    address = ctypes.cast(callback, ctypes.c_void_p).value
    previous = _sys.install_handler(_sys.SIGTRAP, address, TRAP_FLAGS, (_sys.SIGTRAP,))
    TRAP.append(Trap(previous, callback))
    _KEEP_ALIVE.append(callback)


def uninstall_trap_handler() -> None:
    if TRAP:
        _sys.set_action(_sys.SIGTRAP, TRAP.pop().previous)


_KEEP_ALIVE: list = []     # callbacks stay alive: a thread may still be inside one
