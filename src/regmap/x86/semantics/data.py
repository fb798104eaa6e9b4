"""MOV MOVZX MOVSX MOVSXD MOVBE MOVNTI XCHG XADD CMPXCHG CMPXCHG8B CMPXCHG16B CMOVcc SETcc."""
from iced_x86 import Mnemonic as M

from regmap.errors import GeneralProtection
from regmap.x86 import flags
from regmap.x86.semantics import mask, semantics, sign


@semantics(M.MOV, M.MOVZX, M.MOVNTI)
def mov(cpu, form):
    dest, source = form.ops
    dest.write(cpu, source.read(cpu))


@semantics(M.MOVSX, M.MOVSXD)
def movsx(cpu, form):
    dest, source = form.ops
    dest.write(cpu, sign(source.read(cpu), source.width))


@semantics(M.MOVBE)
def movbe(cpu, form):
    dest, source = form.ops
    size = source.width // 8
    dest.write(cpu, int.from_bytes(source.read(cpu).to_bytes(size, "little"), "big"))


@semantics(M.XCHG)
def xchg(cpu, form):
    first, second = form.ops
    a, b = first.read(cpu), second.read(cpu)
    first.write(cpu, b)
    second.write(cpu, a)


@semantics(M.XADD)
def xadd(cpu, form):
    """TEMP <- SRC + DEST; SRC <- DEST; DEST <- TEMP (so `xadd rax, rax` doubles rax)."""
    dest, source = form.ops
    a, b = dest.read(cpu), source.read(cpu)
    source.write(cpu, a)
    dest.write(cpu, a + b)
    cpu.set_flags(flags.add(a, b, a + b, dest.width))


@semantics(M.CMPXCHG)
def cmpxchg(cpu, form):
    """Compare the accumulator with DEST: equal, DEST <- SRC; else the accumulator <- DEST.

    The CPU writes DEST back in both cases (a locked read-modify-write); the
    accumulator is written only on failure, so a 32-bit success leaves the
    upper half of rax alone.
    """
    dest, source = form.ops
    accumulator = form.accumulator(dest.width)
    a, d = accumulator.read(cpu), dest.read(cpu)
    cpu.set_flags(flags.sub(a, d, 0, dest.width))
    if a == d:
        dest.write(cpu, source.read(cpu))
    else:
        accumulator.write(cpu, d)
        dest.write(cpu, d)


@semantics(M.CMPXCHG8B, M.CMPXCHG16B)
def cmpxchg_double(cpu, form):
    """Compare rdx:rax (edx:eax) with m128 (m64); equal, m <- rcx:rbx; else rdx:rax <- m."""
    dest, = form.ops
    half = dest.width // 2
    if form.mnemonic == M.CMPXCHG16B and dest.address(cpu) % 16:
        raise GeneralProtection("cmpxchg16b needs a 16-byte aligned operand")
    low, high = form.accumulator(half), form.register("rdx" if half == 64 else "edx")
    expected = high.read(cpu) << half | low.read(cpu)
    actual = dest.read(cpu)
    if expected == actual:
        rbx, rcx = form.register("rbx" if half == 64 else "ebx"), form.register("rcx" if half == 64 else "ecx")
        dest.write(cpu, rcx.read(cpu) << half | rbx.read(cpu))
        cpu.set_flags((flags.ZF, flags.ZF))
    else:
        low.write(cpu, actual & mask(half))
        high.write(cpu, actual >> half)
        dest.write(cpu, actual)
        cpu.set_flags((flags.ZF, 0))


@semantics(*(getattr(M, "CMOV" + cc) for cc in
             ("O", "NO", "B", "AE", "E", "NE", "BE", "A", "S", "NS", "P", "NP", "L", "GE", "LE", "G")))
def cmovcc(cpu, form):
    """The source is read and the destination written whatever the condition:
    a 32-bit cmov with a false condition still zeroes the upper half."""
    dest, source = form.ops
    value = source.read(cpu)
    dest.write(cpu, value if form.condition(cpu) else dest.read(cpu))


@semantics(*(getattr(M, "SET" + cc) for cc in
             ("O", "NO", "B", "AE", "E", "NE", "BE", "A", "S", "NS", "P", "NP", "L", "GE", "LE", "G")))
def setcc(cpu, form):
    dest, = form.ops
    dest.write(cpu, 1 if form.condition(cpu) else 0)
