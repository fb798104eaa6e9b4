"""Where each amd64 basis register lives, in every container regmap reads registers from.

One table, as data (the alias files say what the registers *are*; this says where a running
thread keeps them):

- the signal frame's ``uc_mcontext.gregs`` (index of its 64-bit word), for the in-process runtime;
- ptrace's ``struct user_regs_struct`` (field name), for the tracer;
- the native engine's state block (slot number, 8 bytes each from ``B_GPR``);
- the XSAVE image, for the vector, opmask and x87 registers: pieces ``(component, offset in the
  component, bytes, bit shift)``.  Where each component starts is the CPU's (CPUID leaf 0xD:
  Intel and AMD differ), so `regmap.x86.xsave` adds that at run time; x87 and SSE live in the
  legacy area (the x87 registers from byte 0, XMM(i) from byte 160).

This module imports nothing: ``regmap exec`` reads it before the x86 layer is loaded.
"""
from __future__ import annotations

# where each flag lives in rflags (bit 1 always reads 1)
CF, PF, AF, ZF, SF, TF, IF, DF, OF = (1 << b for b in (0, 2, 4, 6, 7, 8, 9, 10, 11))
NT, RF, VM, AC, ID = (1 << b for b in (14, 16, 17, 18, 21))

# XSAVE state components (SDM Vol. 1, 13.1)
X87, SSE, AVX, OPMASK, ZMM_HI256, HI16_ZMM = 0, 1, 2, 5, 6, 7

#          name       gregs  user_regs   engine block
GENERAL = (("rax",     13,    "rax",      0),
           ("rcx",     14,    "rcx",      1),
           ("rdx",     12,    "rdx",      2),
           ("rbx",     11,    "rbx",      3),
           ("rsp",     15,    "rsp",      4),
           ("rbp",     10,    "rbp",      5),
           ("rsi",      9,    "rsi",      6),
           ("rdi",      8,    "rdi",      7),
           *((f"r{n}", n - 8, f"r{n}", n) for n in range(8, 16)),
           ("rip",     16,    "rip",      None),
           ("rflags",  17,    "eflags",   None),
           ("fs_base", None,  "fs_base",  None),
           ("gs_base", None,  "gs_base",  None))
SELECTORS = ("cs", "ds", "es", "fs", "gs", "ss")     # user_regs fields of their own name, 16 bits

# name -> pieces (component, offset in it, bytes, shift)
XSAVE: dict[str, tuple[tuple[int, int, int, int], ...]] = {
    **{f"zmm{n}": ((SSE, 16 * n, 16, 0), (AVX, 16 * n, 16, 128), (ZMM_HI256, 32 * n, 32, 256))
       for n in range(16)},
    **{f"zmm{n}": ((HI16_ZMM, 64 * (n - 16), 64, 0),) for n in range(16, 32)},
    **{f"k{n}": ((OPMASK, 8 * n, 8, 0),) for n in range(8)},
    **{f"st{n}": ((X87, 32 + 16 * n, 10, 0),) for n in range(8)},
    "fcw": ((X87, 0, 2, 0),), "fsw": ((X87, 2, 2, 0),), "ftw": ((X87, 4, 1, 0),),   # ftw: abridged
    "fop": ((X87, 6, 2, 0),), "fip": ((X87, 8, 8, 0),), "fdp": ((X87, 16, 8, 0),),   # 64-bit format
}
LEGACY_START = {X87: 0, SSE: 160}        # the components kept in the legacy area, and where
MXCSR_OFFSET = 24                        # in the legacy area, saved with SSE or AVX state

GREGS_ORDER = tuple(name for name, _ in sorted(((n, g) for n, g, _, _ in GENERAL if g is not None),
                                               key=lambda row: row[1]))
USER_REGS = {name: field for name, _, field, _ in GENERAL}
ENGINE_ORDER = tuple(name for name, _ in sorted(((n, s) for n, _, _, s in GENERAL if s is not None),
                                                key=lambda row: row[1]))
