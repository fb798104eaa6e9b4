"""The forms with a window operand that neither Python semantics nor the native engine run, and why.

One table, by reason.  Everything else that touches memory and that the host
CPU runs in user mode is emulated: in Python where the form has semantics,
natively otherwise (`regmap.x86.coverage` lists them all).
"""
from __future__ import annotations

from iced_x86 import Code

_BY_REASON: dict[str, tuple[str, ...]] = {
    "far branch: loads a code segment selector": (
        "JMP_M1616", "JMP_M1632", "JMP_M1664", "CALL_M1616", "CALL_M1632", "CALL_M1664"),
    "16-bit near branch: a 66h prefix is ignored by Intel CPUs in 64-bit mode but honoured by AMD": (
        "JMP_RM16", "CALL_RM16"),
    # mov Sreg, m16 has Python semantics that check the selector as the CPU does (x86/selectors.py)
    "loads a segment register and a pointer": (
        "LSS_R16_M1616", "LSS_R32_M1632",
        "LSS_R64_M1664", "LFS_R16_M1616", "LFS_R32_M1632", "LFS_R64_M1664", "LGS_R16_M1616",
        "LGS_R32_M1632", "LGS_R64_M1664"),
    # the engine moves only the explicit operand onto its shadow page: run natively, the 64-byte
    # store to es:[register] would land at the program's address in regmap's own memory
    "stores at the address in a register operand": (
        "MOVDIR64B_R16_M512", "MOVDIR64B_R32_M512", "MOVDIR64B_R64_M512",
        "ENQCMD_R16_M512", "ENQCMD_R32_M512", "ENQCMD_R64_M512",
        "ENQCMDS_R16_M512", "ENQCMDS_R32_M512", "ENQCMDS_R64_M512"),
    # the engine's state has no TILECFG/TILEDATA: run natively, ldtilecfg would load the window
    # into the tile configuration of regmap's own thread (it stays there: measured), sttilecfg
    # store regmap's instead of the program's, and a tile load or store raises #NM unless this
    # process asked for the tile data (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
    "AMX tile state (TILECFG, TILEDATA) is not part of the native engine's state": (
        "VEX_LDTILECFG_M512", "VEX_STTILECFG_M512", "VEX_TILELOADD_TMM_SIBMEM",
        "VEX_TILELOADDT1_TMM_SIBMEM", "VEX_TILESTORED_SIBMEM_TMM"),
}

UNSUPPORTED: dict[int, str] = {getattr(Code, name): reason
                               for reason, names in _BY_REASON.items() for name in names
                               if hasattr(Code, name)}


def form_refusal(code: int) -> str | None:
    """Why no engine runs form ``code`` on a window operand, or None."""
    return UNSUPPORTED.get(code)
