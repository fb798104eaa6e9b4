"""LDMXCSR STMXCSR, and the cache-control instructions that change no register."""
from iced_x86 import Mnemonic as M

from regmap.errors import GeneralProtection
from regmap.x86.cpu import MXCSR_WRITABLE
from regmap.x86.semantics import semantics


@semantics(M.LDMXCSR, M.VLDMXCSR)
def ldmxcsr(cpu, form):
    source, = form.ops
    value = source.read(cpu)
    if value & ~MXCSR_WRITABLE:
        raise GeneralProtection(f"{form.disassembly}: mxcsr {value:#x} sets reserved bits")
    cpu.set_reg("mxcsr", value)


@semantics(M.STMXCSR, M.VSTMXCSR)
def stmxcsr(cpu, form):
    dest, = form.ops
    dest.write(cpu, cpu.reg("mxcsr"))


@semantics(M.CLFLUSH, M.CLFLUSHOPT, M.CLWB)
def cache_line_control(cpu, form):
    """Flushing a cache line of the window flushes nothing: registers have no cache lines.

    The address is still checked as a one-byte read would be: an address in a
    hole of the layout faults, as on unmapped memory.
    """
    line, = form.ops
    cpu.layout.resolve(line.address(cpu), line.size)  # LayoutError for a hole: a genuine fault
