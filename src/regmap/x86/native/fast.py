"""The native forms' fast path: ``fast(registers, machine)`` without a `Cpu`.

A compiled Python form (`regmap.x86.compiler`) gives `Emulator.step` and the
in-process site cache a function over the machine's register *namespace*
(``registers.zmm0`` is basis register zmm0).  A native form gets one too, for
its common shape: an explicit operand (no segment base), in the window, over
plain registers (general, vector, opmask: not the rip, rflags or mxcsr slots,
whose rules the `Cpu` keeps), the registers iced-x86 says it uses moved
through the plan's `Transfer`.  Per window address it keeps a function for
the form at that address: straight-line code generated for a form that only
reads the window (the common case: ``addsd xmm0, [8]``), a closure over the
register slices of what it reads and stores otherwise.  Anything else --
another address shape, a gather, a state save or restore, an rsp operand, an
implicit pointer, a hole -- raises `Declined` having changed nothing, and the
generic path (`family.execute`) runs.  The effect is the generic path's:
changed registers, then the window stores over them, then rip.
"""
from __future__ import annotations

import signal
from operator import attrgetter
from types import CodeType, FunctionType

from regmap.errors import LayoutError
from regmap.x86 import flags
from regmap.x86.compiler import Declined
from regmap.x86 import host
from regmap.x86.native import engine, region as _region
from regmap.x86.native.region import GPRS, SHADOW_SIZE

PLAIN = frozenset(GPRS) | {f"zmm{i}" for i in range(32)} | {f"k{i}" for i in range(8)}
ADDRESSES = 64          # placements kept per form (an instruction that walks the window is rare)
ILLEGAL = 1 << signal.SIGILL
_CODE: dict[str, CodeType] = {}     # generated source -> its compiled function body
MAX_CODE = 4096


class _Native:
    """What every placement of one form shares."""

    __slots__ = ("form", "plan", "layout", "transfer", "region", "length")

    def __init__(self, form, layout):
        self.form, self.plan, self.layout = form, form.native, layout
        self.transfer = self.plan.transfer("fcw" in layout.registers.registers)
        self.region = _region.ensure()
        self.length = len(form.code)

    def describe(self) -> str:
        return f"{self.form.code.hex(' ')} ({self.form.disassembly})"

    def delivered(self, fault: engine.NativeFault) -> Exception:
        return engine.delivered(fault, self.form, self.region)


def compile_native(form, layout):
    """``form``'s fast function, or None if its shape always takes the generic path."""
    plan = form.native
    operand = form.memory[0].operand if form.memory else None
    if (plan is None or plan.refusal or plan.kind != "explicit" or plan.whole or plan.swap
            or operand is None or operand.segment_base is not None or layout.size > SHADOW_SIZE
            or host.platform_problem()):
        return None
    native = _Native(form, layout)
    base, scaled = _address_part(operand.base), _address_part(operand.index)
    displacement, scale, address_mask = operand.displacement, operand.scale, operand.address_mask
    placements: dict[int, object] = {}

    def placement(ea: int):
        if len(placements) >= ADDRESSES:
            placements.clear()
        run = placements[ea] = _place(native, ea)
        return run

    def fast(r, m):
        ea = displacement
        if base is not None:
            ea += getattr(r, base[0]) >> base[1] & base[2]
        if scaled is not None:
            ea += (getattr(r, scaled[0]) >> scaled[1] & scaled[2]) * scale
        ea &= address_mask
        run = placements.get(ea, placement)         # (another thread may clear the dict meanwhile)
        if run is placement:
            run = placement(ea)
        if run is None:
            raise Declined
        run(r)

    fast.placements = placements
    return fast


def _address_part(register):
    """``(basis, lo, mask)`` of an address register operand, or None."""
    return None if register is None else (register.basis, register.lo, register.mask)


def _place(native: _Native, ea: int):
    """The form's function at window address ``ea``, or None where the generic path must decide."""
    located = native.plan.ranges(ea, native.layout.size)
    if located is None:
        return None
    reads, writes = located
    resolve = native.layout.resolve
    try:
        reads = [(start, size, resolve(start, size)) for start, size, _ in reads]
        writes = [(start, size, always, resolve(start, size)) for start, size, always in writes]
    except LayoutError:
        return None
    if any(basis not in PLAIN for *_, slices in reads + writes for basis, _, _ in slices):
        return None
    code = engine.place_at(native.plan.code, ea)
    return _with_stores(native, code, reads, writes) if writes else _loads_only(native, code, reads)


