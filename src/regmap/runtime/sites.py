"""The site cache: one `Site` per instruction address that faulted into the window.

A site remembers the instruction's bytes as last decoded there (compared in
place on every fault, through `MEMORY`: a changed instruction is decoded
again), the emulator's compiled function for it and its fault count.  Sites
of the same instruction share their bytes object and function (the emulator
hands every site of one instruction the same form's), so a site costs its
own slots and its dict entry: about 0.25 KiB.  The cache is bounded
(`MAX_SITES`) with CLOCK eviction over insertion order (`evict_sites`); a
retired site's count stays in the stats (`RETIRED_SITES`, then per mnemonic
in `RETIRED` when even the addresses no longer fit).
"""
from __future__ import annotations

import ctypes
import sys

from regmap import clock
from regmap.procmaps import mappings
from regmap.runtime import _sys

# The process's address space as one byte array, never read as a whole: ``MEMORY[a:b]`` is the
# bytes at a..b (a plain copy, as a ctypes array slice is).  One object for every site, where a
# view per site cost 136 bytes each; slicing it is within ~40 ns of such a view's ``.raw``.
MEMORY = (ctypes.c_char * sys.maxsize).from_address(0)


class Site:
    """One instruction address that faulted into the window: its code, fast path, counters.

    `direct` counts the bytes from the instruction to the end of its page (at
    most 15); `tail` is true while an instruction there may be longer than
    that.  Once the emulator has decoded the instruction, `code` holds its
    bytes, `end` is the address just past them when they are readable in
    place (else 0) and `fast` the emulator's straight-line function for it
    (None when it has none): the next fault there runs `fast` as soon as
    ``MEMORY[address:end] == code``.  `translation` is None until the site is
    hot, then False (it stays in memory form) or the
    `regmap.x86.translate.Translation` written there.
    """

    __slots__ = ("address", "end", "direct", "tail", "count", "seen", "mnemonic", "code", "fast",
                 "translation")

    def __init__(self, address: int):
        self.address = address
        self.direct = min(15, _sys.PAGE_SIZE - (address & (_sys.PAGE_SIZE - 1)))
        if not readable(address):
            self.direct = 0  # execute-only code: every byte through the safe path, no fast path
        self.tail = self.direct < 15
        self.count = self.seen = 0     # seen: the count at the last eviction sweep
        self.mnemonic = None
        self.code = b""
        self.end = 0
        self.fast = None
        self.translation = None

    def decoded(self, code: bytes, mnemonic: str, fast=None) -> None:
        """The emulator decoded `code` here (its `fast` function, if it has one).

        `code` is kept as given, not copied: every site of one form shares the form's bytes.
        """
        if code == self.code and mnemonic == self.mnemonic and fast is self.fast:
            return
        self.mnemonic = mnemonic
        self.fast = None                    # no fast path while `end` and `code` disagree
        if len(code) <= self.direct:
            self.tail = False
            self.end = self.address + len(code)
            self.code = code
            self.fast = fast
        else:
            self.end, self.code = 0, code   # not readable in place: the safe path every time

    @property
    def in_place(self) -> bool:
        """Whether the site's bytes are compared (and may be rewritten) where they are."""
        return self.end != 0


MAPPINGS: list[tuple[int, int, bool]] = []   # (start, end, readable) from /proc/self/maps


def readable(address: int) -> bool:
    """Whether the page holding `address` may be read by a plain load (not execute-only).

    Consulted once per new site: a page the CPU executes from is readable
    unless it is execute-only (PROT_EXEC alone, which protection keys make
    real on CPUs that have them).
    """
    for refresh in (False, True):
        if refresh:
            try:
                MAPPINGS[:] = [(m.start, m.end, m.perms[0] == "r") for m in mappings("self")]
            except (OSError, ValueError, IndexError):
                return True  # no /proc: assume the usual readable code
        for i, (start, end, can_read) in enumerate(MAPPINGS):
            if start <= address < end:
                if i:   # first next time: new sites tend to follow the last one
                    MAPPINGS.insert(0, MAPPINGS.pop(i))
                return can_read
    return True


# The site cache: instruction address -> Site.  Bounded by MAX_SITES with CLOCK eviction over
# insertion order (`evict_sites`): a site that faulted since the last sweep (its count moved)
# gets a second chance at the back, the others are retired, an eighth of the cache at a time.
CODE_SITES: dict[int, Site] = {}
MAX_SITES = 1 << 20      # 1,048,576 sites, about 0.25 KiB each (a million: +238 MiB measured)


def new_site(address: int) -> Site:
    if len(CODE_SITES) >= MAX_SITES:
        evict_sites()
    # setdefault: two threads meeting a new site at once share one record (an assignment let
    # the second replace the first, and the first's counts were lost)
    return CODE_SITES.setdefault(address, Site(address))


# Counts of sites no longer cached: per address while there is room, past that per mnemonic.
RETIRED: dict[str, int] = {}
RETIRED_SITES: dict[int, tuple[int, str | None]] = {}


def evict_sites(keep: int | None = None) -> None:
    """Retire sites until at most `keep` remain (default: seven eighths of MAX_SITES)."""
    if keep is None:
        keep = MAX_SITES - max(1, MAX_SITES // 8)
    clock.evict(CODE_SITES, keep, _faulted_since_sweep, retire)


def _faulted_since_sweep(site: Site) -> bool:
    faulted, site.seen = site.count != site.seen, site.count
    return faulted


def retire(address: int, site: Site) -> None:
    count, mnemonic = RETIRED_SITES.pop(address, (0, None))
    count, mnemonic = count + site.count, site.mnemonic or mnemonic
    if len(RETIRED_SITES) >= MAX_SITES:
        # No room to remember it by address: its faults still count, per mnemonic.
        RETIRED[mnemonic or "?"] = RETIRED.get(mnemonic or "?", 0) + count
    else:
        RETIRED_SITES[address] = (count, mnemonic)


def retire_sites() -> None:
    """Forget every code view (keeping the counts)."""
    for address, site in list(CODE_SITES.items()):
        retire(address, site)
    CODE_SITES.clear()
