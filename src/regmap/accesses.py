"""How one window access is shown: the one text form and the one JSON record.

Every report of an access uses these two: ``regmap emulate`` (text and ``--json``), the
``Emulation`` repr, ``regmap exec --trace`` and ``--json``, and the in-process trace
(``regmap.runtime.set_trace``).  An access is anything with the fields of
`regmap.x86.cpu.Access` (a `TraceEvent` too): ``address``, ``size``, ``write``, ``names``
(the register slices those bytes are, as the layout describes them: ``"ecx . rax[63:32]"``),
``before`` and ``after`` (None for a read).

Text, the verb padded so that columns line up, the registers last because their length varies::

    read  [0x4] 8 bytes = 0x4444444411111111  (ecx . rax[63:32])
    write [0x38] 8 bytes 0x0 -> 0x3  (rdi)

JSON, the same fields: ``names`` a list, values hex strings, and ``after`` always a value
(a read leaves the bytes as they were, so a consumer needs no case for it)::

    {"address": 56, "size": 8, "write": true, "names": ["rdi"], "before": "0x0", "after": "0x3"}

This module imports nothing: ``regmap exec`` loads it at start-up.
"""
from __future__ import annotations

ARROW = "->"        # ASCII: a trace goes to any stream, whatever its encoding


def format_value_change(before: int, after: int) -> str:
    return f"{before:#x} {ARROW} {after:#x}"


def names_of(access) -> list[str]:
    """The access's register slices as a list (``"ecx . rax[63:32]"`` -> ``["ecx", "rax[63:32]"]``)."""
    names = access.names
    if not names:
        return []
    if isinstance(names, str):
        return [part for part in names.split(" . ") if part]
    return [str(name) for name in names]


def format_access(access) -> str:
    """``read  [0x9] 1 byte = 0x1  (ch)`` or ``write [0x0] 8 bytes 0x7 -> 0x9  (rax)``."""
    size = f"{access.size} byte{'' if access.size == 1 else 's'}"
    if access.write:
        verb, value = "write", format_value_change(access.before, _after(access))
    else:
        verb, value = "read ", f"= {access.before:#x}"
    return f"{verb} [{access.address:#x}] {size} {value}  ({' . '.join(names_of(access)) or 'hole'})"


def access_record(access) -> dict:
    """The access as a JSON object (`json.dumps` ready)."""
    return {"address": access.address, "size": access.size, "write": bool(access.write),
            "names": names_of(access), "before": hex(access.before), "after": hex(_after(access))}


def _after(access) -> int:
    return access.before if access.after is None else access.after
