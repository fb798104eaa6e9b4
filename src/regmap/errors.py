"""Every error regmap raises, in one place, so callers can catch by meaning."""


class RegmapError(Exception):
    """Base of every regmap error."""


class AliasError(RegmapError):
    """A register file (or layout) is malformed or unsolvable.

    When the error comes from text, ``location`` is ``"file:line:col"`` and is
    the start of the message.
    """

    def __init__(self, message: str, location: str | None = None):
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)


class LayoutError(RegmapError):
    """An address or range is not mapped by the layout (a hole, or past the window)."""


class RegisterValueError(RegmapError, ValueError):
    """A value given for a register does not fit it: too wide, a flag that is not 0 or 1, or
    not an integer.  The message names the register and its width."""


class UnsupportedInstruction(RegmapError):
    """An instruction touches the window but regmap has no semantics for it."""

    def __init__(self, address: int, code: bytes, disassembly: str, reason: str = "not supported"):
        self.address, self.code, self.disassembly, self.reason = address, bytes(code), disassembly, reason
        super().__init__(
            f"unsupported instruction at {address:#x}: {code.hex(' ')}  {disassembly}  ({reason})")


class RegisterNotWritable(RegmapError):
    """The machine cannot set this register (the in-process runtime and segment selectors)."""


class NotWindowAccess(RegmapError):
    """The instruction at rip does not access the window: the fault is genuine."""


class RegisterAddressed(NotWindowAccess):
    """Strict addressing: the instruction's page-0 address comes from registers (``[rbx+8]`` with
    rbx = 0), not from a constant in it (``[0x38]``).  It is the genuine NULL-pointer fault it
    would be without regmap."""

    reason = "not a window access: a register-addressed page-0 access (strict addressing)"


def handler_warning(where: str, disassembly: str, rip: str, strict_switch: str) -> str:
    """What regmap says, once, when a program with its own SIGSEGV handler makes a
    register-addressed page-0 access in the permissive mode: without regmap that handler would
    have had a NULL-pointer fault (a JVM's implicit null check); with it, registers were read."""
    return (f"{where} has its own SIGSEGV handler and made a register-addressed page-0 access "
            f"({disassembly} at {rip}), emulated as a register access; without regmap it is a "
            f"NULL-pointer fault for that handler, and the program may now compute something "
            f"else. {strict_switch} leaves such accesses genuine faults (said once)")


class DecodeError(NotWindowAccess):
    """No instruction can be decoded from the bytes (empty, invalid, or cut short).

    A `NotWindowAccess` too: at a fault site, bytes regmap cannot decode are the
    program's own fault, not a window access.
    """

    def __init__(self, address: int | None, code: bytes, truncated: bool = False,
                 reason: str = "", text: str | None = None):
        self.address, self.code, self.truncated = address, bytes(code), truncated
        if not reason:
            reason = ("there are no bytes" if not code else
                      "the bytes end in the middle of an instruction" if truncated else
                      "not a valid x86-64 instruction")
        shown = repr(text) if text is not None else \
            "[" + self.code[:15].hex(" ") + (" .." if len(self.code) > 15 else "") + "]"
        where = f" at {address:#x}" if address is not None else ""
        super().__init__(f"cannot decode an instruction{where} from {shown}: {reason}")


class InstructionFault(RegmapError):
    """The instruction itself raises an exception on the CPU (#DE, #GP, #XM, #MF, #UD, #AC):
    deliver signal ``signo`` with ``si_code`` and ``si_addr`` (None: the instruction's address)
    at the instruction, leaving its state untouched, as the kernel would."""

    def __init__(self, message: str, signo: int, si_code: int, si_addr: int | None = None):
        self.signo, self.si_code, self.si_addr = signo, si_code, si_addr
        super().__init__(message)


class DivideError(InstructionFault):
    """#DE: the program divided by zero or the quotient overflowed (SIGFPE on the CPU)."""

    SIGFPE, FPE_INTDIV = 8, 1

    def __init__(self, message: str = "divide error"):
        super().__init__(message, self.SIGFPE, self.FPE_INTDIV)


class MemoryFault(RegmapError):
    """An access to real memory (outside the window) failed: a genuine fault.

    ``cpu``, where the backend saw it (the in-process runtime), is the fault the CPU raised for
    that access (signal, si_code, si_addr, trap number, error code): what the program gets."""

    def __init__(self, address: int, write: bool = False, cpu=None):
        self.address, self.write, self.cpu = address, write, cpu
        super().__init__(f"{'write to' if write else 'read from'} {address:#x} faulted")


class UnsupportedPlatform(RegmapError):
    """The in-process or traced runtime needs Linux on x86-64."""


class GeneralProtection(NotWindowAccess):
    """#GP: the CPU refuses the access (a misaligned SSE operand, say); the fault is genuine."""


class WindowHole(NotWindowAccess):
    """The access touches a byte of the window no register is mapped to: it faults, as on the CPU.

    ``hole`` says which byte (the layout's own message)."""

    def __init__(self, message: str, hole: str, instruction: str = ""):
        self.hole, self.instruction = hole, instruction
        super().__init__(message)
