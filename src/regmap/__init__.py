"""regmap: the amd64 register file, memory-mapped onto page 0.

>>> import regmap
>>> regmap.emulate(bytes.fromhex("48 03 04 25 08 00 00 00"), {"rax": 1, "rcx": 2}).regs["rax"]
3

The pure parts (`regmap.alias`, `regmap.layout`, `regmap.x86`, `emulate`) work on any OS;
`map_registers` needs Linux on x86-64.
"""
from __future__ import annotations

from regmap.errors import (AliasError, DecodeError, DivideError, LayoutError, MemoryFault,
                           NotWindowAccess, RegmapError, UnsupportedInstruction,
                           UnsupportedPlatform)

__version__ = "0.1.0"

# Public names served lazily, so `import regmap` stays cheap and the pure
# parts never import the runtimes.
_LAZY = {
    "emulate": "regmap.pure",
    "Emulation": "regmap.emulation",
    "load_layout": "regmap.layout",
    "map_registers": "regmap.runtime",
    "unmap_registers": "regmap.runtime",
    "mapped": "regmap.runtime",
    "registers": "regmap.runtime",
    "stats": "regmap.runtime",
    "reset_stats": "regmap.runtime",
    "set_trace": "regmap.runtime",
}

TYPE_CHECKING = False    # not typing's: importing typing costs every start-up ~5 ms
if TYPE_CHECKING:        # what the lazy names are, for type checkers
    from regmap.emulation import Emulation
    from regmap.layout import load_layout
    from regmap.pure import emulate
    from regmap.runtime import map_registers, mapped, registers, stats, unmap_registers

__all__ = ["AliasError", "DecodeError", "DivideError", "LayoutError", "MemoryFault",
           "NotWindowAccess", "RegmapError", "UnsupportedInstruction", "UnsupportedPlatform",
           *_LAZY]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'regmap' has no attribute {name!r}")
