"""Addresses of a traced program as a user reads them: ``main+0x1c (list.c:12)``.

An address is first placed in its mapping (/proc/PID/maps, read while the process lives: a
killed program's maps are gone), then named from that file's ELF symbol table and, when the
file has DWARF, its line table.  pyelftools reads the ELF and DWARF; it is imported at the
first address named, never at ``regmap exec`` start-up.
"""
from __future__ import annotations

import bisect


class Symbols:
    def __init__(self):
        self.maps: dict[int, list[tuple[int, int, int, str]]] = {}   # pid -> (start, end, offset, path)
        self.files: dict[str, object] = {}                           # path -> _File or None
        # (pid, page) of addresses in no file (a JIT's code): maps are read again for a new
        # page only, not at every fault there (a JVM's null checks fault millions of times)
        self.anonymous: set[tuple[int, int]] = set()

    def forget(self) -> None:
        """A process exec'd: its maps (kept by thread id) describe another program now."""
        self.maps.clear()
        self.anonymous.clear()

    def locate(self, pid: int, address: int) -> tuple[str, int, int] | None:
        """(path, the mapping's load bias, address) for a live process; None if not in a file."""
        if (pid, address >> 12) in self.anonymous:
            return None
        for fresh in (False, True):
            if fresh or pid not in self.maps:
                self.maps[pid] = _read_maps(pid)
            for start, end, _offset, path in self.maps[pid]:
                if start <= address < end:
                    bias = min((s - o for s, _e, o, p in self.maps[pid] if p == path), default=0)
                    return path, bias, address
        if len(self.anonymous) > 1 << 16:
            self.anonymous.clear()
        self.anonymous.add((pid, address >> 12))
        return None

    def name(self, place: tuple[str, int, int] | None) -> str:
        """``function+0xN (file:line)`` for a place `locate` found; "" if nothing is known."""
        if place is None:
            return ""
        path, bias, address = place
        if path not in self.files:
            self.files[path] = _File.open(path)
        elf = self.files[path]
        return elf.name(address, bias) if elf is not None else ""

    def __call__(self, pid: int, address: int) -> str:
        return self.name(self.locate(pid, address))


def _read_maps(pid: int) -> list[tuple[int, int, int, str]]:
    found = []
    try:
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) == 6 and fields[5].startswith("/"):
                    start, end = (int(part, 16) for part in fields[0].split("-"))
                    found.append((start, end, int(fields[2], 16), fields[5].rstrip("\n")))
    except (OSError, ValueError):
        pass
    return found


class _File:
    """One ELF file's functions (sorted by address) and, lazily, its DWARF line table."""

    def __init__(self, elf, stream):
        self.stream = stream
        self.elf = elf
        self.shared = elf.header.e_type == "ET_DYN"
        loads = [s for s in elf.iter_segments() if s.header.p_type == "PT_LOAD"]
        # the bias of a shared object's lowest mapping (file offset 0) is its first load's
        self.first = min((s.header.p_vaddr - s.header.p_offset for s in loads), default=0)
        functions = {}
        for section_name in (".symtab", ".dynsym"):
            table = elf.get_section_by_name(section_name)
            if table is None:
                continue
            for symbol in table.iter_symbols():
                if symbol.entry.st_info.type in ("STT_FUNC", "STT_GNU_IFUNC") and symbol.entry.st_value:
                    functions.setdefault(symbol.entry.st_value, (symbol.name, symbol.entry.st_size))
        self.starts = sorted(functions)
        self.functions = functions
        self.lines: list[tuple[int, str, int]] | None = None

    @classmethod
    def open(cls, path: str):
        try:
            from elftools.elf.elffile import ELFFile
            stream = open(path, "rb")
            return cls(ELFFile(stream), stream)
        except Exception:  # noqa: BLE001 - not an ELF file, unreadable, no pyelftools
            return None

    def name(self, address: int, bias: int) -> str:
        vaddr = address - bias + self.first if self.shared else address
        text = ""
        at = bisect.bisect_right(self.starts, vaddr) - 1
        if at >= 0:
            start = self.starts[at]
            name, size = self.functions[start]
            if vaddr < start + max(size, 1) or size == 0:
                text = f"{name}+{vaddr - start:#x}"
        line = self.line(vaddr)
        return f"{text} ({line})" if text and line else text or line

    def line(self, vaddr: int) -> str:
        if self.lines is None:
            self.lines = self._line_table()
        at = bisect.bisect_right(self.lines, (vaddr, "\uffff", 1 << 62)) - 1
        if at < 0 or at + 1 >= len(self.lines) and self.lines[at][0] != vaddr:
            return ""
        _address, file, number = self.lines[at]
        return f"{file}:{number}" if number else ""

    def _line_table(self) -> list[tuple[int, str, int]]:
        rows: list[tuple[int, str, int]] = []
        try:
            if not self.elf.has_dwarf_info():
                return rows
            dwarf = self.elf.get_dwarf_info()
            for unit in dwarf.iter_CUs():
                program = dwarf.line_program_for_CU(unit)
                if program is None:
                    continue
                files = program["file_entry"]
                base = 0 if program.header.version >= 5 else 1
                for entry in program.get_entries():
                    state = entry.state
                    if state is None or state.end_sequence:
                        continue
                    index = state.file - base
                    name = files[index].name.decode(errors="replace") if 0 <= index < len(files) else "?"
                    rows.append((state.address, name, state.line))
        except Exception:  # noqa: BLE001 - malformed DWARF: no lines, the symbol still helps
            return []
        rows.sort()
        return rows
