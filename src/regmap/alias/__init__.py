"""regmap.alias: the register-aliasing language, modelled on BAP Core Theory's ``Theory.Alias``.

``load("amd64")`` gives a shipped register file, ``parse(text)`` a user's; both are
solved :class:`RegisterFile` objects.  See docs/alias.md.
"""
from regmap.errors import AliasError
from regmap.alias.model import (
    UNK, Bit, Def, Origin, Part, Reg, Register, RegisterFile, Set, Slice, Sub, Sup, Unk,
    define, format_slices,
)
from regmap.alias.language import SHIPPED, load, parse

__all__ = [
    "load", "parse", "SHIPPED",
    "AliasError", "Register", "RegisterFile", "Reg", "Bit", "Unk", "UNK", "Part", "Def",
    "define", "Slice", "Sub", "Sup", "Set", "Origin", "format_slices",
]
