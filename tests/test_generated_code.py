"""The machine code regmap generates, for every CPU profile, on any host.

The native engine's stub depends on the CPU's features (16 xmm, 16 ymm, or 32 zmm and 8 opmask
registers to load and save); code written on a host without AVX-512 must still be checked for
one with it.  So each profile's stub is generated here, without running it: it must fit its room
with the instruction slot, decode back to what was assembled, load and save exactly that
profile's registers, and use no instruction the profile lacks.
"""
from __future__ import annotations

import collections
import pathlib

import pytest
from iced_x86 import Decoder, Mnemonic, OpKind, RegisterExt

from regmap.x86 import host
from regmap.x86.native import region, stub

HOSTS = pathlib.Path(__file__).parent / "fixtures" / "hosts"
PROFILES = {
    "sse": host.profile_from_flags("SSE only", {"sse", "sse2"}),
    "avx2": host.profile_from_flags("AVX2", {"avx", "avx2"}),
    "avx512f": host.profile_from_flags("AVX-512F, 16-bit opmasks", {"avx", "avx2", "avx512f"}),
    "avx512-amx": host.profile_from_flags("AVX-512 + AMX", {"avx", "avx2", "avx512f", "avx512bw", "amx_tile"}),
    **{p.name: host.parse((p / "cpuid.txt").read_text(), p.name) for p in HOSTS.iterdir()
       if (p / "cpuid.txt").exists()},
}
BLOCK, CODE = 0x13000, 0x1A000          # where a region at 0x10000 puts them
BASELINE = frozenset({"lm", "fpu", "fxsr", "cmov", "sse", "sse2", "syscall"})   # every x86-64 CPU


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_stub_fits_and_decodes_back(name):
    profile = PROFILES[name]
    blob, entries = stub.generate(profile, BLOCK, CODE)
    assert len(blob) + stub.MAX_BODY <= region.CODE_SIZE, (name, len(blob))
    assert entries["prologue"] == CODE and entries["insn"] == CODE + len(blob)
    assert sorted(entries.values()) == [entries[e] for e in stub.ENTRIES]          # laid out in order
    decoded = list(Decoder(64, blob, ip=CODE))
    assert sum(i.len for i in decoded) == len(blob)
    assert {i.ip for i in decoded} >= set(entries.values()) - {entries["insn"]}   # each entry starts one


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_stub_loads_and_saves_the_profiles_registers(name):
    profile = PROFILES[name]
    blob, entries = stub.generate(profile, BLOCK, CODE)
    loads, stores = collections.Counter(), collections.Counter()
    for i in Decoder(64, blob, ip=CODE):
        if i.mnemonic not in (Mnemonic.MOVDQU, Mnemonic.VMOVDQU, Mnemonic.VMOVDQU64, Mnemonic.KMOVW,
                              Mnemonic.KMOVQ):
            continue
        side = loads if entries["prologue"] <= i.ip < entries["epilogue"] else stores
        reg = i.op0_register if i.op0_kind == OpKind.REGISTER else i.op1_register
        side[(i.mnemonic, RegisterExt.size(reg))] += 1
    vectors = {128: (Mnemonic.MOVDQU, 16), 256: (Mnemonic.VMOVDQU, 32), 512: (Mnemonic.VMOVDQU64, 64)}
    want = {vectors[profile.vector_width]: profile.vector_count}
    if profile.vector_width == 512:
        want[(Mnemonic.KMOVQ if profile.wide_opmasks else Mnemonic.KMOVW, 8)] = 8
    assert dict(loads) == want and dict(stores) == want, name


def test_an_overflow_is_an_error_not_an_assert(monkeypatch):
    """The check survives ``python -O``: a stub too big for its room raises, naming the sizes."""
    class Room:
        block, code = BLOCK, CODE

        def write_code(self, offset, data):
            raise AssertionError("nothing may be written")
    monkeypatch.setattr(region, "CODE_SIZE", 1024)
    with pytest.raises(OSError, match=r"\d+ bytes.*does not fit in 1024"):
        stub.install(Room(), PROFILES["avx512-amx"])


def _low_mappings() -> set[int]:
    with open("/proc/self/maps") as maps:
        return {int(line.split("-")[0], 16) for line in maps if int(line.split("-")[0], 16) < 0x100000}


@pytest.mark.skipif(host.platform_problem() is not None, reason=str(host.platform_problem()))
def test_a_failed_start_unmaps_its_region_and_reports_the_same_error(monkeypatch):
    def refuse(r, profile):
        raise OSError("generated code refused")
    monkeypatch.setattr(stub, "install", refuse)
    before = _low_mappings()
    for _ in range(12):             # more than the candidate bases: nothing leaks, nothing collides
        with pytest.raises(OSError, match="refused"):
            region.Region()
    assert _low_mappings() == before
    monkeypatch.setattr(region, "_REGION", None)
    monkeypatch.setattr(region, "_FAILED", None)
    with pytest.raises(OSError, match="refused") as first:
        region.ensure()
    monkeypatch.setattr(stub, "install", lambda r, profile: pytest.fail("a second start was tried"))
    with pytest.raises(OSError) as again:
        region.ensure()
    assert again.value is first.value


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_stub_needs_only_the_profiles_features(name):
    profile = PROFILES[name]
    blob, _ = stub.generate(profile, BLOCK, CODE)
    flags = profile.flags | BASELINE
    missing = [(str(i), lacks) for i in Decoder(64, blob, ip=CODE)
               if (lacks := host.missing_features(i.code, flags))]
    assert not missing, (name, missing[:5])
