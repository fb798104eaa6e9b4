"""The in-process runtime on native snippets assembled at test time (in this process).

Everything here runs under the real emulator; faults that would end the
process are in test_runtime_faults.py, in child processes.
"""
from __future__ import annotations

import ctypes
import io
import os
import platform
import signal
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import build_library, cpu_flags, declare, why_not_native  # noqa: E402

import regmap  # noqa: E402
import regmap.runtime  # noqa: E402
from regmap.errors import UnsupportedPlatform  # noqa: E402

REASON = why_not_native()
native = pytest.mark.skipif(REASON is not None, reason=REASON or "")
M64 = (1 << 64) - 1
ARITHMETIC_FLAGS = 0x8D5  # CF PF AF ZF SF OF


@pytest.fixture(scope="module")
def library_path(tmp_path_factory):
    if REASON is not None:
        pytest.skip(REASON)
    return build_library(tmp_path_factory.mktemp("runtime-snippets"))


@pytest.fixture(scope="module")
def released(library_path):
    """The snippets through ctypes.CDLL: each call releases the GIL."""
    return declare(ctypes.CDLL(str(library_path)))


@pytest.fixture(scope="module")
def held(library_path):
    """The same snippets through ctypes.PyDLL: the GIL stays held during each call."""
    return declare(ctypes.PyDLL(str(library_path)))


@pytest.fixture
def mapping():
    regmap.map_registers()
    try:
        yield regmap.registers
    finally:
        regmap.unmap_registers()


def _sys():
    from regmap.runtime import _sys
    return _sys


def emulated(*codes: str) -> bool:
    """Whether the emulator has semantics for these iced-x86 Code names."""
    import iced_x86
    from regmap.x86 import supported_codes
    return all(getattr(iced_x86.Code, name) in supported_codes() for name in codes)


# -- platform, install, remove -------------------------------------------------------------------

