"""The section table of an ELF64 little-endian object: what `regmap run`'s build step and the
assembler read of the objects the system tools write (nothing more: no symbols' values, no DWARF)."""
from __future__ import annotations

import struct


def elf_sections(data: bytes) -> list[tuple]:
    """The section headers of an ELF64 little-endian object, as tuples of their fields
    (name offset, type, flags, address, offset, size, link, info, alignment, entry size)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return []
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    return [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]


def elf_section_contents(path: str) -> dict[str, bytes]:
    """Section name -> contents of an ELF64 little-endian object file (empty for NOBITS)."""
    with open(path, "rb") as file:
        data = file.read()
    sections = elf_sections(data)
    if not sections:
        return {}
    names_index, = struct.unpack_from("<H", data, 0x3E)
    names = sections[names_index]
    strings = data[names[4]:names[4] + names[5]]
    contents = {}
    for name_offset, kind, _flags, _addr, offset, size, *_ in sections:
        name = strings[name_offset:strings.find(b"\0", name_offset)].decode("utf-8", "replace")
        contents[name] = b"" if kind == 8 else data[offset:offset + size]    # SHT_NOBITS
    return contents
