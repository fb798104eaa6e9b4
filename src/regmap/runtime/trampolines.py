"""Trampolines in-process: where they live, and faults inside them mapped back onto their sites.

`regmap.x86.trampoline` builds a site's trampoline; this module places it in
a code region within ±2 GiB of the site (``jmp rel32`` reaches it), writes
it through /proc/self/mem (the region is mapped read+execute and stays so)
and hands `regmap.runtime.patch` the site's new bytes, which it writes with
the same protocol as a register form.

Trampolines are never freed: after `unmap_registers()` has put a site's
bytes back, a thread may still be inside its trampoline, and finishes there.
A forked child inherits the regions and this table; exec drops both.

Faults.  Only the moved instruction in a trampoline can fault (#GP, #AC,
#DE, #XM, #MF, #UD).  `TABLE` maps its address to its trampoline; a fault
there is turned back into the site's own (`map_back`: rsp and the base
register restored, rip the site's, si_addr the site where the kernel gave the
faulting instruction's address) before it is delivered like any fault of an
emulated instruction (`regmap.runtime.genuine`).  SIGSEGV and SIGBUS reach
regmap's handler anyway; SIGFPE and SIGILL get a handler of their own from
the first trampoline on (`install_handlers`), which passes every other one
on untouched, as `patch.forward_trap` does for SIGTRAP.  With fast faults on
(the default) that is any program whose sites fault often, so the program's
own handler is reached from machine code after the Python part has returned
(`_entry_code`): a SIGFPE handler that ``siglongjmp``-s away leaves nothing of
regmap's behind it.

Register-addressed sites (`place_stub`, `regmap.x86.stub`): the site jumps to
a stub, placed with the trampoline for the window address the site was hot
with right after it.  The stub's copy of the instruction is in `TABLE` too
(a `Copy`: no frame, no base).  Its fault is the site's with rip moved back
alone: a page fault in the window is emulated at the site from the site's own
bytes (`fault_inside` leaves the `Copy` in ``machine.original``), anything
else is delivered as the site's (`genuine_fault`, `deliver`: through
`genuine.deliver_fault`, since running the site again would fault in the
stub).  With fast faults the copy is a site of its own for the handler's
machine code (`CopySite`): its trampolines, planned at the copy's address,
map their faults back to the copy and so on to the site.

An asynchronous signal delivered while a thread is inside a trampoline shows
the trampoline's rip in its ucontext, rsp lowered by the trampoline's frame
and the base register holding the scratch address: the program's handler may
look at that state and return, and the trampoline finishes; regmap does not
rewrite it (a handler that longjmps away leaves the base register changed).
"""
from __future__ import annotations

import ctypes
from typing import NamedTuple

from regmap.procmaps import gaps_near
from regmap.runtime import _sys, genuine
from regmap.x86 import host, stub
from regmap.x86.stub import Copy
from regmap.x86.trampoline import SAVED_BASE, Declined, Trampoline, build, plan
from regmap.x86.translate import Translation

REGION_SIZE = 1 << 16          # one mapping holds many trampolines
REACH = (1 << 31) - REGION_SIZE   # a rel32 jump from the site reaches anywhere in the region
LOWEST = 1 << 16               # below vm.mmap_min_addr's usual value: never asked for
ALIGN = 16
MAP_FIXED_NOREPLACE = 0x100000  # Linux >= 4.17

TABLE: dict[int, Trampoline | Copy] = {}   # moved (or copied) instruction's address -> its entry
PUNNED: dict[int, int] = {}     # a short site's next instruction's old address -> its copy
REGIONS: list[list[int]] = []            # [start, end, next free address]


class Fault(NamedTuple):
    """A CPU exception as `genuine.deliver_fault` takes it."""
    signo: int
    si_code: int
    si_addr: int | None


