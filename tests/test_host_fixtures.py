"""regmap's XSAVE readers and writers over real images recorded on other hosts, on any host.

Each folder of tests/fixtures/hosts/ is one CPU: its ``cpuid.txt`` (CPUID leaf 0xD, XCR0,
MXCSR_MASK), a real signal-frame XSAVE image and a real ``NT_X86_XSTATE`` image, each with a
JSON file giving the known value of every register it holds and the file offset of each of
their quadwords.  The images are read through the same code the runtimes use (`Xsave` under a
signal frame's `Frame`, the tracer's `XState`), laid out from that CPU's profile, not this
host's: so an AMD image is checked on an Intel host and the other way round.
"""
from __future__ import annotations

import ctypes
import json
import pathlib
import struct

import pytest

from regmap.runtime.frame import GREGS, SIGINFO_OFFSET, WORDS, Frame, Xsave
from regmap.trace.xstate import XState
from regmap.x86 import host, xsave

HOSTS = pathlib.Path(__file__).parent / "fixtures" / "hosts"
PROFILES = sorted(p.name for p in HOSTS.iterdir() if (p / "cpuid.txt").exists())
IMAGES = [(name, kind) for name in PROFILES for kind in ("sigframe", "ptrace-xstate")]


def profile(name: str) -> host.Profile:
    return host.parse((HOSTS / name / "cpuid.txt").read_text(), name)


def known(name: str, kind: str) -> tuple[dict, bytes]:
    meta = json.loads((HOSTS / name / f"{kind}.json").read_text())
    data = (HOSTS / name / meta["file"]).read_bytes()
    assert len(data) == meta["size"]
    return meta, data


def expected(meta: dict) -> dict[str, int]:
    k = meta["known"]
    values = {f"zmm{n}": int(v, 16) for n, v in enumerate(k["zmm"])}
    values.update({f"k{n}": int(v, 16) for n, v in enumerate(k["k"])})
    values.update({"mxcsr": int(k["mxcsr"], 16), "fcw": int(k["fcw"], 16)})
    values.update({f"st{i}": int(k["st"][f"st{i}"], 16) for i in range(3)})
    values["fsw"] = int(meta["read_from_file"]["fsw"], 16)
    values["ftw"] = int(meta["read_from_file"]["ftw_abridged"], 16)
    return values


class Image:
    """A recorded image in writable memory, read through the runtimes' own readers."""

    def __init__(self, name: str, kind: str, layout: xsave.Layout | None = None):
        self.meta, data = known(name, kind)
        self.kind = kind
        self.layout = layout or xsave.layout(profile(name))
        if kind == "sigframe":
            self.buffer = ctypes.create_string_buffer(data + struct.pack("<I", 0x46505845), len(data) + 64)
            self.frame_words = WORDS()
            self.frame_words[GREGS + 23] = ctypes.addressof(self.buffer)          # uc_mcontext.fpregs
            self.frame = Frame.from_buffer(self.frame_words)
            self.frame.__dict__["xs"] = Xsave(ctypes.addressof(self.buffer), self.layout)
        else:
            self.state = XState()
            ctypes.memmove(self.state._buffer, data, len(data))
            self.state.parse(len(data), self.layout)
            self.state.loaded = True

    def read(self, name: str) -> int:
        return getattr(self.frame, name) if self.kind == "sigframe" else self.state.read(name)

    def write(self, name: str, value: int) -> None:
        if self.kind == "sigframe":
            setattr(self.frame, name, value)
        else:
            self.state.write(name, value)

    def bytes(self) -> bytes:
        size = self.meta["size"]
        return self.buffer.raw[:size] if self.kind == "sigframe" else bytes(self.state._buffer[:size])


def test_fixtures_cover_both_vendors():
    vendors = {profile(name).vendor for name in PROFILES}
    assert {"GenuineIntel", "AuthenticAMD"} <= vendors, PROFILES


@pytest.mark.parametrize("name", PROFILES)
def test_profile_parses_the_recorded_cpuid(name):
    p = profile(name)
    meta, _ = known(name, "sigframe")
    offsets = {int(i): (c["offset"], c["size"]) for i, c in meta["cpuid_0xd_standard_offsets"].items()}
    assert {i: v for i, v in p.components.items() if i in offsets} == offsets
    assert p.xcr0 == int((HOSTS / name / "cpuid.txt").read_text().split("xcr0:")[1].split()[0], 16)
    assert p.mxcsr_mask == int(meta["read_from_file"]["mxcsr_mask"], 16)
    sw = meta["fpx_sw_bytes"]
    assert p.xsave_size(int(sw["xfeatures"], 16)) == sw["xstate_size"]


