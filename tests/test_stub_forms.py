"""Register-addressed sites through their stubs (`regmap.x86.stub`), against the untranslated run.

Forms are drawn with a register address (a base, base + index, an index; 5 bytes or more); each
trial (tests/test_trampoline_forms' harness: every register, flag, the x87/SSE and vector state in
and out, a fault recorded by a handler in assembly) first runs twice with the address the form was
drawn for, so that with translate=2 its site becomes a ``jmp`` to its stub, whose window trampoline
is planned for that address.  Then every trial runs from random states whose address registers
give (a) that window address, (b) another window address, (c) a buffer of real memory, (d) a
window hole, the page after the window and a non-canonical address: the stub's own choice, its
copy of the instruction emulated at the site, run against memory, and genuine faults.  Each must
give the same registers, flags, vector and x87 state, memory, or the same signal, si_code, si_addr
and registers, as with every execution emulated (translate=0).
"""
from __future__ import annotations

import ctypes
import dataclasses
import random
import subprocess
import sys
from pathlib import Path

import pytest
from iced_x86 import Code, Decoder, Register, RegisterExt

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from forms import random_form  # noqa: E402
from runtime_build import assembled, in_threads  # noqa: E402
from test_dispatch_forms import dispatchable, state_for  # noqa: E402
from test_runtime_trampoline import GPRS, HANDLER  # noqa: E402
from test_trampoline_forms import (LAYOUT, REASON, _default_fx, build_trials, caught,  # noqa: E402
                                   draw_forms, run, trial_source)

import regmap  # noqa: E402
from regmap.x86 import host, stub  # noqa: E402
from regmap.x86.operands import REGISTER_NAMES  # noqa: E402
from regmap.x86.trampoline import JUMP_LENGTH, Declined, plan  # noqa: E402

pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
SHAPES = ("base", "base+index", "index")
BUFFER = 4096
# window bytes (rsp, rip, rflags) a random write to which would leave the trial (or trap)
UNSAFE = [(p.address, p.address + p.size) for p in LAYOUT.placements() if p.name in ("rsp", "rip", "rflags")]
__all__ = ["caught"]       # the fixture, used by name


def stubbed(form) -> bool:
    """Whether the form gets a stub, and a window trampoline for the address it was drawn for
    (5 bytes or more: a shorter site's stub moves the trial's next instruction too, which
    touches the state: test_short_stubs has those)."""
    try:
        stub.decode(0x401000, form.bytes)
    except Declined:
        return False
    return len(form.bytes) >= JUMP_LENGTH and dispatchable(form)


def forms(rng: random.Random) -> list:
    return draw_forms(rng, SHAPES, stubbed, avoid=frozenset({"rsp"}))


FOLLOWER = bytes.fromhex("49 f7 d7")      # not r15: it must run once, after the site


def short_forms(rng: random.Random) -> list:
    """Forms of fewer bytes than a jmp rel32 (``[base]``, ``[base + disp8]``), each followed by
    `FOLLOWER`, which moves into the stub with it: its ``bytes`` are both instructions'."""
    def short(form) -> bool:
        try:
            stub.decode(0x401000, form.bytes)
        except Declined:
            return False
        return len(form.bytes) < JUMP_LENGTH and dispatchable(form)
    return [dataclasses.replace(form, bytes=form.bytes + FOLLOWER)
            for form in draw_forms(rng, ("base",), short, avoid=frozenset({"rsp"}))]


@pytest.fixture(scope="module", params=["5 bytes or more", "short"])
def trials(tmp_path_factory, request):
    chosen = forms(random.Random(47)) if request.param != "short" else short_forms(random.Random(61))
    return build_trials(tmp_path_factory.mktemp("stub-forms"), chosen), chosen