def translate(site: int, code: bytes, layout, at: int | None = None) -> Translation | None:
    """Build and place the trampoline of the instruction `code` at `site`: the Translation the
    site becomes (a ``jmp``), or None if it gets none.  `at`: the window address a
    register-addressed operand had, whose site gets a stub (`place_stub`)."""
    if at is not None:
        placed = place_stub(site, code, layout, at)
        return None if placed is None else Translation(
            site, placed.old, placed.jump, placed.old_text, placed.new_text, "register-addressed")
    trampoline = place(site, code, layout)
    if trampoline is None:
        return None
    return Translation(site, trampoline.old, trampoline.jump, trampoline.old_text,
                       trampoline.new_text, "trampoline")


def place(site: int, code: bytes, layout, at: int | None = None) -> Trampoline | None:
    """The trampoline of the instruction `code` at `site`, written within reach of the site
    (for a register-addressed operand, the one for window address `at`), or None if it gets
    none."""
    width = host.vector_width()
    try:
        p = plan(site, code, layout, width, at)
        size = len(build(p, site, width).code)   # the same length anywhere: its jumps are rel32
        address = _room(site, size)
        if address is None:
            return None
        trampoline = build(p, address, width)
    except Declined:
        return None
    if not _sys.write_code(address, trampoline.code):
        return None
    install_handlers()
    TABLE[trampoline.instruction] = trampoline
    return trampoline


def place_stub(site: int, code: bytes, layout, at: int) -> stub.Stub | None:
    """The stub of the register-addressed instruction `code` at `site` and, right after it, the
    trampoline for window address `at`, written within reach of the site; or None."""
    width = host.vector_width()
    try:
        p = plan(site, code, layout, width, at)
        room = stub.size(site, code, at)
        address = _room(site, room + len(build(p, site, width).code), stub.pun(site, code))
        if address is None:
            return None
        # (a short site's trampoline returns to the copy of the instruction after it)
        moved = stub.build(site, code, at, address, address, pun=False).follower or None
        trampoline = build(p, address + room, width, exit=moved)
        placed = stub.build(site, code, at, address, trampoline.address)
    except Declined:
        return None
    if not (_sys.write_code(trampoline.address, trampoline.code)
            and _sys.write_code(address, placed.code)):
        return None
    install_handlers()
    TABLE[trampoline.instruction] = trampoline
    for entry in stub.copies(placed):
        TABLE[entry.instruction] = entry
    if placed.boundary:
        PUNNED[placed.boundary] = placed.follower
    return placed


def _room(site: int, size: int, pun: stub.Pun | None = None) -> int | None:
    """`size` bytes of code within reach of `site`: in a region already mapped, or a new one.
    `pun`: a short site's jump, which must pun where its stub is (`regmap.x86.stub`)."""
    for region in REGIONS:
        start, end, free = region
        at = free if pun is None else stub.punned_from(pun, free, ALIGN)
        if at + size <= end and abs(start - site) < REACH and abs(end - site) < REACH:
            region[2] = (at + size + ALIGN - 1) // ALIGN * ALIGN
            return at
    start = _map_near(site) if pun is None else _map_punned(pun)
    if start is None:
        return None
    REGIONS.append([start, start + REGION_SIZE, start])
    return _room(site, size, pun)


def _map_punned(pun: stub.Pun) -> int | None:
    """A new region holding an address a short site's jump puns to (`stub.pun_windows`)."""
    return _map_first([window & ~0xFFF for window in stub.pun_windows(pun, REACH, REGION_SIZE)
                       if window & ~0xFFF >= LOWEST])


def _map_near(site: int) -> int | None:
    """A new read+execute region in a gap of the address space as near `site` as there is."""
    try:
        return _map_first(gaps_near("self", site, REGION_SIZE, REACH, LOWEST))
    except (OSError, ValueError):
        return None


def _map_first(candidates) -> int | None:
    """A new read+execute region at the first of `candidates` where nothing is mapped yet."""
    for at in candidates:
        got = _sys.LIBC_HELD.mmap(at, REGION_SIZE, _sys.PROT_READ | _sys.PROT_EXEC,
                                  _sys.MAP_PRIVATE | _sys.MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                                  -1, 0)
        if got == at:
            return at
        if got not in (None, _sys.MAP_FAILED):
            _sys.unmap(got, REGION_SIZE)       # an old kernel took the address as a hint only
    return None


