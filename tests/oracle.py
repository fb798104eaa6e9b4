"""Run one window instruction through both engines, the host CPU and ``regmap.emulate``, and compare.

The native side (``native_cpu``) executes the instruction against a shadow page holding the register
image; its result is the CPU's registers *overlaid* with the window bytes the instruction wrote
(written back through the layout, last: the emulator's rule that an instruction's register writes
happen first and its window writes after them, so ``xadd [8], rcx`` leaves rcx = 2*rcx).  Every
general register, rip, rflags (the flags the SDM leaves undefined too: regmap gives the host's), the vector and
opmask registers the host has, mxcsr, st0-st7 and the scratch stack must then agree with the
emulator's.  Faults are judged too: #DE must be the emulator's DivideError, #GP its GeneralProtection,
and a store to mxcsr through the window is put to the CPU's own LDMXCSR.
"""
from __future__ import annotations

import dataclasses
import random
import signal

from iced_x86 import Formatter, FormatterSyntax, InstructionInfoFactory, MemorySizeExt, OpAccess

import native_cpu as N
from forms import Form, code_name, form_info

_formatter = Formatter(FormatterSyntax.INTEL)
_info_factory = InstructionInfoFactory()

# iced RflagsBits -> the rflags bit
_ICED_FLAGS = {1: 0x800, 2: 0x80, 4: 0x40, 8: 0x10, 16: 0x1, 32: 0x4, 64: 0x400, 128: 0x200, 256: 0x40000}
IF = 0x200
_WRITES = {OpAccess.WRITE, OpAccess.READ_WRITE, OpAccess.COND_WRITE, OpAccess.READ_COND_WRITE}
_SI_KERNEL = 0x80
_DIVIDE_CONFIRMED: set[int] = set()      # forms whose #DE was seen to kill a forked process
# POPFQ in 64-bit mode at CPL 3 (IOPL 0) changes CF PF AF ZF SF TF DF OF NT AC ID, never IF or IOPL
POPF_WRITABLE = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x800 | 0x4000 | 0x40000 | 0x200000


def hardware_flags(iced_bits: int) -> int:
    return sum(hw for bit, hw in _ICED_FLAGS.items() if iced_bits & bit)


def disassemble(code: bytes, rip: int = 0) -> str:
    from iced_x86 import Decoder
    return _formatter.format(Decoder(64, code, ip=rip).decode())


class Mismatch(AssertionError):
    """The emulator and the host CPU disagree."""


@dataclasses.dataclass
class Outcome:
    """How a check ended: "compared" (every register, flag and stack byte agrees), "divide-error",
    "general-protection" or "memory-fault" (both engines refuse the instruction the same way), or
    "undefined" (no longer given: what the SDM leaves undefined is compared with the host CPU's)."""
    kind: str


GPRS = N.GPRS


def _load_layout(layout):
    from regmap.layout import load_layout
    return layout if layout is not None and not isinstance(layout, str) else load_layout(layout)


