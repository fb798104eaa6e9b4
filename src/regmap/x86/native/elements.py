"""A gather or scatter element by element: elements in the window and in real memory mixed, or in
a layout hole.

The CPU accesses a gather's or scatter's masked-on elements in element order (SDM: "faults
are delivered in a right-to-left manner": when element j faults, every masked-on element
before it is complete and its mask bit clear; scatters to overlapping addresses are ordered
from the lowest element to the highest).  Here each element goes to the window (a hole is a
fault, `LayoutError`) or to real memory (`MemoryFault`), in that order:

- no fault: the gather runs on the host CPU with the elements' bytes staged on the shadow
  page (the index register lane i, for the run only, points at slot i): the CPU merges them
  into the destination, zeroes what the form zeroes and clears the mask, exactly; a scatter's
  elements are its source register's lanes, stored in order, and its opmask is cleared;
- element j faults, elements before it done: those are committed as the CPU leaves them at the
  fault (destination lanes loaded or memory stored, their mask bits clear, the others' kept) and
  rip stays on the instruction (`Cpu.restart`), which then runs again from there and faults at
  element j itself, genuinely, with that state: what the program's handler sees on the CPU;
- the first masked-on element faults: the fault propagates, nothing changed.
"""
from __future__ import annotations

from iced_x86 import RegisterExt

from regmap.errors import LayoutError, MemoryFault
from regmap.x86.native import engine

M64 = (1 << 64) - 1
SLOT = 8          # bytes per staged element (the largest element); the staged index is SLOT * i


def run(cpu, form, plan, r, active: list[int]) -> None:
    """Execute gather/scatter ``form`` (`Plan` ``plan``) element by element; ``active`` are the
    masked-on elements, in order."""
    addresses = plan.elements(cpu)
    done, fault, loaded = [], None, {}
    for i in active:
        try:
            if plan.scatter:
                _store(cpu, addresses[i], plan.size, _lane(cpu, plan, i))
            else:
                loaded[i] = _load(cpu, addresses[i], plan.size)
        except (LayoutError, MemoryFault) as error:
            fault = error
            break
        done.append(i)
    if fault is not None and not done:
        raise fault
    done_bits = sum(1 << i for i in done)
    if plan.scatter:
        name = f"k{plan.mask.number}"
        cpu.set_reg(name, cpu.reg(name) & ~done_bits if fault is not None else 0)
    else:
        _gather(cpu, form, plan, r, loaded, done_bits, partial=fault is not None)
    if fault is not None:
        cpu.restart(form.address)


def _load(cpu, address: int, size: int) -> int:
    """An element's value: window bytes, real memory, or both for one across the window's end."""
    window = cpu.layout.size
    if address + size <= window:
        return cpu.window_read(address, size)
    if address >= window:
        return cpu.memory_read(address, size)
    inside = window - address
    return cpu.window_read(address, inside) | cpu.memory_read(window, size - inside) << 8 * inside


def _store(cpu, address: int, size: int, value: int) -> None:
    """Store an element: a window store lands at the commit (a hole faults now); a real-memory
    one now, so that a later element's fault leaves it done as the CPU does."""
    window = cpu.layout.size
    if address + size <= window:
        cpu.window_write(address, size, value)
    elif address >= window:
        cpu.memory_write_now(address, value.to_bytes(size, "little"))
    else:
        inside = window - address
        cpu.window_write(address, inside, value & ((1 << 8 * inside) - 1))
        cpu.memory_write_now(window, (value >> 8 * inside).to_bytes(size - inside, "little"))


def _lane(cpu, plan, i: int) -> int:
    """Element i of a scatter's source register."""
    bits = plan.size * 8
    return cpu.reg(f"zmm{plan.data}") >> (bits * i) & ((1 << bits) - 1)


def _gather(cpu, form, plan, r, loaded: dict[int, int], done_bits: int, partial: bool) -> None:
    """Run the gather natively on the staged elements ``loaded`` with the mask ``done_bits``;
    ``partial``: the elements after them are left for the restart, their mask kept."""
    from regmap.x86.native.family import commit        # family imports this module
    instr = plan.instruction
    scale = instr.memory_index_scale
    staged = bytearray(SLOT * scale * plan.count)
    for i, value in loaded.items():
        staged[SLOT * scale * i:SLOT * scale * i + plan.size] = value.to_bytes(plan.size, "little")
    transfer = plan.transfer("fcw" in cpu.layout.registers.registers)
    before = [cpu.reg(name) for name in transfer.names]
    run = before.copy()
    index = transfer.index
    index_name = f"zmm{RegisterExt.number(instr.memory_index)}"
    lane = 32 if instr.is_vsib32 else 64
    run[index[index_name]] = sum(SLOT * i << lane * i for i in range(plan.count))
    mask_name = _mask_name(plan)
    run[index[mask_name]] = _mask_value(plan, done_bits)
    code = engine.place_vsib(plan.code, r.shadow)
    try:
        after, _ = engine.run_transfer(r, code, transfer, run,
                                       plan.signals(before[index["rflags"]], before[index["mxcsr"]]),
                                       [(0, bytes(staged))], [], lambda: f"{form.code.hex(' ')} ({form.disassembly})")
    except engine.NativeFault as fault:
        raise engine.delivered(fault, form, r) from None
    after[index[index_name]] = before[index[index_name]]      # the index is only addresses
    if partial:        # the completed elements' mask cleared, the others' as they were
        after[index[mask_name]] = before[index[mask_name]] & ~_mask_value(plan, done_bits)
    commit(cpu, transfer.names, before, after, [], [], [])


def _mask_name(plan) -> str:
    return f"{'k' if plan.mask.kind == 'k' else 'zmm'}{plan.mask.number}"


def _mask_value(plan, bits: int) -> int:
    """The mask register's value selecting elements ``bits`` (a VEX mask: whole lanes)."""
    if plan.mask.kind == "k":
        return bits
    width = plan.size * 8
    return sum(((1 << width) - 1) << width * i for i in range(plan.count) if bits >> i & 1)
