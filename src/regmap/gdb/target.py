"""What gdb is told the target is: the register list (``g`` order) and its XML description.

The features are gdb's amd64 ones (gdb checks these names, not the order): core (general
registers, eflags, selectors, x87), sse, linux (orig_rax), segments (fs_base, gs_base), avx
and, where the host CPU has AVX-512, avx512.  Each gdb register is a slice of one regmap
register (``basis``, ``shift``, ``bits``): ymm3h is bits 255..128 of zmm3, read from the
thread's XSAVE image where the CPU's own CPUID layout puts it (`regmap.trace.xstate`).
"""
from __future__ import annotations

from typing import NamedTuple


class Register(NamedTuple):
    name: str
    bits: int
    type: str
    group: str
    basis: str        # the regmap register (TracedMachine.read_register), or one named below
    shift: int = 0


# user_regs_struct fields that are no regmap register
USER_FIELDS = ("orig_rax",)
# gdb's full x87 tag word, made from the abridged one XSAVE keeps
FTAG = "ftag"

_GENERAL = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
            *(f"r{n}" for n in range(8, 16)))


def _core() -> list[Register]:
    registers = [Register(name, 64, {"rbp": "data_ptr", "rsp": "data_ptr"}.get(name, "int64"),
                          "general", name) for name in _GENERAL]
    registers.append(Register("rip", 64, "code_ptr", "general", "rip"))
    registers.append(Register("eflags", 32, "i386_eflags", "general", "rflags"))
    registers += [Register(name, 32, "int32", "general", name)
                  for name in ("cs", "ss", "ds", "es", "fs", "gs")]
    registers += [Register(f"st{n}", 80, "i387_ext", "float", f"st{n}") for n in range(8)]
    registers += [Register("fctrl", 32, "int", "float", "fcw"),
                  Register("fstat", 32, "int", "float", "fsw"),
                  Register("ftag", 32, "int", "float", FTAG)]
    # the x87 last-instruction pointers: in 64-bit mode gdb's "segment" halves are the upper
    # 32 bits of FXSAVE64's FIP and FDP
    registers += [Register("fiseg", 32, "int", "float", "fip", 32), Register("fioff", 32, "int", "float", "fip"),
                  Register("foseg", 32, "int", "float", "fdp", 32), Register("fooff", 32, "int", "float", "fdp"),
                  Register("fop", 32, "int", "float", "fop")]
    return registers


def features(avx512: bool) -> list[tuple[str, list[Register]]]:
    """(gdb feature name, its registers) in ``g`` packet order."""
    table = [("org.gnu.gdb.i386.core", _core()),
             ("org.gnu.gdb.i386.sse",
              [Register(f"xmm{n}", 128, "vec128", "vector", f"zmm{n}") for n in range(16)]
              + [Register("mxcsr", 32, "i386_mxcsr", "vector", "mxcsr")]),
             ("org.gnu.gdb.i386.linux", [Register("orig_rax", 64, "int", "system", "orig_rax")]),
             ("org.gnu.gdb.i386.segments",
              [Register("fs_base", 64, "int", "system", "fs_base"),
               Register("gs_base", 64, "int", "system", "gs_base")]),
             ("org.gnu.gdb.i386.avx",
              [Register(f"ymm{n}h", 128, "uint128", "vector", f"zmm{n}", 128) for n in range(16)])]
    if avx512:
        table.append(("org.gnu.gdb.i386.avx512",
                      [Register(f"xmm{n}", 128, "vec128", "vector", f"zmm{n}") for n in range(16, 32)]
                      + [Register(f"ymm{n}h", 128, "uint128", "vector", f"zmm{n}", 128)
                         for n in range(16, 32)]
                      + [Register(f"k{n}", 64, "uint64", "vector", f"k{n}") for n in range(8)]
                      + [Register(f"zmm{n}h", 256, "v2ui128", "vector", f"zmm{n}", 256)
                         for n in range(32)]))
    return table


def registers(avx512: bool) -> list[Register]:
    return [register for _, group in features(avx512) for register in group]


