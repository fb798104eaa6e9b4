"""MOVS STOS LODS CMPS SCAS, with REP/REPE/REPNE: `rep movsb` from 0 copies the register file out.

Each element goes through the window or real memory on its own, so a copy
may start in the window and run on into real memory.  Within the window the
instruction sees the register image as it began plus its own stores (an
overlapping copy replicates, as memmove would not), and its stores land on
the registers last, after the pointers and count: the rule of every
instruction (`regmap.x86.cpu`).  The whole repeat runs as one step.

A forward ``repe``/``repne`` ``cmps``/``scas`` reads its operands a page (or
the window) at a time and finds the element where the CPU stops in the block
(`_bulk_compare`): no page past that element is read, as the CPU reads none.

A forward ``rep movs``/``rep stos`` whose source and destination each lie
wholly in the window or wholly outside it, and do not overlap, runs in bulk
(`_bulk`): one window read or one real-memory read per page for the whole
run, one write per page.  A real-memory access that fails part-way stops the
run where the CPU would stop it: the elements before the failing page are
done, rcx, rsi and rdi count them, and rip stays on the instruction, which the
CPU then restarts (and faults on, genuinely, if the page is still missing).
"""
from iced_x86 import Mnemonic as M

from regmap.errors import LayoutError, MemoryFault
from regmap.x86 import flags, undefined
from regmap.x86.semantics import semantics

PAGE = 4096

_COUNTERS = {64: "rcx", 32: "ecx"}


def _repeat(cpu, form, element) -> None:
    """Run `element` once, or rCX times under a repeat prefix; `element` returns the ZF it leaves
    for REPE/REPNE to test (None for instructions that ignore it)."""
    if form.repeat is None:
        element()
        return
    counter = form.register(_COUNTERS[_address_width(form)])
    remaining = counter.read(cpu)
    if not remaining and counter.width == 32:
        _nothing_repeated(cpu, form)
        return
    while remaining:
        zero = element()
        remaining -= 1
        counter.write(cpu, remaining)
        if zero is not None and (zero != (form.repeat == "rep")):
            break


def _nothing_repeated(cpu, form) -> None:
    """A 67h repeat with ecx = 0 repeats nothing, and the SDM does not say what becomes of the
    upper halves of rcx, rsi and rdi: Intel CPUs have been seen to clear some, AMD's to keep
    them.  The host's run of the instruction says (it touches no memory with ecx = 0); where no
    machine code runs they are kept."""
    host = undefined.answer(cpu, form)
    if host is None:
        return
    for name in ("rcx", "rsi", "rdi"):
        if name in host.names and host.register(name) != cpu.reg(name):
            cpu.set_reg(name, host.register(name))


def _address_width(form) -> int:
    pointer = next(op for op in form.ops if op.is_memory).pointer
    return pointer.width


def _backwards(cpu) -> bool:
    return bool(cpu.flag(flags.DF))


@semantics(M.MOVSB, M.MOVSW, M.MOVSD, M.MOVSQ, string_instruction=True)
def movs(cpu, form):
    dest, source = form.ops
    if _bulk(cpu, form, dest, source):
        return

    def element():
        dest.write(cpu, source.read(cpu))
        backwards = _backwards(cpu)
        dest.advance(cpu, backwards)
        source.advance(cpu, backwards)
    _repeat(cpu, form, element)


@semantics(M.STOSB, M.STOSW, M.STOSD, M.STOSQ, string_instruction=True)
def stos(cpu, form):
    dest, value = form.ops
    if _bulk(cpu, form, dest, None, value):
        return

    def element():
        dest.write(cpu, value.read(cpu))
        dest.advance(cpu, _backwards(cpu))
    _repeat(cpu, form, element)


@semantics(M.LODSB, M.LODSW, M.LODSD, M.LODSQ, string_instruction=True)
def lods(cpu, form):
    dest, source = form.ops

    def element():
        dest.write(cpu, source.read(cpu))
        source.advance(cpu, _backwards(cpu))
    _repeat(cpu, form, element)