def _loads_only(native: _Native, code: bytes, reads):
    """Straight-line code for a form that only reads the window at this address."""
    names, plan = native.transfer.names, native.plan
    index = native.transfer.index
    pieces = ", ".join(f"({start}, ({_window_expression(slices)}).to_bytes({size}, 'little'))"
                       for start, size, slices in reads)
    address = "r.rip" if native.transfer.fop_at is not None else "0"    # x87 forms' FIP only
    lines = [f"v = [{', '.join(f'r.{name}' for name in names)}]",
             "try:",
             f"    after = run_transfer(region, code, transfer, v, signals(v[{index['rflags']}], "
             f"v[{index['mxcsr']}]), [{pieces}], (), describe, {address})[0]",
             "except NativeFault as fault:",
             "    raise delivered(fault) from None",
             "if plan.routed & ILLEGAL:",
             "    plan.ran()",
             f"after[{index['rflags']}] &= {flags.CLEAR_RF:#x}"]     # completed: RF clears (flags.RF)
    for i, name in enumerate(names):
        if name != "rsp":             # only an address register: the stub's rsp ran
            lines += [f"if after[{i}] != v[{i}]:", f"    r.{name} = after[{i}]"]
    lines.append(f"r.rip = r.rip + {native.length}")
    source = "def run(r):\n" + "".join(f"    {line}\n" for line in lines)
    namespace = {"run_transfer": engine.run_transfer, "NativeFault": engine.NativeFault, "ILLEGAL": ILLEGAL,
                 "region": native.region, "code": code, "transfer": native.transfer, "plan": plan,
                 "signals": plan.signals, "describe": native.describe, "delivered": native.delivered}
    return FunctionType(_code_of(source), namespace)


def _code_of(source: str) -> CodeType:
    """The compiled ``run`` of ``source``: shared by every form and address with the same text
    (the form's own objects are the function's globals), bounded as the compiler's cache is."""
    code = _CODE.get(source)
    if code is None:
        if len(_CODE) >= MAX_CODE:
            for old in list(_CODE)[:MAX_CODE // 2]:
                del _CODE[old]
        module = compile(source, "<regmap native fast path>", "exec")
        code = _CODE[source] = next(c for c in module.co_consts if isinstance(c, CodeType))
    return code


def _window_expression(slices) -> str:
    """The window bytes over ``slices`` (most significant first) as an expression over ``r``."""
    terms = []
    for basis, hi, lo in slices:
        width = hi - lo + 1
        term = f"r.{basis} >> {lo}" if lo else f"r.{basis}"
        terms.append((term if basis in GPRS and hi == 63 else f"({term} & {(1 << width) - 1:#x})", width))
    expression, _ = terms[0]
    for term, width in terms[1:]:
        expression = f"({expression}) << {width} | {term}"
    return expression


def _with_stores(native: _Native, code: bytes, reads, writes):
    """The form at this address when it stores to the window: the stores land over the
    registers it changed, through the slices (as `Cpu._store_window` does)."""
    transfer, plan, region, layout = native.transfer, native.plan, native.region, native.layout
    names, index = transfer.names, transfer.index
    registers = attrgetter(*names)
    flags_at, mxcsr_at, rsp_at = index["rflags"], index["mxcsr"], index.get("rsp")
    pieces = reads + [(start, size, slices) for start, size, _, slices in writes]
    x87 = transfer.fop_at is not None          # only x87 forms need the address (FIP)

    def run(r):
        before = list(registers(r))
        window = [(start, _read(r, slices).to_bytes(size, "little")) for start, size, slices in pieces]
        try:
            after, stored = engine.run_transfer(region, code, transfer, before,
                                                plan.signals(before[flags_at], before[mxcsr_at]),
                                                window, writes, native.describe,
                                                r.rip if x87 else 0)
        except engine.NativeFault as fault:
            raise native.delivered(fault) from None
        if plan.routed & ILLEGAL:
            plan.ran()
        if rsp_at is not None:
            after[rsp_at] = before[rsp_at]        # an address register only: the stub's rsp ran
        after[flags_at] &= flags.CLEAR_RF                 # the instruction completed: RF clears
        changed = {name: new for name, old, new in zip(names, before, after) if new != old}
        for (start, size, always, slices), new in zip(writes, stored):
            if always:
                _store(r, changed, slices, int.from_bytes(new, "little"))
                continue
            old = next(data for at, data in window if at == start and len(data) == size)
            for low, high in engine.changed_runs(old, new):
                _store(r, changed, layout.resolve(start + low, high - low), int.from_bytes(new[low:high], "little"))
        next_ip = r.rip + native.length
        for name, value in changed.items():
            setattr(r, name, value)
        r.rip = next_ip

    return run


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
