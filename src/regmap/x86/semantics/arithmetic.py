"""ADD ADC SUB SBB CMP AND OR XOR TEST INC DEC NEG NOT ADCX ADOX."""
from iced_x86 import Mnemonic as M

from regmap.x86 import flags, undefined
from regmap.x86.semantics import semantics


@semantics(M.ADD, M.ADC)
def add(cpu, form):
    dest, source = form.ops
    a, b = dest.read(cpu), source.read(cpu)
    result = a + b + (cpu.flag(flags.CF) if form.mnemonic == M.ADC else 0)
    dest.write(cpu, result)
    cpu.set_flags(flags.add(a, b, result, dest.width))


@semantics(M.SUB, M.SBB, M.CMP)
def sub(cpu, form):
    dest, source = form.ops
    a, b = dest.read(cpu), source.read(cpu)
    borrow = cpu.flag(flags.CF) if form.mnemonic == M.SBB else 0
    if form.mnemonic != M.CMP:
        dest.write(cpu, a - b - borrow)
    cpu.set_flags(flags.sub(a, b, borrow, dest.width))


_LOGIC = {M.AND: int.__and__, M.TEST: int.__and__, M.OR: int.__or__, M.XOR: int.__xor__}


@semantics(*_LOGIC)
def logic(cpu, form):
    """AF is undefined: cleared, as the host was seen to do for this form, else the host's."""
    dest, source = form.ops
    a, b = dest.read(cpu), source.read(cpu)
    result = _LOGIC[form.mnemonic](a, b)
    update = flags.logic(result, dest.width)
    if not undefined.always_clears(form.code, flags.AF):
        update = flags.settled(update, flags.AF, undefined.answer_with(cpu, form, (dest, a), (source, b)))
    if form.mnemonic != M.TEST:
        dest.write(cpu, result)
    cpu.set_flags(update)


@semantics(M.INC)
def inc(cpu, form):
    dest, = form.ops
    a = dest.read(cpu)
    dest.write(cpu, a + 1)
    cpu.set_flags(flags.without(flags.add(a, 1, a + 1, dest.width), flags.CF))


@semantics(M.DEC)
def dec(cpu, form):
    dest, = form.ops
    a = dest.read(cpu)
    dest.write(cpu, a - 1)
    cpu.set_flags(flags.without(flags.sub(a, 1, 0, dest.width), flags.CF))


@semantics(M.NEG)
def neg(cpu, form):
    dest, = form.ops
    b = dest.read(cpu)
    dest.write(cpu, -b)
    cpu.set_flags(flags.sub(0, b, 0, dest.width))


@semantics(M.NOT)
def not_(cpu, form):
    dest, = form.ops
    dest.write(cpu, ~dest.read(cpu))


@semantics(M.ADCX, M.ADOX)
def add_with_one_carry(cpu, form):
    """ADCX/ADOX: an unsigned add that reads and writes only CF (ADCX) or only OF (ADOX)."""
    dest, source = form.ops
    carry_flag = flags.CF if form.mnemonic == M.ADCX else flags.OF
    result = dest.read(cpu) + source.read(cpu) + cpu.flag(carry_flag)
    dest.write(cpu, result)
    cpu.set_flags((carry_flag, carry_flag if result >> dest.width else 0))
