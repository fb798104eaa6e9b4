"""Which instruction forms regmap runs on the window, for the host CPU: `coverage()`.

The universe is every iced-x86 `Code` valid in 64-bit mode, executable at CPL 3, that accesses
memory through an operand and that the host CPU has the features for (iced-x86's per-`Code`
CPUID feature lists against /proc/cpuinfo).  Each is run by its Python semantics, by the native
engine, or is unsupported, with the reason from `regmap.x86.native.unsupported`.
"""
from __future__ import annotations

import dataclasses
import functools

import iced_x86
from iced_x86 import Mnemonic, OpCodeInfo, OpCodeOperandKind as K

from regmap.x86 import host
from regmap.x86.native.unsupported import form_refusal

# operand kinds that name memory (explicit, VSIB, MPX, AMX's SIB memory, implicit rsi/rdi/rbx)
MEMORY_KINDS = frozenset({
    K.MEM, K.MEM_OFFS, K.MEM_MPX, K.MEM_MIB, K.SIBMEM, K.MEM_VSIB32X, K.MEM_VSIB64X, K.MEM_VSIB32Y,
    K.MEM_VSIB64Y, K.MEM_VSIB32Z, K.MEM_VSIB64Z, K.R8_OR_MEM, K.R16_OR_MEM, K.R32_OR_MEM, K.R64_OR_MEM,
    K.R32_OR_MEM_MPX, K.R64_OR_MEM_MPX, K.BND_OR_MEM_MPX, K.MM_OR_MEM, K.XMM_OR_MEM, K.YMM_OR_MEM,
    K.ZMM_OR_MEM, K.K_OR_MEM, K.SEG_RSI, K.ES_RDI, K.SEG_RDI, K.SEG_RBX_AL})
# forms whose memory operand is only an address: they never access (so never fault on) the window
NO_ACCESS = frozenset({Mnemonic.LEA, Mnemonic.NOP, Mnemonic.PREFETCH, Mnemonic.PREFETCHW,
                       Mnemonic.PREFETCHNTA, Mnemonic.PREFETCHT0, Mnemonic.PREFETCHT1,
                       Mnemonic.PREFETCHT2, Mnemonic.PREFETCHWT1, Mnemonic.PREFETCHIT0,
                       Mnemonic.PREFETCHIT1, Mnemonic.CLDEMOTE, Mnemonic.BNDMK, Mnemonic.BNDCL,
                       Mnemonic.BNDCU, Mnemonic.BNDCN})
_CODE_NAMES = {value: name for name, value in vars(iced_x86.Code).items()
               if isinstance(value, int) and not name.startswith("_")}


@dataclasses.dataclass(frozen=True)
class Entry:
    code: int
    name: str
    status: str          # "python", "native" or "unsupported"
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class Coverage:
    entries: tuple[Entry, ...]

    def count(self, status: str) -> int:
        return sum(1 for e in self.entries if e.status == status)

    @property
    def supported(self) -> int:
        return self.count("python") + self.count("native")

    @property
    def fraction(self) -> float:
        return self.supported / len(self.entries) if self.entries else 1.0

    def as_dict(self) -> dict:
        return {"total": len(self.entries), "python": self.count("python"), "native": self.count("native"),
                "unsupported": self.count("unsupported"), "supported_fraction": round(self.fraction, 4),
                "forms": [dataclasses.asdict(e) for e in self.entries]}


def in_universe(code: int, flags: frozenset[str] | None = None) -> bool:
    """Whether ``code`` accesses memory through an operand and the CPU with ``flags`` (the host's
    by default) runs it in 64-bit user mode."""
    if code == iced_x86.Code.INVALID:
        return False
    info = OpCodeInfo(code)
    if not info.mode64 or not info.cpl3 or info.is_input_output or not info.is_instruction:
        return False
    if info.mnemonic in NO_ACCESS or info.is_nop or info.is_reserved_nop:
        return False
    if not set(info.op_kinds()) & MEMORY_KINDS:
        return False
    return not host.missing_features(code, flags)


def status_of(code: int) -> tuple[str, str]:
    from regmap.x86.emulator import has_python_semantics
    reason = form_refusal(code)
    if reason:
        return "unsupported", reason
    if has_python_semantics(code):
        return "python", ""
    problem = host.platform_problem()
    if problem:
        return "unsupported", problem
    return "native", ""


@functools.lru_cache(maxsize=None)
def coverage(flags: frozenset[str] | None = None) -> Coverage:
    """Every form in the universe of the CPU with ``flags`` (the host's) and how regmap runs it."""
    entries = []
    for code in sorted(_CODE_NAMES):
        if in_universe(code, flags):
            status, reason = status_of(code)
            entries.append(Entry(code, _CODE_NAMES[code], status, reason))
    return Coverage(tuple(entries))