def registers_for(form, target: int) -> dict | None:
    """The form's address registers set so that its operand's address is `target` (one of them
    moved, the other as drawn), or None if no value does it."""
    ins = Decoder(64, form.bytes).decode()
    a32 = RegisterExt.is_gpr32(ins.memory_base) or RegisterExt.is_gpr32(ins.memory_index)
    mask = (1 << (32 if a32 else 64)) - 1
    if a32 and target > mask:
        return None
    name = lambda r: REGISTER_NAMES[RegisterExt.full_register(r)]      # noqa: E731
    free = ins.memory_base if ins.memory_base != Register.NONE else ins.memory_index
    factor = (ins.memory_base == free) + (ins.memory_index == free) * ins.memory_index_scale
    rest = ins.memory_displacement
    if ins.memory_index not in (Register.NONE, free):
        rest += form.fixed[name(ins.memory_index)] * ins.memory_index_scale
    need = (target - rest) & mask
    for wraps in range(factor):      # need + k * 2**width divisible by factor
        if (need + wraps * (mask + 1)) % factor == 0:
            value = (need + wraps * (mask + 1)) // factor & mask
            return {**form.fixed, name(free): value}
    return None


def with_registers(state: bytes, registers: dict) -> bytes:
    state = bytearray(state)
    for register, value in registers.items():
        at = 8 * GPRS.index(register)
        state[at:at + 8] = (value & (1 << 64) - 1).to_bytes(8, "little")
    return bytes(state)


def cases(rng: random.Random, form, fx: bytes, memory: int) -> list[bytes]:
    """States for (a) the planned address, (b) another window address, (c) real memory,
    (d) a window hole, the page after the window, a non-canonical address."""
    others = [at for at in range(0, 0x300 - form.size, 4) if not any(
        at < end and start < at + form.size for start, end in UNSAFE)]
    targets = [form.offset, rng.choice(others), rng.choice(others),
               memory + form.offset % 64 + rng.choice((0, 64)),
               rng.randrange(0x94, 0x100 - form.size), rng.randrange(0x300, 0x1000 - form.size),
               0x1000 + rng.randrange(0, 64), 0x8000_0000_0000_0000]
    states = []
    for target in targets:
        for nearby in range(8):       # a near address where an index's scale cannot reach this one
            registers = registers_for(form, target + nearby)
            if registers is not None:
                states.append(with_registers(state_for(rng, form, fx), registers))
                break
    return states


