"""The host CPU as data: who made it, what it runs, and where its XSAVE image keeps each register.

Everything regmap computes that depends on the CPU comes from one `Profile`:

- ``flags``: the kernel's feature flags (/proc/cpuinfo), which say what the CPU has *and* the
  kernel enabled (avx512f is absent where XCR0 lacks the AVX-512 state);
- ``xcr0``: the state components user code has (XGETBV 0);
- ``components``: each enabled user component's offset and size in the XSAVE *standard* format
  (CPUID leaf 0xD, sub-leaf i: EBX offset, EAX size), which is what signal frames and
  ``NT_X86_XSTATE`` use.  Intel and AMD differ: AVX-512 opmask state is at 1088 on Intel parts
  (room is kept for MPX) and at 832 on AMD's;
- ``mxcsr_mask``: the MXCSR bits LDMXCSR takes (FXSAVE byte 28; 0 there means the SDM's default
  0xFFBF), AMD's misaligned-SSE bit 17 included where the CPU has it.

`current()` measures the running host (CPUID, XGETBV and FXSAVE through a code page generated
with iced-x86); `parse` reads a recorded ``cpuid.txt`` (tests/fixtures/hosts/), so code that
depends on a CPU can be checked on every host against the profiles of others.
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import platform
import re
import sys
from typing import Mapping

from iced_x86 import CpuidFeature, Instruction

from regmap.places import AVX, HI16_ZMM, OPMASK, SSE, X87, ZMM_HI256

# XSAVE state components (SDM Vol. 1, 13.1): those holding registers are in `places`
BNDREGS, BNDCSR, PKRU, XTILECFG, XTILEDATA = 3, 4, 9, 17, 18
COMPONENT_NAMES = {X87: "x87", SSE: "SSE", AVX: "AVX", BNDREGS: "BNDREGS", BNDCSR: "BNDCSR",
                   OPMASK: "opmask", ZMM_HI256: "ZMM_Hi256", HI16_ZMM: "Hi16_ZMM", PKRU: "PKRU",
                   XTILECFG: "XTILECFG", XTILEDATA: "XTILEDATA"}
LEGACY_SIZE, HEADER_SIZE = 512, 64
DEFAULT_MXCSR_MASK = 0xFFBF           # what an FXSAVE image's MXCSR_MASK of 0 stands for


@dataclasses.dataclass(frozen=True, eq=False)      # hashed by identity: one layout per profile
class Profile:
    """One CPU as regmap needs to know it (see the module's text)."""

    name: str
    vendor: str
    family: int
    model: int
    stepping: int
    flags: frozenset
    xcr0: int
    components: Mapping[int, tuple[int, int]]
    mxcsr_mask: int
    aligned: frozenset = frozenset()    # components 64-byte aligned in the compacted format (0xD ECX[1])

    @property
    def vector_width(self) -> int:
        """Bits of vector state: 512, 256 or 128."""
        return 512 if "avx512f" in self.flags else 256 if "avx" in self.flags else 128

    @property
    def vector_count(self) -> int:
        return 32 if self.vector_width == 512 else 16

    @property
    def wide_opmasks(self) -> bool:
        """64-bit opmask registers (AVX512BW); without it k0..k7 are 16 bits."""
        return "avx512bw" in self.flags

    def xsave_size(self, features: int) -> int:
        """Bytes of a standard-format image holding the components ``features`` names."""
        end = LEGACY_SIZE + HEADER_SIZE if features & ~0b11 else LEGACY_SIZE
        for number, (offset, size) in self.components.items():
            if features >> number & 1:
                end = max(end, offset + size)
        return end

    def describe(self) -> str:
        return f"{self.vendor} family {self.family:#x} model {self.model:#x} ({self.name})"


def profile_from_flags(name: str, flags, vendor: str = "GenuineIntel") -> Profile:
    """A CPU with these /proc/cpuinfo flags and Intel's documented XSAVE offsets: enough for
    code generation, which depends only on the features (`stub`'s tests of every profile)."""
    flags = frozenset(flags)
    xcr0 = 0b11
    components: dict[int, tuple[int, int]] = {}
    if "avx" in flags:
        xcr0 |= 1 << AVX
        components[AVX] = (576, 256)
    if "avx512f" in flags:
        xcr0 |= 1 << OPMASK | 1 << ZMM_HI256 | 1 << HI16_ZMM
        components.update({OPMASK: (1088, 64), ZMM_HI256: (1152, 512), HI16_ZMM: (1664, 1024)})
    if "amx_tile" in flags:
        xcr0 |= 1 << XTILECFG | 1 << XTILEDATA
        components.update({XTILECFG: (2752, 64), XTILEDATA: (2816, 8192)})
    return Profile(name, vendor, 6, 0, 0, flags, xcr0, components, 0xFFFF)


# -- a recorded host: cpuid.txt -------------------------------------------------------------------
_LEAF = re.compile(r"leaf_0xd\.(\d+):\s*eax=(0x[0-9a-f]+)\s+ebx=(0x[0-9a-f]+)\s+ecx=(0x[0-9a-f]+)", re.I)


def parse(text: str, name: str = "recorded") -> Profile:
    """The profile in a ``cpuid.txt`` as the recorder writes it (tests/fixtures/hosts/README.md).
    ValueError naming the line or field that is missing or malformed."""
    fields: dict[str, str] = {}
    leaves: dict[int, tuple[int, int, int]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LEAF.match(line)
        if match:
            leaves[int(match[1])] = (int(match[2], 16), int(match[3], 16), int(match[4], 16))
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
        else:
            raise ValueError(f"{name}:{number}: not 'key: value': {line!r}")

    def number(key: str) -> int:
        if key not in fields:
            raise ValueError(f"{name}: no {key!r} line")
        return int(fields[key].split()[0], 0)

    xcr0 = number("xcr0")
    components, aligned = {}, set()
    for i, (size, offset, ecx) in sorted(leaves.items()):
        if i >= 2 and xcr0 >> i & 1 and size and not ecx & 1:
            components[i] = (offset, size)
            if ecx & 2:
                aligned.add(i)
    mask = number("mxcsr_mask")
    return Profile(name, fields.get("vendor", "?"), number("family"), number("model"), number("stepping"),
                   frozenset(fields.get("cpuinfo_flags", "").split()), xcr0, components,
                   mask or DEFAULT_MXCSR_MASK, frozenset(aligned))


# -- the running host -----------------------------------------------------------------------------
def platform_problem() -> str | None:
    """Why machine code cannot run on this host (the native engine, `measure`), or None."""
    if sys.platform != "linux":
        return f"the native engine needs Linux (this is {sys.platform})"
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"the native engine needs an x86-64 CPU (this is {platform.machine()})"
    return None


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The feature flags of the host CPU, as /proc/cpuinfo spells them."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


class _Probe:
    """CPUID, XGETBV and FXSAVE, as three functions on one generated code page."""

    def __init__(self):
        from iced_x86 import Code, Register
        from regmap.x86.machine_code import Labels, assemble, based as mem, code_page, label_addresses

        labels = Labels()
        xgetbv, fxsave = labels.new(), labels.new()
        ins = [   # cpuid(leaf edi, sub-leaf esi, uint32 out[4] rdx)
            Instruction.create_reg(Code.PUSH_R64, Register.RBX),
            Instruction.create_reg_reg(Code.MOV_R64_RM64, Register.R8, Register.RDX),
            Instruction.create_reg_reg(Code.MOV_R32_RM32, Register.EAX, Register.EDI),
            Instruction.create_reg_reg(Code.MOV_R32_RM32, Register.ECX, Register.ESI),
            Instruction.create(Code.CPUID),
            *(Instruction.create_mem_reg(Code.MOV_RM32_R32, mem(Register.R8, 4 * i), reg)
              for i, reg in enumerate((Register.EAX, Register.EBX, Register.ECX, Register.EDX))),
            Instruction.create_reg(Code.POP_R64, Register.RBX),
            Instruction.create(Code.RETNQ),
            labels.at(xgetbv),    # uint64 xgetbv(void): XCR0
            Instruction.create_reg_reg(Code.XOR_R32_RM32, Register.ECX, Register.ECX),
            Instruction.create(Code.XGETBV),
            Instruction.create_reg_i32(Code.SHL_RM64_IMM8, Register.RDX, 32),
            Instruction.create_reg_reg(Code.OR_R64_RM64, Register.RAX, Register.RDX),
            Instruction.create(Code.RETNQ),
            labels.at(fxsave),    # fxsave(void *area rdi), 16-byte aligned
            Instruction.create_mem(Code.FXSAVE64_M512BYTE, mem(Register.RDI)),
            Instruction.create(Code.RETNQ),
        ]
        marks = {}

        def generate(base):
            code = assemble(ins, base)
            marks.update(label_addresses(ins, code, base))
            return code

        base = code_page(generate)
        self.cpuid = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p)(base)
        self.xgetbv = ctypes.CFUNCTYPE(ctypes.c_uint64)(marks[xgetbv])
        self.fxsave = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(marks[fxsave])

    def leaf(self, leaf: int, sub: int = 0) -> tuple[int, int, int, int]:
        out = (ctypes.c_uint32 * 4)()
        self.cpuid(leaf, sub, ctypes.addressof(out))
        return tuple(out)


def measure() -> Profile:
    """The running host's profile (CPUID, XGETBV, FXSAVE; flags from /proc/cpuinfo)."""
    problem = platform_problem()
    if problem:
        raise OSError(problem)
    probe = _Probe()
    _, ebx, ecx, edx = probe.leaf(0)
    vendor = b"".join(r.to_bytes(4, "little") for r in (ebx, edx, ecx)).decode("ascii", "replace")
    eax, _, ecx1, _ = probe.leaf(1)
    family, model = eax >> 8 & 0xF, eax >> 4 & 0xF
    if family == 0xF:
        family += eax >> 20 & 0xFF
    if family in (0x6, 0xF) or family > 0xF:
        model |= (eax >> 16 & 0xF) << 4
    osxsave = bool(ecx1 >> 27 & 1)
    xcr0 = probe.xgetbv() if osxsave else 0b11
    components, compact_aligned = {}, set()
    for i in range(2, 64):
        if xcr0 >> i & 1:
            size, offset, ecx, _ = probe.leaf(0xD, i)
            if size and not ecx & 1:
                components[i] = (offset, size)
                if ecx & 2:
                    compact_aligned.add(i)
    area = (ctypes.c_uint8 * (512 + 16))()
    aligned = (ctypes.addressof(area) + 15) & ~15
    probe.fxsave(aligned)
    mask = ctypes.c_uint32.from_address(aligned + 28).value
    return Profile("this host", vendor, family, model, eax & 0xF, cpu_flags(), xcr0, components,
                   mask or DEFAULT_MXCSR_MASK, frozenset(compact_aligned))


@functools.lru_cache(maxsize=None)
def current() -> Profile:
    """The running host, measured once.  Off Linux x86-64 (the pure backend on any OS) a CPU
    with no vector state beyond SSE and the default MXCSR_MASK."""
    if platform_problem():
        return Profile("no native host", "?", 0, 0, 0, frozenset(), 0b11, {}, 0xFFFF)
    try:
        return measure()
    except OSError:
        # machine code refused (no executable pages: SELinux deny_execmem, PaX): the pure
        # emulator still works; MXCSR_MASK as the kernel's flags tell it, no XSAVE layout
        flags = cpu_flags()
        return Profile("unmeasured host", "?", 0, 0, 0, flags, 0b11, {},
                       0xFFFF | (1 << 17 if "misalignsse" in flags else 0))


# -- features by instruction ----------------------------------------------------------------------
# iced-x86 CpuidFeature names whose /proc/cpuinfo spelling is not simply the name in lower case
# ("" = every x86-64 CPU has it).  Spellings only: which features exist comes from iced-x86.
_CPUINFO_SPELLING = {
    "INTEL8086": "", "INTEL186": "", "INTEL286": "", "INTEL386": "", "INTEL486": "", "X64": "lm",
    "CPUID": "", "MULTIBYTENOP": "", "PAUSE": "", "FPU": "fpu", "FPU287": "fpu", "FPU387": "fpu",
    "CMOV": "cmov", "CX8": "cx8", "CMPXCHG16B": "cx16", "SSE3": "pni", "LZCNT": "abm",
    "PREFETCHW": "3dnowprefetch", "SHA": "sha_ni", "CLFSH": "clflush", "AVX512_IFMA": "avx512ifma",
    "AVX512_VBMI": "avx512vbmi", "SEP": "sep", "SYSCALL": "syscall", "TSC": "tsc", "MSR": "msr",
    "FXSR": "fxsr", "RDTSCP": "rdtscp", "D3NOW": "3dnow", "D3NOWEXT": "3dnowext", "HLE": "hle",
    "RTM": "rtm", "MPX": "mpx", "CET_SS": "user_shstk", "CET_IBT": "ibt", "KL": "keylocker",
}
_FEATURE_NAMES = {value: name for name, value in vars(CpuidFeature).items()
                  if isinstance(value, int) and not name.startswith("_")}


def feature_flag(feature: int) -> str:
    """The /proc/cpuinfo flag of an iced-x86 CpuidFeature ("" if every x86-64 CPU has it)."""
    name = _FEATURE_NAMES.get(feature, str(feature))
    return _CPUINFO_SPELLING.get(name, name.lower())


@functools.lru_cache(maxsize=None)
def missing_features(code: int, flags: frozenset[str] | None = None) -> tuple[str, ...]:
    """The features ``code`` needs that the CPU with /proc/cpuinfo ``flags`` (the host's by
    default) lacks: empty if it runs the instruction."""
    have = cpu_flags() if flags is None else flags
    needed = {feature_flag(f) for f in Instruction.create(code).cpuid_features()} - {""}
    return tuple(sorted(needed - have))


# -- the running host's vector state, as the native engine lays it out -----------------------------
def vector_width() -> int:
    return current().vector_width


def vector_count() -> int:
    return current().vector_count


def wide_opmasks() -> bool:
    return current().wide_opmasks


# MXCSR bits software may set: the emulator's LDMXCSR check, the native engine's load
MXCSR_WRITABLE = current().mxcsr_mask