# -- faults inside a trampoline ------------------------------------------------------------------

def map_back(frame) -> Trampoline | Copy | None:
    """If the frame stopped on a trampoline's moved instruction (or a stub's copied one), make
    it the site's: the state the instruction had there (rsp, the base register), rip the site,
    si_addr the site where it was the instruction's address.  The entry, or None (the frame is
    left alone)."""
    entry = TABLE.get(frame.rip)
    if entry is None:
        return None
    if isinstance(entry, Trampoline):
        setattr(frame, entry.base, ctypes.c_uint64.from_address(frame.rsp + SAVED_BASE).value)
        frame.rsp += entry.frame
    _to_site(frame, entry)
    copy = TABLE.get(frame.rip) if isinstance(entry, Trampoline) else None
    if isinstance(copy, Copy):      # a trampoline of a stub's copy (`CopySite`): on to the site
        _to_site(frame, copy)
    return entry


def _to_site(frame, entry: Trampoline | Copy) -> None:
    """rip the entry's site, and si_addr too where it was the entry's instruction."""
    frame.rip = entry.site
    if frame.si_addr == entry.instruction:
        frame.si_addr = entry.site


def fault_inside(signo: int, info: int, machine, state) -> bool:
    """regmap's SIGSEGV/SIGBUS handler: a fault of a trampoline's instruction goes on as the
    site's (as an emulated instruction's exception would): True.  False if it is not one, or
    if it was a stub's copy of its site's instruction: the frame is then the site's, and the
    site's own bytes (`machine.original`) are emulated there as its own fault would be."""
    frame = machine.frame
    entry = map_back(frame)
    if entry is None:
        return False
    if isinstance(entry, Copy):
        machine.original = entry
        return False
    deliver(signo, info, machine, state)
    return True


class CopySite(NamedTuple):
    """A stub's copy of its site's instruction as `regmap.runtime.dispatch.learn` takes a site:
    its faults at other window addresses are then sent to trampolines by the handler's machine
    code (planned at the copy's address: they jump back to the stub's ``jmp`` to the site's next
    instruction, and a fault inside one is mapped back to the copy, then to the site), not
    emulated in Python every time."""
    address: int
    code: bytes
    mnemonic: str | None
    count: int              # the site's
    in_place: bool = True


def copy_site(copy: Copy, site) -> CopySite:
    return CopySite(copy.instruction, copy.old, site.mnemonic, site.count)


def site_of(address: int) -> int:
    """The site whose stub's copy is at `address`, or `address` itself."""
    entry = TABLE.get(address)
    return entry.site if isinstance(entry, Copy) else address


def genuine_fault(signo: int, info: int, machine, state) -> bool:
    """A fault the CPU raised outside the window at a stub's copied instruction: delivered as
    the site's (True); False if it is not one (the frame is left alone)."""
    frame = machine.frame
    if not 0 < frame.si_code <= _sys.SI_KERNEL or not isinstance(TABLE.get(frame.rip), Copy):
        return False
    map_back(frame)
    deliver(signo, info, machine, state)
    return True


def deliver(signo: int, info: int, machine, state) -> None:
    """The mapped-back fault, as the site's instruction raised it.  (Through `genuine.deliver_fault`,
    not `forward`: where the process dies of it, running the site again would fault in the stub
    or trampoline, not at the site.)"""
    frame = machine.frame
    genuine.deliver_fault(signo, info, machine, Fault(signo, frame.si_code, frame.si_addr), state)


# the Python part of the handler: it returns where the handler's entry goes on to (0: nowhere)
HANDLER_TYPE = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
SIGILL = 4
OWN_SIGNALS = (_sys.SIGFPE, SIGILL)
PREVIOUS: dict[int, _sys.KernelSigaction] = {}
INSTALLED: dict[int, tuple] = {}     # signal -> regmap's disposition as installed (its key)
_KEEP_ALIVE: list = []


