"""What docs/emulator.md says is emulated, checked against `supported_codes()`."""
from __future__ import annotations

import re
from pathlib import Path

import iced_x86

from regmap.x86 import supported_codes

DOCS = Path(__file__).resolve().parent.parent / "docs"
CODE_NAMES = {name: value for name, value in vars(iced_x86.Code).items()
              if isinstance(value, int) and not name.startswith("_")}
MEMORY_OPERAND = re.compile(r"(R|XMM|YMM|ZMM)?M\d*")       # M64, RM32, XMMM128: memory allowed


def vex_memory_forms(mnemonic: str) -> dict[str, int]:
    """iced's Code names and values of the VEX forms of ``mnemonic`` with a memory operand."""
    head = f"VEX_V{mnemonic.upper()}_"
    return {name: value for name, value in CODE_NAMES.items() if name.startswith(head)
            and any(MEMORY_OPERAND.fullmatch(part) for part in name[len(head):].split("_"))}


def test_the_moves_said_to_be_emulated_with_their_vex_forms_are():
    text = " ".join((DOCS / "emulator.md").read_text().split())
    listed = re.search(r"the SSE/AVX data moves (.+?) with their VEX forms", text)
    assert listed, "docs/emulator.md no longer lists the moves emulated with their VEX forms"
    supported = supported_codes()
    for mnemonic in listed[1].split():
        forms = vex_memory_forms(mnemonic)
        assert forms, mnemonic
        missing = sorted(name for name, value in forms.items() if value not in supported)
        assert not missing, f"docs/emulator.md says {mnemonic} is emulated with its VEX forms"