# the xmm registers' type (a feature's types are its own: sse and avx512 each define it)
_VEC128 = """\
  <vector id="v8bf16" type="bfloat16" count="8"/>
  <vector id="v8h" type="ieee_half" count="8"/>
  <vector id="v4f" type="ieee_single" count="4"/>
  <vector id="v2d" type="ieee_double" count="2"/>
  <vector id="v16i8" type="int8" count="16"/>
  <vector id="v8i16" type="int16" count="8"/>
  <vector id="v4i32" type="int32" count="4"/>
  <vector id="v2i64" type="int64" count="2"/>
  <union id="vec128">
    <field name="v8_bfloat16" type="v8bf16"/><field name="v8_half" type="v8h"/>
    <field name="v4_float" type="v4f"/><field name="v2_double" type="v2d"/>
    <field name="v16_int8" type="v16i8"/><field name="v8_int16" type="v8i16"/>
    <field name="v4_int32" type="v4i32"/><field name="v2_int64" type="v2i64"/>
    <field name="uint128" type="uint128"/>
  </union>
"""
# the types the registers above name that gdb does not predefine
_TYPES = {
    "org.gnu.gdb.i386.core": """\
  <flags id="i386_eflags" size="4">
    <field name="CF" start="0" end="0"/><field name="" start="1" end="1"/>
    <field name="PF" start="2" end="2"/><field name="AF" start="4" end="4"/>
    <field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/>
    <field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/>
    <field name="DF" start="10" end="10"/><field name="OF" start="11" end="11"/>
    <field name="NT" start="14" end="14"/><field name="RF" start="16" end="16"/>
    <field name="VM" start="17" end="17"/><field name="AC" start="18" end="18"/>
    <field name="VIF" start="19" end="19"/><field name="VIP" start="20" end="20"/>
    <field name="ID" start="21" end="21"/>
  </flags>
""",
    "org.gnu.gdb.i386.sse": _VEC128 + """\
  <flags id="i386_mxcsr" size="4">
    <field name="IE" start="0" end="0"/><field name="DE" start="1" end="1"/>
    <field name="ZE" start="2" end="2"/><field name="OE" start="3" end="3"/>
    <field name="UE" start="4" end="4"/><field name="PE" start="5" end="5"/>
    <field name="DAZ" start="6" end="6"/><field name="IM" start="7" end="7"/>
    <field name="DM" start="8" end="8"/><field name="ZM" start="9" end="9"/>
    <field name="OM" start="10" end="10"/><field name="UM" start="11" end="11"/>
    <field name="PM" start="12" end="12"/><field name="FZ" start="15" end="15"/>
  </flags>
""",
    "org.gnu.gdb.i386.avx512": _VEC128 + """\
  <vector id="v2ui128" type="uint128" count="2"/>
""",
}


def description(avx512: bool) -> str:
    """The target description XML (``qXfer:features:read:target.xml``)."""
    parts = ['<?xml version="1.0"?>\n<!DOCTYPE target SYSTEM "gdb-target.dtd">\n<target>\n'
             "<architecture>i386:x86-64</architecture>\n<osabi>GNU/Linux</osabi>\n"]
    number = 0
    for feature, group in features(avx512):
        parts.append(f'<feature name="{feature}">\n')
        parts.append(_TYPES.get(feature, ""))
        for register in group:
            parts.append(f'  <reg name="{register.name}" bitsize="{register.bits}" '
                         f'type="{register.type}" group="{register.group}" regnum="{number}"/>\n')
            number += 1
        parts.append("</feature>\n")
    parts.append("</target>\n")
    return "".join(parts)


def full_tag(abridged: int, fsw: int, stack: list[int]) -> int:
    """gdb's two-bit-per-register x87 tag word from FXSAVE's abridged one (bit set: valid).
    ``stack`` holds st0..st7; physical register r is st((r - TOP) mod 8)."""
    top = (fsw >> 11) & 7
    tag = 0
    for physical in range(8):
        if not abridged >> physical & 1:
            value = 3                                   # empty
        else:
            raw = stack[(physical - top) & 7]
            exponent, mantissa = raw >> 64 & 0x7FFF, raw & (1 << 64) - 1
            if exponent == 0x7FFF:
                value = 2                               # special: infinity, NaN
            elif exponent == 0:
                value = 1 if mantissa == 0 else 2       # zero, or denormal
            else:
                value = 0 if mantissa >> 63 else 2      # valid, or unnormal
        tag |= value << 2 * physical
    return tag


def abridged_tag(full: int) -> int:
    return sum(1 << r for r in range(8) if (full >> 2 * r) & 3 != 3)


def read(machine, register: Register) -> int:
    """``register``'s value in the stopped thread ``machine`` (a loaded TracedMachine)."""
    basis = register.basis
    if basis == FTAG:
        return full_tag(machine.read_register("ftw"), machine.read_register("fsw"),
                        [machine.read_register(f"st{n}") for n in range(8)])
    if basis in USER_FIELDS:
        value = getattr(machine.regs, basis)
    else:
        value = machine.read_register(basis)
    return (value >> register.shift) & ((1 << register.bits) - 1)


def write(machine, register: Register, value: int) -> None:
    """Set ``register`` (the caller stores the machine afterwards)."""
    basis = register.basis
    value &= (1 << register.bits) - 1
    if basis == FTAG:
        machine.write_register("ftw", abridged_tag(value))
        return
    if basis in USER_FIELDS:
        setattr(machine.regs, basis, value)
        machine.regs_dirty = True
        return
    mask = ((1 << register.bits) - 1) << register.shift
    old = machine.read_register(basis)
    machine.write_register(basis, (old & ~mask) | (value << register.shift))