@pytest.mark.parametrize("name,kind", IMAGES)
def test_every_known_register_reads_back(name, kind):
    image = Image(name, kind)
    for register, want in expected(image.meta).items():
        assert image.read(register) == want, (register, hex(image.read(register)), hex(want))


@pytest.mark.parametrize("name,kind", IMAGES)
def test_a_written_register_lands_at_the_recorded_offsets(name, kind):
    image = Image(name, kind)
    k = image.meta["known"]
    for n, offsets in enumerate(k["zmm_qword_offsets_in_file"]):
        value = sum((0xA5A5_0000_0000_0000 | n << 8 | q) << 64 * q for q in range(8))
        image.write(f"zmm{n}", value)
        data = image.bytes()
        assert [struct.unpack_from("<Q", data, at)[0] for at in offsets] == [
            value >> 64 * q & (2**64 - 1) for q in range(8)], n
        assert image.read(f"zmm{n}") == value
    for n, at in enumerate(k["k_offsets_in_file"]):
        image.write(f"k{n}", 0x5A5A_0000_0000_0000 | n)
        assert struct.unpack_from("<Q", image.bytes(), at)[0] == 0x5A5A_0000_0000_0000 | n
    image.write("mxcsr", 0x1F80 | 0x40)
    assert struct.unpack_from("<I", image.bytes(), 24)[0] == 0x1FC0
    image.write("st1", 0x4000_8000_0000_0000_0000)
    assert image.bytes()[48:58] == (0x4000_8000_0000_0000_0000).to_bytes(10, "little")
    # nothing else moved: every register not written still reads its known value
    for register, want in expected(image.meta).items():
        if not register.startswith(("zmm", "k", "mxcsr", "st1")):
            assert image.read(register) == want, register


@pytest.mark.parametrize("name,kind", IMAGES)
def test_a_component_in_its_initial_state_reads_zero_and_a_write_brings_it_back(name, kind):
    image = Image(name, kind)
    layout = image.layout
    at = xsave.XSTATE_BV
    view = memoryview(image.buffer).cast("B") if kind == "sigframe" else image.state._view
    bv = struct.unpack_from("<Q", view, at)[0]
    struct.pack_into("<Q", view, at, bv & ~(1 << host.HI16_ZMM | 1 << host.OPMASK))
    assert image.read("zmm20") == 0 and image.read("k3") == 0
    assert image.read("zmm3") == expected(image.meta)["zmm3"]     # other components untouched
    image.write("k3", 7)
    assert struct.unpack_from("<Q", view, at)[0] >> host.OPMASK & 1
    assert image.read("k3") == 7 and image.read("k4") == 0         # the rest of it starts at zero
    assert struct.unpack_from("<Q", view, layout.offset(host.OPMASK) + 8 * 4)[0] == 0


def test_an_image_read_with_another_vendors_offsets_is_refused():
    """Intel's documented offsets (opmask 1088) over AMD's 2432-byte image: never a value from
    the wrong bytes, one error naming the sizes."""
    intel = xsave.layout(host.profile_from_flags("Intel AVX-512", {"avx", "avx512f", "avx512bw"}))
    for kind in ("sigframe", "ptrace-xstate"):
        with pytest.raises(xsave.XstateLayoutError, match="2432 bytes.*2688"):
            Image("amd-zen5-avx512", kind, intel)


def test_an_image_with_a_component_the_cpu_lacks_is_refused():
    amd = xsave.layout(profile("amd-zen5-avx512"))
    with pytest.raises(xsave.XstateLayoutError, match="XTILECFG"):
        Image("intel-avx512-amx", "sigframe", amd)


def test_this_hosts_layout_is_its_cpuid():
    """The running host's layout accounts for its own signal frames and regsets (the
    runtimes' tests read real ones); here: its size for XCR0 is what CPUID leaf 0xD says."""
    p = host.current()
    if host.platform_problem():
        pytest.skip(host.platform_problem())
    layout = xsave.layout()
    assert layout.profile is p
    assert layout.size(p.xcr0) >= 576 and all(o + s <= layout.size(p.xcr0) for o, s in p.components.values())


def test_the_frame_fixture_is_at_siginfo_offset():
    assert SIGINFO_OFFSET == 304 and Frame.fpregs.offset == 8 * (GREGS + 23)


@pytest.mark.parametrize("name", PROFILES)
def test_the_compacted_alignment_bits_are_the_recorded_cpuids(name):
    text = (HOSTS / name / "cpuid.txt").read_text()
    want = set()
    for line in text.splitlines():
        if line.startswith("leaf_0xd.") and int(line.split(".")[1].split(":")[0]) >= 2:
            number = int(line.split(".")[1].split(":")[0])
            ecx = int(line.split("ecx=")[1].split()[0], 16)
            if ecx & 2 and number in profile(name).components:
                want.add(number)
    assert profile(name).aligned == want
