"""The native forms' fast path: ``fast(registers, machine)`` without a `Cpu`.

A compiled Python form (`regmap.x86.compiler`) gives `Emulator.step` and the
in-process site cache a function over the machine's register *namespace*
(``registers.zmm0`` is basis register zmm0).  A native form gets one too, for
its common shape: an explicit operand (no segment base), in the window, over
plain registers (general, vector, opmask: not the rip, rflags or mxcsr slots,
whose rules the `Cpu` keeps), the registers iced-x86 says it uses moved
through the plan's `Transfer`.  Per window address it keeps the placed code
and the register slices of the bytes it reads and writes.  Anything else --
another address shape, a gather, a state save or restore, an rsp operand, an
implicit pointer, a hole -- raises `Declined` having changed nothing, and the
generic path (`family.execute`) runs.  The effect is the generic path's:
changed registers, then the window stores over them, then rip.
"""
from __future__ import annotations

import signal
from operator import attrgetter

from regmap.errors import LayoutError
from regmap.x86.compiler import Declined
from regmap.x86.native import engine, host, region as _region
from regmap.x86.native.region import GPRS, SHADOW_SIZE

M64 = (1 << 64) - 1
PLAIN = frozenset(GPRS) | {f"zmm{i}" for i in range(32)} | {f"k{i}" for i in range(8)}
ADDRESSES = 64          # placements kept per form (an instruction that walks the window is rare)
ILLEGAL = 1 << signal.SIGILL


class _Placement:
    """The form at one window address: its placed code, the slices of the bytes it reads or may
    leave unchanged (``pieces``: the shadow page's content) and of the bytes it stores."""

    __slots__ = ("native", "pieces", "writes")

    def __init__(self, native: bytes, reads, writes):
        self.native, self.writes = native, writes
        self.pieces = reads + [(start, size, slices) for start, size, _, slices in writes]


def compile_native(form, layout):
    """``form``'s fast function, or None if its shape always takes the generic path."""
    plan = form.native
    operand = form.memory[0].operand if form.memory else None
    if (plan is None or plan.refusal or plan.kind != "explicit" or plan.whole or plan.swap
            or operand is None or operand.segment_base is not None or layout.size > SHADOW_SIZE
            or host.platform_problem()):
        return None
    transfer = plan.transfer("fcw" in layout.registers.registers)
    names, index = transfer.names, transfer.index
    registers = attrgetter(*names)
    flags_at, mxcsr_at, rsp_at = index["rflags"], index["mxcsr"], index.get("rsp")
    base, scaled = _address_part(operand.base), _address_part(operand.index)
    displacement, scale, address_mask = operand.displacement, operand.scale, operand.address_mask
    length = len(form.code)
    region = _region.ensure()
    placements: dict[int, _Placement | None] = {}

    def describe() -> str:
        return f"{form.code.hex(' ')} ({form.disassembly})"

    def placement(ea: int) -> _Placement | None:
        if len(placements) >= ADDRESSES:
            placements.clear()
        placed = placements[ea] = _place(plan, layout, ea)
        return placed

    def fast(r, m):
        ea = displacement
        if base is not None:
            ea += getattr(r, base[0]) >> base[1] & base[2]
        if scaled is not None:
            ea += (getattr(r, scaled[0]) >> scaled[1] & scaled[2]) * scale
        ea &= address_mask
        placed = placements[ea] if ea in placements else placement(ea)
        if placed is None:
            raise Declined
        before = list(registers(r))
        window = [(start, _read(r, slices).to_bytes(size, "little")) for start, size, slices in placed.pieces]
        try:
            after, stored = engine.run_transfer(region, placed.native, transfer, before,
                                                plan.signals(before[flags_at], before[mxcsr_at]),
                                                window, placed.writes, describe)
        except engine.NativeFault as fault:
            raise engine.delivered(fault, form, region) from None
        if plan.routed & ILLEGAL:
            plan.ran()
        if rsp_at is not None:
            after[rsp_at] = before[rsp_at]        # an address register only: the engine's stack ran
        changed = {name: new for name, old, new in zip(names, before, after) if new != old}
        for (start, size, always, slices), new in zip(placed.writes, stored):
            if always:
                _store(r, changed, slices, int.from_bytes(new, "little"))
                continue
            old = next(data for at, data in window if at == start and len(data) == size)
            for low, high in engine.changed_runs(old, new):
                _store(r, changed, layout.resolve(start + low, high - low), int.from_bytes(new[low:high], "little"))
        next_ip = r.rip + length
        for name, value in changed.items():
            setattr(r, name, value)
        r.rip = next_ip

    fast.placements = placements
    return fast


def _address_part(register):
    """``(basis, lo, mask)`` of an address register operand, or None."""
    return None if register is None else (register.basis, register.lo, register.mask)


def _place(plan, layout, ea: int) -> _Placement | None:
    """The placement at window address ``ea``, or None where the generic path must decide."""
    located = plan.ranges(ea, layout.size)
    if located is None:
        return None
    reads, writes = located
    try:
        read_slices = [(start, size, layout.resolve(start, size)) for start, size, _ in reads]
        write_slices = [(start, size, always, layout.resolve(start, size)) for start, size, always in writes]
    except LayoutError:
        return None
    for _, _, slices in read_slices:
        if any(basis not in PLAIN for basis, _, _ in slices):
            return None
    for *_, slices in write_slices:
        if any(basis not in PLAIN for basis, _, _ in slices):
            return None
    return _Placement(engine.place_at(plan.code, ea), read_slices, write_slices)


def _read(r, slices) -> int:
    """The window bytes over ``slices`` (most significant first) as an integer."""
    value = 0
    for basis, hi, lo in slices:
        width = hi - lo + 1
        value = value << width | (getattr(r, basis) >> lo & (1 << width) - 1)
    return value


def _store(r, changed: dict, slices, value: int) -> None:
    """A window store over ``slices``, on top of the registers the instruction changed."""
    for basis, hi, lo in reversed(slices):
        width = hi - lo + 1
        mask = ((1 << width) - 1) << lo
        current = changed[basis] if basis in changed else getattr(r, basis)
        changed[basis] = (current & ~mask) | ((value << lo) & mask)
        value >>= width