def window_writes(instr, offset: int, gpr: dict[str, int]) -> list[tuple[int, int]]:
    """(offset, size) of the window bytes ``instr`` writes through its explicit memory operand
    (whose effective address is ``offset``), given the general registers ``gpr`` before it."""
    from forms import BASIS_OF_GPR64, form_info
    from iced_x86 import RegisterExt
    out = []
    info = form_info(instr.code)
    for m in _info_factory.info(instr).used_memory():
        if m.base == instr.memory_base and m.index == instr.memory_index and m.access in _WRITES:
            size = MemorySizeExt.size(m.memory_size)
            at = offset + (m.displacement - instr.memory_displacement)
            if info.bit_offset_operand is not None:
                # bts/btr/btc m, r: the word written is size * (bit offset div (8 * size)) bytes away
                reg = instr.op_register(info.bit_offset_operand)
                bits = RegisterExt.size(reg) * 8
                value = gpr[BASIS_OF_GPR64[RegisterExt.full_register(reg)]] & ((1 << bits) - 1)
                if value >> (bits - 1):
                    value -= 1 << bits
                at += size * (value // (8 * size))
                at &= (1 << _address_size(instr)) - 1     # 67h: the unit's address wraps at 32 bits
            out.append((at, size))
    return out


def selected_elements(instr, ranges: list[tuple[int, int]], values: dict[str, int]) -> list[tuple[int, int]]:
    """An opmasked store writes only the elements its mask selects: ``ranges`` cut down to them.

    A compress (vpcompress*, vcompressp*) is not a masked store: it packs the selected elements
    together, so it writes popcnt(mask) elements from the operand's start (SDM: "compress store").
    Without a mask (k0) both write every element."""
    from iced_x86 import MemorySizeInfo, Register
    if instr.op_mask == Register.NONE:
        return ranges
    selector = values.get(f"k{instr.op_mask - Register.K0}", 0)
    element = MemorySizeInfo(instr.memory_size).element_size or 1
    if _is_compress(instr):
        return [(offset, element * bin(selector & ((1 << (size // element)) - 1)).count("1"))
                for offset, size in ranges if selector & ((1 << (size // element)) - 1)]
    return [(offset + i * element, element) for offset, size in ranges
            for i in range(size // element) if selector >> i & 1]


def _is_compress(instr) -> bool:
    from iced_x86 import Mnemonic
    return instr.mnemonic in {getattr(Mnemonic, m) for m in ("VPCOMPRESSB", "VPCOMPRESSW", "VPCOMPRESSD",
                                                                "VPCOMPRESSQ", "VCOMPRESSPS", "VCOMPRESSPD")}


_SHIFTS = None


def shift_count(instr, regs: dict[str, int]) -> int | None:
    """The masked count of a shift, rotate or double shift (None for other instructions)."""
    global _SHIFTS
    from iced_x86 import Mnemonic, OpKind, Register
    if _SHIFTS is None:
        _SHIFTS = {getattr(Mnemonic, m) for m in ("SHL", "SAL", "SHR", "SAR", "ROL", "ROR", "RCL", "RCR",
                                                   "SHLD", "SHRD")}
    if instr.mnemonic not in _SHIFTS:
        return None
    last = instr.op_count - 1
    kind = instr.op_kind(last)
    if kind == OpKind.REGISTER and instr.op_register(last) == Register.CL:
        count = regs.get("rcx", 0) & 0xFF
    elif kind in (OpKind.IMMEDIATE8,):
        count = instr.immediate8
    else:
        count = 1                                     # the D0/D1 forms
    bits = MemorySizeExt.size(instr.memory_size) * 8 if instr.memory_size else 32
    return count & (0x3F if bits == 64 else 0x1F)


def undefined_flags(instr, regs: dict[str, int]) -> int:
    """The rflags bits the SDM leaves undefined for ``instr`` with these inputs: those iced calls
    undefined, refined for shifts and rotates by their actual count (count 0 changes no flag;
    count 1 defines OF; any larger count leaves OF undefined).  Compared like the others: regmap
    gives the host CPU's (docs/emulator.md, "Undefined flags"); a mismatch names them."""
    undefined = hardware_flags(instr.rflags_undefined)
    count = shift_count(instr, regs)
    if count == 0:
        return 0
    if count == 1:
        return undefined & ~0x800
    if count is not None:
        return undefined | 0x800
    return undefined


def result_undefined(instr, regs: dict[str, int]) -> str:
    """Why the architectural result of ``instr`` is undefined for these inputs ('' if it is defined)."""
    from iced_x86 import Mnemonic
    if instr.mnemonic in (Mnemonic.SHLD, Mnemonic.SHRD) and MemorySizeExt.size(instr.memory_size) == 2:
        count = shift_count(instr, regs)
        if count is not None and count > 16:
            return f"{instr.mnemonic == Mnemonic.SHLD and 'shld' or 'shrd'} of 16 bits by {count}"
    return ""


def undefined_upper_halves(instr, regs: dict[str, int]) -> frozenset[str]:
    """Registers whose upper 32 bits the SDM leaves open: a 67h-prefixed repeated string
    instruction with ecx = 0 repeats nothing, and Intel CPUs still zero the upper halves of rcx,
    rsi and rdi while AMD CPUs leave them alone.  Compared all the same: regmap gives the host
    CPU's (docs/emulator.md); a mismatch names them."""
    repeated = instr.has_rep_prefix or instr.has_repne_prefix
    if instr.is_string_instruction and repeated and _address_size(instr) == 32 \
            and regs.get("rcx", 0) & 0xFFFFFFFF == 0:
        return frozenset(("rcx", "rsi", "rdi"))
    return frozenset()


def _fmt_inputs(values: dict[str, int], names) -> str:
    return "\n".join(f"    {n:7} = {values.get(n, 0):#x}" for n in names)


def check(code: bytes, regs: dict[str, int], *, stack: bytes | None = None, layout=None,
          bias: dict[str, int] | None = None) -> Outcome:
    """Execute ``code`` natively and in the emulator from basis register values ``regs``; compare.

    ``regs`` is given as the emulator sees it, except rip (set here: where the instruction runs
    natively, less the length difference of the re-encoding) and rflags' IF (always set in user
    mode).  ``stack`` is the scratch stack's initial bytes.  ``bias`` names registers that point into the
    window for an implicit operand (a string instruction's rsi/rdi): the native run offsets them onto
    the shadow page.  Raises ``Mismatch`` on any disagreement (a fault on one side only is one).
    """
    from regmap.errors import DivideError, InstructionFault, MemoryFault, RegmapError

    lay = _load_layout(layout)
    placed = N.place(code)
    instr = placed.instruction
    values = {k: v for k, v in regs.items()}
    values["rip"] = placed.emulator_rip
    values["rflags"] = (values.get("rflags", 0) & N.USER_RFLAGS) | 0x2 | IF
    values.setdefault("mxcsr", 0x1F80)
    stack = bytes(N.STACK_SIZE) if stack is None else bytes(stack)

    # the window image: a read of rip's slot gives the next instruction's address
    shadow = lay.image(dict(values, rip=placed.after))
    state = N.NativeState(
        gpr={n: values.get(n, 0) for n in GPRS}, rflags=values["rflags"],
        zmm=[values.get(f"zmm{i}", 0) for i in range(32)], k=[values.get(f"k{i}", 0) for i in range(8)],
        mxcsr=values["mxcsr"], shadow=shadow, stack=stack, st=[values.get(f"st{i}", 0) for i in range(8)],
        fcw=values.setdefault("fcw", 0x37F), fsw=values.get("fsw", 0), ftw=values.get("ftw", 0))
    ea = N.window_address(instr, state.gpr)

    def context() -> str:
        used = list(GPRS) + ["rip", "rflags", "mxcsr"] + _other_registers(instr, lay, ea)
        return (f"{placed.code.hex(' ')}    {_formatter.format(instr)}    ({code_name(instr.code)})\n"
                f"  operand at window {ea if ea is None else hex(ea)}: {_describe(lay, instr, ea)}\n"
                f"  inputs:\n{_fmt_inputs(values, used)}")

    # emulator
    emu_error = None
    try:
        emu = _emulate(placed, instr, values, stack, lay)
    except RegmapError as exc:
        emu, emu_error = None, exc

    # native
    try:
        native = reference_run(placed, state, bias)
    except N.NativeFault as fault:
        general_protection = fault.signo == signal.SIGSEGV and fault.si_code == _SI_KERNEL
        if general_protection and type(emu_error).__name__ == "GeneralProtection":
            return Outcome("general-protection")              # both refuse it (a misaligned movdqa, say)
        if fault.signo == signal.SIGFPE and isinstance(emu_error, DivideError):
            if instr.code not in _DIVIDE_CONFIRMED:
                # once per form: a real process running it dies of SIGFPE (no handler of ours in the way)
                died = N.run_in_child(placed.code, state, bias=bias)
                if died != signal.SIGFPE:
                    raise Mismatch(f"the CPU raised #DE in the runner, but a process running it ended with "
                                   f"signal {died}\n" + context())
                _DIVIDE_CONFIRMED.add(instr.code)
            return Outcome("divide-error")
        if fault.signo == signal.SIGSEGV and isinstance(emu_error, MemoryFault):
            return Outcome("memory-fault")
        if (isinstance(emu_error, InstructionFault) and not isinstance(emu_error, DivideError)
                and (emu_error.signo, emu_error.si_code) == (fault.signo, fault.si_code)):
            return Outcome("fault")               # the native engine delivers the CPU's own exception
        raise Mismatch(f"the CPU faulted ({fault}) but the emulator "
                       + (f"raised {emu_error!r}" if emu_error else "executed the instruction")
                       + "\n" + context()) from None

    # expected: the CPU's registers, then the window bytes it wrote, through the layout
    expected = dict(native.gpr)
    expected["rflags"] = native.rflags
    for i in range(N.vector_count()):
        expected[f"zmm{i}"] = native.zmm[i]
    if N.vector_width() == 512:
        for i in range(8):
            expected[f"k{i}"] = native.k[i]
    expected["mxcsr"] = native.mxcsr
    for i in range(8):
        expected[f"st{i}"] = native.st[i]
    expected["fcw"], expected["fsw"], expected["ftw"] = native.fcw, native.fsw, native.ftw
    expected.update(_x87_pointers(native, placed))
    expected["rip"] = placed.after
    for seg in ("cs", "ss", "ds", "es", "fs", "gs"):
        if seg in values:                 # the host runs with its own selectors: the inputs must match them
            expected[seg] = values[seg]
    window_basis: set[str] = set()
    if ea is not None:
        for off, size in selected_elements(instr, window_writes(instr, ea, state.gpr), values):
            data = int.from_bytes(native.shadow[off:off + size], "little")
            window_basis |= {s.basis for s in lay.resolve(off, size)}
            lay.write(off, size, data, expected)
    if instr.is_vsib and any(m.access in _WRITES for m in _info_factory.info(instr).used_memory()):
        # a scatter: every element's bytes, as the CPU left them (masked-off ones unchanged)
        from form_draws import vsib_addresses, vsib_elements
        size = vsib_elements(instr)[1]
        for off in vsib_addresses(instr, values):
            window_basis |= {s.basis for s in lay.resolve(off, size)}
            lay.write(off, size, int.from_bytes(native.shadow[off:off + size], "little"), expected)
    if instr.is_string_instruction:
        for off, size in string_window_writes(instr, values, native.gpr, bias or {}):
            lay.write(off, size, int.from_bytes(native.shadow[off:off + size], "little"), expected)
    if "rflags" in window_basis:
        # a window store to rflags acts as POPFQ at CPL 3 would: only user-writable flags change
        expected["rflags"] = (native.rflags & ~POPF_WRITABLE) | (expected["rflags"] & POPF_WRITABLE) | 0x2
    if "mxcsr" in window_basis and not N.mxcsr_accepted(expected["mxcsr"]):
        # a store to mxcsr acts as LDMXCSR: ask the CPU whether it takes the value
        if type(emu_error).__name__ == "GeneralProtection":
            return Outcome("general-protection")
        raise Mismatch(f"the CPU's LDMXCSR refuses mxcsr {expected['mxcsr']:#x} (#GP) but the emulator "
                       + (f"raised {emu_error!r}" if emu_error else "stored it") + "\n" + context())
    if emu_error is not None:
        raise Mismatch(f"the emulator raised {emu_error!r} but the CPU executed the instruction\n"
                       + context()) from None

    # the emulator's view of the stack after its writes
    emu_stack = bytearray(stack)
    for address, data in emu.memory_writes:
        if not (N.STACK_BASE <= address and address + len(data) <= N.STACK_BASE + N.STACK_SIZE):
            raise Mismatch(f"the emulator wrote {len(data)} bytes at {address:#x}, outside the scratch "
                           f"stack\n" + context())
        emu_stack[address - N.STACK_BASE:address - N.STACK_BASE + len(data)] = data

    diffs = []
    width_mask = (1 << N.vector_width()) - 1
    # what the SDM leaves undefined is compared too (regmap gives the host's): only named here
    undefined = undefined_flags(instr, values)
    loose = undefined_upper_halves(instr, values)
    why_open = result_undefined(instr, values)
    for name, want in expected.items():
        got = emu.regs.get(name, 0)
        if name.startswith("zmm"):
            got &= width_mask
            want &= width_mask
        if got != want:
            note = ""
            if name == "rflags":
                note = f"   (differing bits {got ^ want:#x}; the SDM leaves {undefined:#x} undefined)"
            elif name in loose:
                note = "   (upper half undefined in the SDM)"
            if why_open:
                note += f"   (result undefined in the SDM: {why_open})"
            diffs.append(f"    {name:7} CPU {want:#x}\n    {'':7} emu {got:#x}{note}")
    if bytes(emu_stack) != native.stack:
        at = next(i for i in range(N.STACK_SIZE) if emu_stack[i] != native.stack[i])
        lo = at & ~7
        diffs.append(f"    stack   at {N.STACK_BASE + lo:#x}: CPU {native.stack[lo:lo + 16].hex()} "
                     f"emu {bytes(emu_stack[lo:lo + 16]).hex()}")
    if diffs:
        raise Mismatch("the emulator disagrees with the CPU\n" + context() + "\n  differences:\n"
                       + "\n".join(diffs))
    return Outcome("compared")


def _x87_pointers(native, placed) -> dict[str, int]:
    """FOP, FIP and FDP as the CPU would have left them running the window form at its own address
    (loaded as 0; whether and when the CPU updates them is its own): the slot's address is the
    instruction's, a shadow page address the window's, and a stored opcode the original form's
    (the placed operand's ModR/M differs; no placed memory form's FOP is 0), except where the form
    loads the environment from memory (fldenv, frstor, ...)."""
    from regmap.x86.native.transfer import ENVIRONMENT, original_fop
    stored = native.fop and placed.instruction.mnemonic not in ENVIRONMENT
    fop = original_fop(placed.code) if stored and original_fop(placed.code) >= 0 else native.fop
    fip = placed.emulator_rip if native.fip == N.INSN_ADDRESS else native.fip
    fdp = native.fdp - N.SHADOW_BASE if 0 <= native.fdp - N.SHADOW_BASE < N.SHADOW_SIZE else native.fdp
    return {"fop": fop, "fip": fip, "fdp": fdp}


def reference_run(placed, state, bias):
    """The CPU's answer for ``check``: from the independent runner (cpu_runner.py), not the native
    engine's own stub, so that a bug in the stub's loading and saving of the machine shows; the
    stub only where the runner cannot be built (no gcc: the summary says so)."""
    import cpu_runner
    if cpu_runner.get() is None:
        return N.run_native(placed.code, state, bias=bias)
    own = cpu_runner.place(placed.code, N.INSN_ADDRESS, N.SHADOW_BASE)
    if own != placed.native:
        raise Mismatch(f"{_formatter.format(placed.instruction)}: the engine places it as {placed.native.hex(' ')}, "
                       f"the runner as {own.hex(' ')}")
    return cpu_runner.run(placed.code, state, bias=bias)


def _emulate(placed, instr, values, stack: bytes, lay):
    """``regmap.emulate``; a repeated string instruction that the emulator runs one iteration per
    step (rip stays on it) is stepped again until it is done, as the CPU would go on."""
    import regmap
    from regmap import alias
    # One instruction, as the CPU ran one (a jump into the code's own bytes would run on).
    # trace=False: the compiled fast paths run, and are compared with the CPU too.
    emu = regmap.emulate(placed.code, dict(values), rip=placed.emulator_rip, layout=lay,
                         memory={N.STACK_BASE: stack}, trace=False, max_steps=1)
    if not (instr.has_rep_prefix or instr.has_repne_prefix):
        return emu
    basis = set(alias.load("amd64").basis)
    memory = bytearray(stack)
    writes = list(emu.memory_writes)
    for _ in range(100000):
        if emu.regs.get("rip") != placed.emulator_rip:
            break
        for address, data in emu.memory_writes:
            memory[address - N.STACK_BASE:address - N.STACK_BASE + len(data)] = data
        regs = {k: v for k, v in emu.regs.items() if k in basis}
        emu = regmap.emulate(placed.code, regs, rip=placed.emulator_rip, layout=lay,
                             memory={N.STACK_BASE: bytes(memory)}, trace=False, max_steps=1)
        writes += emu.memory_writes
    emu.memory_writes = writes
    return emu


def string_window_writes(instr, before: dict[str, int], after: dict[str, int], bias: dict[str, int]):
    """(offset, size) of the window bytes a string instruction stored through rdi (if rdi points into
    the window), from the registers before and after the native run."""
    from iced_x86 import Mnemonic
    if instr.mnemonic not in (Mnemonic.MOVSB, Mnemonic.MOVSW, Mnemonic.MOVSD, Mnemonic.MOVSQ,
                              Mnemonic.STOSB, Mnemonic.STOSW, Mnemonic.STOSD, Mnemonic.STOSQ):
        return []
    if "rdi" not in bias:
        return []
    a32 = _address_size(instr) == 32
    amask = 0xFFFFFFFF if a32 else 2**64 - 1
    size = MemorySizeExt.size(instr.memory_size)
    if instr.has_rep_prefix or instr.has_repne_prefix:
        iterations = ((before.get("rcx", 0) & amask) - (after["rcx"] & amask)) & amask
    else:
        iterations = 1
    step = -size if before.get("rflags", 0) & 0x400 else size
    rdi = before.get("rdi", 0)
    return [(((rdi + i * step) & amask), size) for i in range(iterations)]


def _address_size(instr) -> int:
    for m in _info_factory.info(instr).used_memory():
        return {1: 16, 2: 32, 3: 64}.get(m.address_size, 64)          # iced CodeSize
    return 64


def _reporting() -> bool:
    """Whether a failure now is the one reported: outside hypothesis, or its final replay (not a
    shrinking step, which would pay for every simplification again)."""
    try:
        from hypothesis.control import current_build_context
        return current_build_context().is_final
    except Exception:
        return True


def check_minimized(form: Form, regs: dict[str, int], *, stack: bytes | None = None, layout=None) -> Outcome:
    """``check``, and on a mismatch that is being reported simplify the inputs (registers to zero,
    one at a time, while the instruction still disagrees) so the report shows what matters."""
    try:
        return check(form.bytes, regs, stack=stack, layout=layout, bias=form.bias)
    except Mismatch as first:
        if not _reporting():
            raise
        failure = first
    info = form_info(form.code)
    keep = set(form.fixed) | ({"rflags"} if form.rflags_fixed[0] else set())
    if info.uses_stack:
        keep.add("rsp")
    if info.is_branch:
        from forms import slot_registers
        keep |= slot_registers(form.offset, form.size)
    current = dict(regs)
    # fcw's reserved bit 6 reads back as 1 (FXSAVE): a trial fcw of 0 would add a difference of its own
    simple = {"rflags": 0, "mxcsr": 0x1F80, "fcw": 0x37F}
    for name in [n for n in current if n not in keep]:
        target = simple.get(name, 0)
        if current[name] == target:
            continue
        trial = dict(current, **{name: target})
        try:
            check(form.bytes, trial, stack=stack, layout=layout, bias=form.bias)
        except Mismatch as still:
            current, failure = trial, still
        except Exception:
            pass
    raise Mismatch(f"{failure}\n  (inputs simplified from the failing example; form {form!r})") from None


def _other_registers(instr, lay, ea) -> list[str]:
    """Vector and opmask registers ``instr`` uses or its window operand covers (by basis name)."""
    from iced_x86 import RegisterExt
    names = []
    for used in _info_factory.info(instr).used_registers():
        reg = used.register
        if RegisterExt.is_vector_register(reg):
            names.append(f"zmm{RegisterExt.number(reg)}")
        elif RegisterExt.is_k(reg):
            names.append(f"k{RegisterExt.number(reg)}")
    if ea is not None:
        try:
            names += [s.basis for s in lay.resolve(ea, max(MemorySizeExt.size(instr.memory_size), 1))]
        except Exception:
            pass
    return [n for i, n in enumerate(names) if n not in names[:i] and n not in GPRS and n not in ("rip", "rflags", "mxcsr")]


def _describe(lay, instr, ea) -> str:
    if ea is None:
        return "-"
    size = MemorySizeExt.size(instr.memory_size)
    try:
        return lay.describe(ea, max(size, 1)) + f" ({size} bytes)"
    except Exception as exc:                                          # a hole
        return f"{exc}"


# ---------------------------------------------------------------------------------------------
# inputs

_EDGES64 = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
            2**63 - 1, 2**63, 2**64 - 1, 2**64 - 2)
_FLOAT32 = (0x00000000, 0x80000000, 0x3F800000, 0xBF800000, 0x7F800000, 0xFF800000, 0x7FC00000,
            0xFFC00000, 0x7F800001, 0x00000001, 0x007FFFFF, 0x7F7FFFFF, 0x4B000000)
_FLOAT64 = (0, 2**63, 0x3FF0000000000000, 0xBFF0000000000000, 0x7FF0000000000000, 0xFFF0000000000000,
            0x7FF8000000000000, 0x7FF0000000000001, 1, 0x000FFFFFFFFFFFFF, 0x7FEFFFFFFFFFFFFF)


def random_vector(rng: random.Random, bits: int = 512) -> int:
    """A vector value whose lanes mix random bits, integer edges and float specials."""
    style = rng.randrange(6)
    if style == 0:
        return rng.getrandbits(bits)
    value = 0
    for lane in range(bits // 64):
        pick = rng.randrange(5)
        if pick == 0:
            q = rng.choice(_EDGES64)
        elif pick == 1:
            q = rng.choice(_FLOAT32) | rng.choice(_FLOAT32) << 32
        elif pick == 2:
            q = rng.choice(_FLOAT64)
        elif pick == 3:
            q = int.from_bytes(bytes(rng.choice((0, 0x7F, 0x80, 0xFF, 1)) for _ in range(8)), "little")
        else:
            q = rng.getrandbits(64)
        value |= q << (64 * lane)
    return value


# ---------------------------------------------------------------------------------------------
# the session's tally


class Report:
    """What the oracle suite verified, skipped and learned, for the terminal summary."""

    def __init__(self):
        self.verified: dict[int, set[bool]] = {}
        self.skipped: dict[int, str] = {}
        self.outcomes: dict[str, int] = {}
        self.failed: set[int] = set()

    def passed(self, code: int, aligned: bool, kinds: list[str]) -> None:
        self.verified.setdefault(code, set()).add(aligned)
        for kind in kinds:
            self.outcomes[kind] = self.outcomes.get(kind, 0) + 1

    def fail(self, code: int) -> None:
        self.failed.add(code)

    def skip(self, code: int, reason: str) -> None:
        self.skipped[code] = reason

    def summary_lines(self) -> list[str]:
        if not (self.verified or self.skipped):
            return []
        verified = {c: v for c, v in self.verified.items() if c not in self.failed}
        both = sum(1 for v in verified.values() if len(v) == 2)
        lines = [f"oracle: {len(verified)} instruction forms (iced Code values) verified against the host CPU "
                 f"({both} both aligned and unaligned; {sum(self.outcomes.values())} checks: "
                 + ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items())) + ")"]
        if self.failed:
            lines.append(f"oracle: {len(self.failed)} forms disagree with the CPU: "
                         + " ".join(sorted(code_name(c) for c in self.failed)))
        skipped = {c: r for c, r in self.skipped.items() if c not in self.verified}
        if skipped:
            lines.append(f"oracle: {len(skipped)} forms skipped:")
            for code, why in sorted(skipped.items(), key=lambda kv: code_name(kv[0])):
                lines.append(f"    {code_name(code)}: {why}")
        return lines


REPORT = Report()
