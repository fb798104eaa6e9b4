"""The bounded caches: CLOCK eviction keeps what was used since the last sweep and never grows
past its bound (the emulator's forms, the runtime's sites)."""
from __future__ import annotations

import ctypes
import sys
from pathlib import Path

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


def test_a_million_sites_fit_the_default_bound():
    sites = pytest.importorskip("regmap.runtime.sites")
    assert sites.MAX_SITES >= 1_000_000


def test_the_same_bytes_elsewhere_share_one_decoded_form():
    emulator = Emulator(max_forms=16)
    first, second = emulator.form_at(0x1000, ADD_RAX_8), emulator.form_at(0x5008, ADD_RAX_8 + b"\x90")
    assert first is not second
    assert second.code is first.code and second.fast is first.fast and second.ops is first.ops
    assert (second.address, second.next_ip) == (0x5008, 0x5010)
    assert second.result.address == 0x5008 and first.result.address == 0x1000
    assert len(emulator._shared) == 1


@pytest.mark.parametrize("code, moves", [
    ("48 8b 05 08 00 00 00", True),     # mov rax, [rip+8]: the operand's address depends on the site
    ("e8 00 01 00 00", True),           # call rel32: so does the target
    ("f3 48 a5", False),                # rep movsq: its compiled form names its own next rip
], ids=["rip-relative", "branch", "string"])
def test_forms_that_name_their_own_address_are_decoded_per_site(code, moves):
    emulator = Emulator(max_forms=16)
    code = bytes.fromhex(code)
    first, second = emulator.form_at(0x1000, code), emulator.form_at(0x2000, code)
    assert first.instruction is not second.instruction
    assert not emulator._shared
    assert (first.disassembly != second.disassembly) == moves


def test_the_shared_forms_stay_bounded():
    emulator = Emulator(max_forms=16)
    for n in range(100):                     # 100 different instructions, each at 2 addresses
        code = bytes.fromhex("48 8b 04 25") + (8 * (n % 30)).to_bytes(4, "little")
        code = code if n < 30 else bytes.fromhex("48 03 04 25") + (8 * (n - 30)).to_bytes(4, "little")
        for address in (0x1000 + 16 * n, 0x9000 + 16 * n):
            emulator.form_at(address, code)
            assert len(emulator._shared) <= 16 and len(emulator._forms) <= 16


def test_sites_of_one_instruction_share_its_bytes_and_a_changed_one_is_decoded_again():
    """In process: two `add rax, [8]` sites share one bytes object and one compiled function;
    rewriting the second into `sub rax, [8]` is noticed at its next fault."""
    import mmap
    sys_path = str(Path(__file__).resolve().parent / "snippets")
    if sys_path not in sys.path:
        sys.path.insert(0, sys_path)
    from runtime_build import why_not_native
    reason = why_not_native()
    if reason is not None:
        pytest.skip(reason)
    import regmap
    from regmap.runtime import sites
    add, sub = ADD_RAX_8, bytes.fromhex("48 2b 04 25 08 00 00 00")
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(b"\x31\xc0" + add + add + b"\xc3")        # xor eax, eax; add; add; ret
    base = ctypes.addressof(ctypes.c_char.from_buffer(page))
    first, second = base + 2, base + 2 + len(add)
    # rcx (the window's [8] in the default layout) is the fourth argument
    function = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long,
                                ctypes.c_long)(base)
    regmap.map_registers(fast_faults=False)     # every fault through the site cache
    try:
        assert [function(0, 0, 0, 21) for _ in range(3)] == [42] * 3
        one, two = sites.CODE_SITES[first], sites.CODE_SITES[second]
        assert one.code == add and two.code is one.code and two.fast is one.fast
        before = two.count
        page.seek(second - base)
        page.write(sub)
        assert [function(0, 0, 0, 21) for _ in range(3)] == [0] * 3
        assert sites.CODE_SITES[second].mnemonic == "sub" and sites.CODE_SITES[second].code == sub
        assert sites.CODE_SITES[second].count == before + 3 and one.mnemonic == "add"
    finally:
        regmap.unmap_registers()