def on_signal(signo: int, info: int, ctx: int) -> int:
    """SIGFPE/SIGILL: mapped back if raised inside a trampoline, then passed on as it was: the
    address of the handler regmap replaced, which the entry (`_entry_code`) jumps to once this
    has returned, or 0."""
    try:
        from regmap.runtime.frame import Frame
        frame = Frame.from_address(ctx)
        if 0 < frame.si_code <= _sys.SI_KERNEL:
            map_back(frame)
        return forward(signo, info, frame)
    except BaseException:  # noqa: BLE001 - nothing may escape a signal handler
        _sys.set_action(signo, PREVIOUS.get(signo, _sys.KernelSigaction()))
        return 0


def forward(signo: int, info: int, frame) -> int:
    """To the handler regmap replaced: its address, the thread's signal mask and a one-shot
    handler's reset already as the kernel would make them.  Under SIG_DFL/SIG_IGN, 0: the same
    siginfo is queued again with the default action, delivered as the handler returns (to the
    mapped-back state).

    The program's handler is jumped to by machine code after Python has returned, not called
    from here: a handler that never returns (``siglongjmp`` out of a SIGFPE, as numeric code
    does) would otherwise leave this callback's frame, and the GIL, behind it."""
    previous = PREVIOUS[signo]
    sent = frame.si_code <= 0
    if previous.handler == _sys.SIG_IGN and sent:
        return 0
    if previous.handler in (_sys.SIG_DFL, _sys.SIG_IGN):
        genuine.queue_as_the_cpu_would(frame, signo, frame.si_code, frame.si_addr) if not sent \
            else _sys.queue_to_self(signo, ctypes.string_at(info, 128))
        default = _sys.KernelSigaction.from_buffer_copy(previous)
        default.handler = _sys.SIG_DFL
        _sys.set_action(signo, default)
        return 0
    genuine.enter_previous(previous, signo, frame.sigmask)
    return previous.handler


def _entry_code(python: int):
    """handler(signo, info, ctx): the Python part (`on_signal`, behind the thread-state
    prologue), then on to the address it returned, if any (`regmap.runtime.onward`)."""
    from iced_x86 import Code, Instruction, Register

    from regmap.runtime.onward import call_then_go_on
    from regmap.x86.machine_code import Labels, assemble

    def generate(base: int) -> bytes:
        call = [Instruction.create_reg_u64(Code.MOV_R64_IMM64, Register.RAX, python),
                Instruction.create_reg(Code.CALL_RM64, Register.RAX)]
        return assemble(call_then_go_on(Labels(), call), base)
    return generate


def install_handlers() -> None:
    """SIGFPE and SIGILL through `on_signal`, from the first trampoline until unmapping."""
    if PREVIOUS:
        return
    from regmap.runtime import threadstate
    from regmap.x86.machine_code import code_page
    callback = HANDLER_TYPE(on_signal)
    _KEEP_ALIVE.append(callback)
    python = threadstate.entry(ctypes.cast(callback, ctypes.c_void_p).value)
    address = code_page(_entry_code(python), 0x100)     # never unmapped: a thread may be in it
    flags = _sys.SA_SIGINFO | _sys.SA_ONSTACK | _sys.SA_RESTART
    for signo in OWN_SIGNALS:
        PREVIOUS[signo] = _sys.install_handler(signo, address, flags, (signo,))
        INSTALLED[signo] = _sys.get_action(signo).key()


def uninstall_handlers() -> None:
    """Put back what regmap replaced, unless the program has installed a handler of its own
    since (as `handler.uninstall` does for SIGSEGV and SIGBUS)."""
    for signo, previous in list(PREVIOUS.items()):
        if _sys.get_action(signo).key() == INSTALLED.get(signo):
            _sys.set_action(signo, previous)
    PREVIOUS.clear()
    INSTALLED.clear()