@semantics(M.CMPSB, M.CMPSW, M.CMPSD, M.CMPSQ, M.SCASB, M.SCASW, M.SCASD, M.SCASQ, string_instruction=True)
def compare_string(cpu, form):
    """CMPS compares [rsi] with [rdi]; SCAS the accumulator with [rdi]. Flags as CMP."""
    first, second = form.ops
    if _bulk_compare(cpu, form, first, second):
        return

    def element():
        a, b = first.read(cpu), second.read(cpu)
        cpu.set_flags(flags.sub(a, b, 0, second.width))
        backwards = _backwards(cpu)
        for op in (first, second):
            if op.is_memory:
                op.advance(cpu, backwards)
        return a == b
    _repeat(cpu, form, element)


# -- bulk runs ----------------------------------------------------------------------------------

def _bulk(cpu, form, dest, source, value=None) -> bool:
    """Run a whole forward ``rep movs`` (`source`) or ``rep stos`` (`value`) in blocks; False
    when the element loop must run instead (see the module's docstring)."""
    if form.repeat is None or _address_width(form) != 64 or _backwards(cpu):
        return False
    if dest.segment_base is not None or (source is not None and source.segment_base is not None):
        return False
    count = form.register("rcx").read(cpu)
    size = dest.size
    total = count * size
    if count < 2 or total >= 1 << 40:
        return False
    window = cpu.layout.size
    to = dest.address(cpu)
    start = source.address(cpu) if source is not None else None
    ranges = [to] + ([start] if start is not None else [])
    if any(a + total > 1 << 64 or (a < window < a + total) for a in ranges):
        return False        # wraps, or runs from the window into real memory
    if start is not None and start < to + total and to < start + total:
        return False        # overlapping: the element order matters
    try:
        if start is None:
            data = (value.read(cpu) & ((1 << 8 * size) - 1)).to_bytes(size, "little") * count
        elif start < window:
            data = cpu.window_read(start, total).to_bytes(total, "little")
        else:
            data = _read_pages(cpu, start, total)
            data = data[:len(data) // size * size]     # no part of an element the CPU cannot read
    except LayoutError:
        return False        # a hole: the element loop reports it where it is met
    if to < window:
        cpu.window_write(to, len(data), int.from_bytes(data, "little"))
        done = len(data)
    else:
        done = _write_pages(cpu, to, data)
    elements = done // size
    if elements == 0:
        raise MemoryFault(to if len(data) else start, len(data) > 0)
    _advance(cpu, form, dest, source, elements, count)
    return True


def _advance(cpu, form, dest, source, elements: int, count: int) -> None:
    """`elements` elements done: rcx and the pointers move past them; short of `count`, rip stays
    on the instruction so that it restarts from there."""
    moved = elements * dest.size
    form.register("rcx").write(cpu, count - elements)
    for op in (dest, source):
        if op is not None:
            op.pointer.write(cpu, op.pointer.read(cpu) + moved)
    if elements < count:
        cpu.restart(form.address)


def _pages(address: int, size: int):
    """(address, size) pieces of the range, cut at page boundaries."""
    end = address + size
    while address < end:
        step = min(end, (address | (PAGE - 1)) + 1) - address
        yield address, step
        address += step


def _read_pages(cpu, address: int, size: int) -> bytes:
    """The readable bytes of the range, page by page, up to the first page that is not."""
    pieces = []
    for at, length in _pages(address, size):
        try:
            pieces.append(cpu.machine.read_memory(at, length))
        except MemoryFault:
            break
    return b"".join(pieces)


def _write_pages(cpu, address: int, data: bytes) -> int:
    """Write now (the CPU's stores before a fault stay done), page by page; the bytes written."""
    done = 0
    for at, length in _pages(address, len(data)):
        try:
            cpu.memory_write_now(at, data[done:done + length])
        except MemoryFault:
            break
        done += length
    return done


def _bulk_compare(cpu, form, first, second) -> bool:
    """A forward ``repe``/``repne`` cmps or scas a block at a time; False when the element loop
    must run (backwards, 32-bit addressing, a segment override, tracing, a run leaving the
    window, or a first element that cannot be read: the loop faults on it as the CPU does)."""
    if form.repeat is None or _address_width(form) != 64 or _backwards(cpu):
        return False
    if cpu.accesses is not None or any(op.is_memory and op.segment_base is not None
                                       for op in (first, second)):
        return False
    count = form.register("rcx").read(cpu)
    if count < 2:
        return False
    size, window = second.size, cpu.layout.size
    stop_when_equal = form.repeat == "repne"
    constant = None if first.is_memory else first.read(cpu)
    addresses = [op.address(cpu) if op.is_memory else None for op in (first, second)]
    done, a, b, stopped, faulted = 0, 0, 0, False, False
    while done < count and not stopped:
        blocks = _blocks(cpu, addresses, min(count - done, 1 << 16), size, window)
        if blocks is _LEAVES_WINDOW:
            return False            # nothing is changed yet: the element loop runs it all
        if blocks is None:          # the next page cannot be read
            if done == 0:
                return False        # the element loop faults on the first element
            faulted = True
            break
        elements, a, b, stopped = _first_stop(blocks, size, constant, stop_when_equal)
        done += elements
        addresses = [None if at is None else at + elements * size for at in addresses]
    cpu.set_flags(flags.sub(a, b, 0, 8 * size))
    form.register("rcx").write(cpu, count - done)
    for op in (first, second):
        if op.is_memory:
            op.pointer.write(cpu, op.pointer.read(cpu) + done * size)
    if faulted:
        cpu.restart(form.address)   # the next element's page faults: the CPU restarts there
    return True


_LEAVES_WINDOW = object()


def _blocks(cpu, addresses, most: int, size: int, window: int):
    """The next block of each memory operand (None for the accumulator): as many whole elements
    as reach the end of every operand's page, or of the window; None if one cannot be read."""
    room = most * size
    for address in addresses:
        if address is None:
            continue
        if address < window:
            room = min(room, (window - address) // size * size)
        else:
            room = min(room, max(PAGE - (address & (PAGE - 1)), size) // size * size)
    if room == 0:
        return _LEAVES_WINDOW
    blocks = []
    for address in addresses:
        if address is None:
            blocks.append(None)
        elif address < window:
            try:
                blocks.append(cpu.window_read(address, room).to_bytes(room, "little"))
            except LayoutError:
                return _LEAVES_WINDOW   # a hole: the element loop stops before it, or faults
        else:
            try:
                blocks.append(cpu.machine.read_memory(address, room))
            except MemoryFault:
                return None
    return blocks


def _first_stop(blocks, size: int, constant, stop_when_equal: bool):
    """(elements compared, a, b, stopped) over the blocks: up to and including the first
    element where the repeat stops, else all of them (a, b: the last element compared)."""
    left, right = blocks
    length = len(right) // size
    if left is None and size == 1:                      # scasb: a byte search
        needle = bytes([constant & 0xFF])
        at = right.find(needle) if stop_when_equal else length - len(right.lstrip(needle))
        if 0 <= at < length:
            return at + 1, constant & 0xFF, right[at], True
        return length, constant & 0xFF, right[-1], False
    mask = (1 << 8 * size) - 1
    a = b = 0
    for index in range(length):
        offset = index * size
        a = constant & mask if left is None else int.from_bytes(left[offset:offset + size], "little")
        b = int.from_bytes(right[offset:offset + size], "little")
        if (a == b) == stop_when_equal:
            return index + 1, a, b, True
    return length, a, b, False
