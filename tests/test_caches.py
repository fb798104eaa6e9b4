"""The bounded caches: CLOCK eviction keeps what was used since the last sweep and never grows
past its bound (the emulator's forms, the runtime's sites)."""
from __future__ import annotations

import pytest

from regmap import clock
from regmap.x86 import Emulator

ADD_RAX_8 = bytes.fromhex("48 03 04 25 08 00 00 00")      # add rax, [8]


def test_clock_gives_a_used_entry_a_second_chance_and_reaches_its_bound():
    cache = {key: {"used": key % 3 == 0} for key in range(12)}
    dropped = []

    def used(entry):
        was, entry["used"] = entry["used"], False
        return was

    clock.evict(cache, 5, used, lambda key, _entry: dropped.append(key))
    assert len(cache) == 5
    assert list(cache) == [11, 0, 3, 6, 9]       # the used ones moved to the back
    assert sorted(dropped + list(cache)) == list(range(12))
    clock.evict(cache, 2, used)                  # nothing is marked now: oldest first
    assert list(cache) == [6, 9]


def test_the_form_cache_stays_bounded_and_keeps_hot_forms():
    emulator = Emulator(max_forms=16)
    hot = 0x1000
    for n in range(200):
        emulator.form_at(hot, ADD_RAX_8)          # used between every two sweeps
        emulator.form_at(0x2000 + 8 * n, ADD_RAX_8)
        assert len(emulator._forms) <= 16
    assert hot in emulator._forms


def test_the_site_cache_retires_cold_sites_and_keeps_their_counts(monkeypatch):
    sites = pytest.importorskip("regmap.runtime.sites")
    monkeypatch.setattr(sites, "CODE_SITES", {})
    monkeypatch.setattr(sites, "RETIRED_SITES", {})
    monkeypatch.setattr(sites, "RETIRED", {})
    monkeypatch.setattr(sites, "MAX_SITES", 8)
    for n in range(3):                            # older than the hot site: the first sweep,
        sites.new_site(0x3000 + n).count = 1      # when every site has faulted, drops them first
    hot = sites.new_site(0x1000)
    for n in range(40):
        hot.count += 1                            # it faults between every two sweeps
        cold = sites.new_site(0x2000 + n)
        cold.count = 1
        assert len(sites.CODE_SITES) <= 8
    assert 0x1000 in sites.CODE_SITES
    kept = sum(site.count for address, site in sites.CODE_SITES.items() if address != 0x1000)
    retired = (sum(count for count, _ in sites.RETIRED_SITES.values())
               + sum(sites.RETIRED.values()))      # past MAX_SITES addresses, per mnemonic
    assert kept + retired == 43                   # every cold site's fault is still counted