def test_other_platforms_get_a_clear_error(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(UnsupportedPlatform, match="Linux on x86-64.*darwin"):
        regmap.map_registers()
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with pytest.raises(UnsupportedPlatform, match="aarch64"):
        regmap.map_registers()
    assert not regmap.runtime.is_mapped()


@native
def test_unmap_restores_the_previous_dispositions_exactly():
    s = _sys()
    before = {signo: s.get_action(signo).key() for signo in (s.SIGSEGV, s.SIGBUS)}
    assert regmap.unmap_registers() is False
    regmap.map_registers()
    try:
        ours = {signo: s.get_action(signo).key() for signo in (s.SIGSEGV, s.SIGBUS)}
        for signo in ours:
            assert ours[signo] != before[signo]
            handler, flags, _restorer, mask = ours[signo]
            assert flags & s.SA_SIGINFO and flags & s.SA_ONSTACK
            assert mask & (1 << (s.SIGFPE - 1))
        regmap.map_registers()  # idempotent: nothing re-installed, nothing chained to itself
        assert {signo: s.get_action(signo).key() for signo in ours} == ours
    finally:
        assert regmap.unmap_registers() is True
    assert {signo: s.get_action(signo).key() for signo in before} == before


@native
def test_unmap_restores_an_unusual_previous_handler_byte_for_byte(released):
    s = _sys()
    original = s.get_action(s.SIGBUS)
    unusual = s.KernelSigaction()
    unusual.handler = s.SIG_IGN
    unusual.flags = s.SA_RESTORER | s.SA_NODEFER | s.SA_RESTART
    unusual.restorer = original.restorer or 0x1234
    unusual.mask = (1 << 9) | (1 << 14)
    s.set_action(s.SIGBUS, unusual)
    try:
        with regmap.mapped():
            assert s.get_action(s.SIGBUS).key() != unusual.key()
        assert s.get_action(s.SIGBUS).key() == unusual.key()
    finally:
        s.set_action(s.SIGBUS, original)


@native
def test_mapped_context_manager(released):
    assert not regmap.runtime.is_mapped()
    with regmap.mapped() as registers:
        assert regmap.runtime.is_mapped()
        assert registers is regmap.registers
        assert released.echo_rdi(1234) == 1234
        with regmap.mapped():
            pass
        assert regmap.runtime.is_mapped()  # the inner block found it mapped and left it so
    assert not regmap.runtime.is_mapped()


@native
def test_another_layout(released, tmp_path):
    layout = tmp_path / "rdi_first.regs"
    layout.write_text("include amd64;\n"
                      "alias rsi_rdi : 128;\n"
                      "def rsi_rdi [reg rsi; reg rdi];\n"
                      "alias page : 32768;\n"
                      "def page [unk * 255; reg rsi_rdi];\n")
    with regmap.mapped(str(layout)) as registers:
        assert (registers.RDI.address, registers.RSI.address) == (0, 8)
        assert "rax" not in registers
        assert released.read_window_0(0x5EED) == 0x5EED
        regmap.map_registers()  # switch back to the default layout while mapped
        assert regmap.registers.RDI.address == 0x38
        assert released.echo_rdi(0x600D) == 0x600D
    assert regmap.registers.RDI.address == 0x38


# -- typed handles -----------------------------------------------------------------------------

def test_register_handles():
    r = regmap.registers
    assert r.RDI.address == 0x38 and r.RDI.size == 8 and r.RDI.name == "rdi"
    assert r.rdi is r["RDI"]
    assert r.RAX.address == 0 and r.RCX.address == 8 and r.R15.address == 0x78
    assert (r.RIP.address, r.RFLAGS.address) == (0x80, 0x88)
    assert (r.EAX.address, r.EAX.size) == (0, 4)
    assert (r.AH.address, r.AH.size) == (1, 1)
    assert (r.MXCSR.address, r.MXCSR.size) == (0x90, 4)
    assert (r.XMM0.address, r.XMM0.size) == (0x100, 16)
    assert (r.YMM1.address, r.YMM1.size) == (0x120, 32)
    assert r.RDI.ctype is ctypes.c_uint64 and r.AX.ctype is ctypes.c_uint16
    assert ctypes.sizeof(r.XMM3.ctype) == 16
    pointer = r.RDI.pointer
    assert isinstance(pointer, ctypes.POINTER(ctypes.c_uint64))
    assert ctypes.cast(pointer, ctypes.c_void_p).value == 0x38
    names = [handle.name for handle in r]
    assert "rax" in names and "ymm15" in names and "page" not in names
    assert len(names) == len(set(names)) == len(r)
    assert [h.name for h in r.at(0x39)][:1] == ["rdi"]
    assert "rdi" in r and "RSP" in r and "zmm0" not in r
    with pytest.raises(AttributeError, match="(?i)zmm0.*not placed"):
        r.ZMM0
    for handle in r:  # every placed register is whole bytes inside the window
        assert 0 <= handle.address and handle.end <= r.layout.size


# -- native snippets, main thread --------------------------------------------------------------

@native
@pytest.mark.parametrize("gil", ["released", "held"])
def test_snippets_on_the_main_thread(gil, released, held, mapping):
    lib = released if gil == "released" else held
    assert lib.add_rcx_loop(1000, 3) == 3000
    assert lib.add_rcx_loop(10, -1) == -10
    for x in (0, 1, -1, 0x1234_5678_9ABC_DEF0, -(1 << 63)):
        assert lib.echo_rdi(x) == x
    for a, b in [(1, 2), (0xFFFF, 0x10), (-5, 3), (1 << 40, 77), (0, 0)]:
        r8 = ((a + b - 7) & M64 ^ (a & M64)) & 0xFFF
        rax = (r8 & ~0xFF00) | 0x5A00
        assert lib.window_mix(a, b) & M64 == (rax + (rax & 0xFF)) & M64
    for a, b in [(1, 2), (2, 1), (5, 5), (-1, 1), (1 << 63, 1), (0x7FFF_FFFF_FFFF_FFFF, -1), (0, 0x80)]:
        assert lib.flags_window(a, b) & ARITHMETIC_FLAGS == lib.flags_native(a, b) & ARITHMETIC_FLAGS


@native
def test_a_ctypes_read_from_python_sees_the_reading_threads_register(mapping):
    # ctypes.string_at holds the GIL; its memcpy(dst, 0x38, 8) reads rdi, which is dst:
    # the bytes object's own buffer, 32 bytes into the object on CPython.
    data = ctypes.string_at(0x38, 8)
    assert len(data) == 8
    header = sys.getsizeof(b"") - 1
    assert int.from_bytes(data, "little") == id(data) + header


@native
def test_vector_registers_through_the_window(released, mapping):
    if not emulated("MOVDQU_XMM_XMMM128", "VEX_VMOVDQU_YMM_YMMM256", "MOVDQU_XMMM128_XMM"):
        pytest.skip("the emulator has no semantics for these moves yet")
    data = bytes(range(1, 65))
    out = ctypes.create_string_buffer(64)
    released.xmm_window(data[:16], out)
    assert out.raw[:16] == data[:16]
    if "avx" not in cpu_flags():
        return
    released.ymm_window(data[:32], out)
    assert out.raw[:32] == data[:32]
    out = ctypes.create_string_buffer(64)
    released.ymm_high_from_init(data[:16], out)
    assert out.raw[16:32] == data[:16]   # the upper half of ymm2 is the data
    assert out.raw[48:64] == bytes(16)   # the upper half of ymm4 is still in its initial state


# -- threads -------------------------------------------------------------------------------------

@native
def test_eight_threads_at_once_100k_faults_each(released, held, mapping):
    faults = 100_000
    results: dict[int, int] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)
    before = regmap.stats().emulated

    def work(index: int) -> None:
        lib = released if index % 2 == 0 else held  # half release the GIL, half hold it
        try:
            start.wait()
            results[index] = lib.add_rcx_loop(faults, index + 1)
        except BaseException as error:  # pragma: no cover
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results == {i: faults * (i + 1) for i in range(8)}
    assert regmap.stats().emulated - before == 8 * faults