def trial(lib, index: int, state: bytes, memory) -> tuple:
    ctypes.memmove(memory, bytes(range(256)) * (BUFFER // 256), BUFFER)
    return run(lib, index, state) + (memory.raw,)


def test_every_register_addressed_form_through_its_stub_runs_as_untranslated(trials, caught):
    lib, chosen = trials
    rng = random.Random(53)
    fx = _default_fx()
    memory = ctypes.create_string_buffer(BUFFER)
    low = (ctypes.addressof(memory) + 63) // 64 * 64 + 64
    states = [cases(rng, form, fx, low) for form in chosen]
    with regmap.mapped(translate=0, fast_faults=False):
        untranslated = [[trial(lib, i, s, memory) for s in form_states]
                        for i, form_states in enumerate(states)]
    with regmap.mapped(translate=2, fast_faults=False):
        for i, form_states in enumerate(states):       # hot with the address it was drawn for
            run(lib, i, form_states[0])
            run(lib, i, form_states[0])
        through = [[trial(lib, i, s, memory) for s in form_states] for i, form_states in enumerate(states)]
        kinds = {t.address: t.kind for t in regmap.stats().translated}
        sites = [ctypes.cast(getattr(lib, f"site_{i}"), ctypes.c_void_p).value for i in range(len(chosen))]
        stubbed = [i for i, site in enumerate(sites) if kinds.get(site) == "register-addressed"]
        # the planned address goes through the window trampoline: no fault at all
        regmap.runtime.reset_stats()
        quiet = [i for i in stubbed if untranslated[i][0][0] == "ran"]
        for i in quiet:
            run(lib, i, states[i][0])
        assert regmap.stats().emulated == 0, [(chosen[i].instruction, chosen[i].fixed, chosen[i].offset) for i in quiet if sites[i] in regmap.stats().by_site]
    with regmap.mapped(translate=2, fast_faults=1):
        # the same with fast faults: a copy's fault at another window address is sent to a
        # trampoline by the handler's machine code from its second time on
        for i, form_states in enumerate(states):
            run(lib, i, form_states[0])
            run(lib, i, form_states[0])
        regmap.runtime.reset_stats()
        twice = [[(trial(lib, i, s, memory), trial(lib, i, s, memory)) for s in form_states]
                 for i, form_states in enumerate(states)]
        dispatched = regmap.stats().dispatched
    wrong = [(chosen[i].instruction, chosen[i].address_shape, j) for i in stubbed
             for j in range(len(states[i]))
             if not through[i][j] == twice[i][j][0] == twice[i][j][1] == untranslated[i][j]]
    assert dispatched > len(stubbed)
    print(f"{len(chosen)} register-addressed forms drawn, {len(stubbed)} run through their stubs, "
          f"{sum(len(states[i]) for i in stubbed)} states")
    assert not wrong, f"{len(wrong)} differ: {wrong[:20]}"
    assert len(stubbed) > min(100, len(chosen) // 2) and len(quiet) > min(100, len(chosen) // 3)
    # unmapping put every site's own bytes back
    assert all(ctypes.string_at(sites[i], len(chosen[i].bytes)) == chosen[i].bytes for i in stubbed)
    assert sum(1 for i in stubbed for s in untranslated[i] if s[0] == "fault") > len(stubbed)


@pytest.mark.parametrize("text, reason", [
    ("mov rax, qword ptr [rsp + 0x100]", "rsp in the address"),
    ("mov rax, qword ptr [rip + 0x100]", "rip-relative"),
    ("vpgatherdd xmm1, dword ptr [rax + xmm2*4 + 0x100], xmm3", "vsib"),
    ("mov rax, qword ptr fs:[rdi + 0x100]", "segment override"),
    ("mov rdi, qword ptr [rdi + 0x100]", "writes a register of its own address"),
    ("mov rax, qword ptr [0x100]", "a constant address"),
])
def test_a_stub_is_declined_with_the_reason(tmp_path, text, reason):
    source = tmp_path / "one.s"
    source.write_text(f".intel_syntax noprefix\n{text}\n")
    subprocess.run(["as", "-o", tmp_path / "one.o", source], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", tmp_path / "one.o", tmp_path / "one"],
                   check=True)
    with pytest.raises(Declined, match=reason):
        stub.decode(0x401000, (tmp_path / "one").read_bytes())


def test_bit_offsets_string_forms_and_branches_are_declined_by_the_window_trampoline():
    for code in ("48 0f a3 87 00 01 00 00",      # bt [rdi + 0x100], rax
                 "ff a7 00 01 00 00"):           # jmp [rdi + 0x100]
        with pytest.raises(Declined):
            plan(0x401000, bytes.fromhex(code), LAYOUT, host.vector_width(), 0x100)
    with pytest.raises(Declined, match="no explicit"):
        stub.decode(0x401000, bytes.fromhex("f3 48 a5 90 90"))      # rep movsq


LOOP = """
    .intel_syntax noprefix
    .text
    .globl stub_loop
stub_loop:                      # (n, value, &value): n * value, odd iterations from memory
    push rbx
    mov rcx, rsi                # the window's bytes 8..15
    lea rbx, [rdx - 0x100]
    mov r10, -0xF8
    xor eax, eax
1:  mov r9, r10
    test dil, 1
    cmovnz r9, rbx
    .globl stub_site
stub_site:
    add rax, qword ptr [r9 + 0x100]
    dec rdi
    jnz 1b
    pop rbx
    ret
    .section .note.GNU-stack,"",@progbits
"""


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    lib = assembled(tmp_path_factory.mktemp("stub-loop"), LOOP, "stubloop")
    lib.stub_loop.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p]
    lib.stub_loop.restype = ctypes.c_long
    return lib


def test_eight_threads_run_a_site_while_it_becomes_a_stub(loop):
    from regmap.runtime import patch
    if not patch.sync_core_available():
        pytest.skip("membarrier SYNC_CORE is not available: threads are never patched")
    import threading
    regmap.unmap_registers()
    regmap.runtime.reset_stats()
    results: dict[int, int] = {}
    start = threading.Barrier(8)

    def work(index: int) -> None:
        value = ctypes.c_long(index + 1)
        start.wait()
        results[index] = loop.stub_loop(100_000, index + 1, ctypes.addressof(value))

    with regmap.mapped(translate=2000, fast_faults=False):
        in_threads(work, 8)
        translated = regmap.stats().translated
    site = ctypes.cast(loop.stub_site, ctypes.c_void_p).value
    assert results == {i: 100_000 * (i + 1) for i in range(8)}
    assert [(t.address, t.kind) for t in translated] == [(site, "register-addressed")]
    assert site in patch.PLANTED        # the int3 protocol was used
    assert ctypes.string_at(site, 7) == bytes.fromhex("49 03 81 00 01 00 00")   # put back


def test_a_forked_child_keeps_its_stubs(loop):
    import os
    regmap.unmap_registers()
    regmap.runtime.reset_stats()          # (the site's count starts again)
    value = ctypes.c_long(5)
    with regmap.mapped(translate=3, fast_faults=False):
        assert loop.stub_loop(100, 5, ctypes.addressof(value)) == 500
        emulated = regmap.stats().emulated
        pid = os.fork()
        if pid == 0:    # pragma: no cover - the child
            ok = loop.stub_loop(1000, 5, ctypes.addressof(value)) == 5000 \
                and regmap.stats().emulated == emulated
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert loop.stub_loop(1000, 5, ctypes.addressof(value)) == 5000
        assert regmap.stats().emulated == emulated == 3


def test_a_fault_inside_a_copys_trampoline_is_the_sites_own(tmp_path):
    """``div qword [r9 + 0x100]`` hot with rbx's slot; then rsi's slot, whose page fault at the
    stub's copy plans a trampoline there for the handler's machine code; a zero divisor there
    raises #DE inside that trampoline: the program's handler gets the site's SIGFPE, rip and
    registers, as untranslated."""
    from regmap.runtime import _sys
    lib = assembled(tmp_path, ".intel_syntax noprefix\n.text\n" + HANDLER
                    + trial_source(0, bytes.fromhex("49 f7 b1 00 01 00 00"))   # div qword [r9+0x100]
                    + '.section .note.GNU-stack,"",@progbits\n', "divide")
    lib.trial_0.argtypes, lib.trial_0.restype = [ctypes.c_void_p], ctypes.c_long
    rng = random.Random(61)
    form = random_form(Code.DIV_RM64, rng, shapes=("base",))
    base = bytearray(state_for(rng, form, _default_fx()))

    def state(slot: int, divisor: int) -> bytes:
        registers = {"r9": slot - 0x100, "rdx": 0, "rax": 1000, "rbx": 7, "rsi": divisor}
        return with_registers(bytes(base), registers)
    planned, other, zero = state(0x18, 0), state(0x30, 3), state(0x30, 0)
    regmap.unmap_registers()
    regmap.runtime.reset_stats()
    address = ctypes.cast(lib.catcher, ctypes.c_void_p).value
    previous = {signo: _sys.install_handler(signo, address, _sys.SA_SIGINFO, ()) for signo in (8, 11)}
    try:
        with regmap.mapped(translate=0, fast_faults=False):
            expected = [run(lib, 0, s) for s in (planned, other, zero)]
        with regmap.mapped(translate=2, fast_faults=1):
            run(lib, 0, planned)
            run(lib, 0, planned)
            run(lib, 0, other)                   # the copy's page fault, emulated: planned
            regmap.runtime.reset_stats()
            got = [run(lib, 0, s) for s in (planned, other, zero)]
            stats = regmap.stats()
    finally:
        regmap.unmap_registers()
        for signo, action in previous.items():
            _sys.set_action(signo, action)
    assert [kind for kind, _ in expected] == ["ran", "ran", "fault"]
    assert got == expected
    assert [t.kind for t in stats.translated] == ["register-addressed"]
    assert stats.dispatched == 2 and stats.emulated == 2    # rsi's slot: by the machine code