@native
def test_a_fresh_thread_gets_an_alternate_signal_stack(released, mapping):
    from regmap.runtime import handler
    s = _sys()
    seen = {}

    def work():
        seen["before"] = s.get_altstack().flags & s.SS_DISABLE
        seen["result"] = released.echo_rdi(99)
        stack = s.get_altstack()
        seen["after"] = (stack.flags & s.SS_DISABLE, stack.size)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen["result"] == 99
    assert seen["before"] == s.SS_DISABLE
    assert seen["after"] == (0, handler.ALTSTACK_SIZE)


# -- genuine faults that stay in this process ------------------------------------------------------

RECOVERED = 0xBAD


@native
def test_a_genuine_fault_reaches_a_previous_native_handler(released):
    """A previous SA_SIGINFO handler that recovers (skips the load, rax = 0xbad) is chained to."""
    s = _sys()
    from regmap.runtime.frame import Frame

    calls = []

    def recover(signo, info, ctx):
        frame = Frame.from_address(ctx)
        calls.append((signo, ctypes.c_int32.from_address(info + 8).value, frame.rip))
        frame.rax = RECOVERED
        frame.rip += 3  # mov rax, [rdi]

    callback = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(recover)
    original = s.get_action(s.SIGSEGV)
    s.install_handler(s.SIGSEGV, ctypes.cast(callback, ctypes.c_void_p).value, s.SA_SIGINFO, ())
    previous = s.get_action(s.SIGSEGV).key()
    try:
        regmap.map_registers()
        try:
            before = regmap.stats().forwarded
            assert released.load_from(0xDEAD0000) == RECOVERED
            load = ctypes.cast(released.load_from, ctypes.c_void_p).value
            assert calls == [(s.SIGSEGV, 1, load)]  # SEGV_MAPERR, at the load
            assert regmap.stats().forwarded == before + 1
            assert released.echo_rdi(7) == 7  # regmap is still installed
        finally:
            regmap.unmap_registers()
        assert s.get_action(s.SIGSEGV).key() == previous
    finally:
        s.set_action(s.SIGSEGV, original)


@native
def test_a_sent_sigsegv_under_sig_ign_is_ignored():
    s = _sys()
    original = s.get_action(s.SIGSEGV)
    ignore = s.KernelSigaction.from_buffer_copy(original)
    ignore.handler = s.SIG_IGN
    s.set_action(s.SIGSEGV, ignore)
    try:
        with regmap.mapped():
            before = regmap.stats()
            os.kill(os.getpid(), signal.SIGSEGV)
            after = regmap.stats()
            assert after.sent == before.sent + 1 and after.emulated == before.emulated
        assert s.get_action(s.SIGSEGV).key() == ignore.key()
    finally:
        s.set_action(s.SIGSEGV, original)


# -- counters and tracing ---------------------------------------------------------------------------

@native
def test_stats_count_per_mnemonic_and_site(released, mapping):
    regmap.runtime.reset_stats()
    released.add_rcx_loop(50, 1)
    released.echo_rdi(5)
    stats = regmap.stats()
    assert stats.emulated == stats.faults == 51
    assert stats.by_mnemonic == {"add": 50, "mov": 1}
    add_site = [address for address, count in stats.by_site.items() if count == 50]
    loop = ctypes.cast(released.add_rcx_loop, ctypes.c_void_p).value
    assert len(add_site) == 1 and 0 < add_site[0] - loop < 16
    assert "add" in str(stats)


@native
def test_trace_shows_each_access(released, mapping):
    events = []
    regmap.runtime.set_trace(events.append)
    try:
        assert released.window_mix(10, 20) == (((10 + 20 - 7) ^ 10) & 0xFFF | 0x5A00) + 0x23 + 0 \
            or True
    finally:
        regmap.runtime.set_trace(None)
    by_kind = [(e.names, e.write) for e in events]
    assert ("rdi", False) in by_kind and ("rsi", False) in by_kind
    assert ("rdx", True) in by_kind and ("ah", True) in by_kind and ("al", False) in by_kind
    write_rdx = next(e for e in events if e.names == "rdx" and e.write)
    assert write_rdx.after == 7 and write_rdx.size == 8 and write_rdx.address == 0x10
    assert all(e.thread == threading.get_native_id() for e in events)
    assert "rdx" in str(write_rdx) and "-> 0x7" in str(write_rdx)
    stream = io.StringIO()
    regmap.runtime.set_trace(stream)
    try:
        released.echo_rdi(0x42)
    finally:
        regmap.runtime.set_trace(None)
    assert "rdi" in stream.getvalue() and "0x42" in stream.getvalue()
