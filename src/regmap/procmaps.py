"""A Linux process's memory map (/proc/PID/maps) and status fields (/proc/PID/status), as both
backends read them."""
from __future__ import annotations

from typing import Iterator, NamedTuple


class Mapping(NamedTuple):
    start: int
    end: int
    perms: str      # "r-xp"
    path: str       # "" for an anonymous mapping


def mappings(pid: int | str = "self") -> Iterator[Mapping]:
    """Every mapping of `pid` ("self" for this process), in address order.

    Raises OSError where /proc cannot be read, ValueError for a line it cannot parse."""
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split(None, 5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            yield Mapping(start, end, fields[1], fields[5].strip() if len(fields) > 5 else "")


def private_code(pid: int | str, address: int, size: int) -> bool:
    """Whether `size` bytes at `address` lie in one private, executable mapping of `pid`.

    Code regmap rewrites must be there: a private mapping's pages are copied
    on write, so a file's shared pages (or another process's) never change.
    `pid` may be "self".
    """
    try:
        for mapping in mappings(pid):
            if mapping.start <= address < mapping.end:
                return (address + size <= mapping.end and mapping.perms[2] == "x"
                        and mapping.perms[3] == "p")
    except (OSError, ValueError, IndexError):
        pass
    return False


def gaps_near(pid: int | str, site: int, size: int, reach: int, lowest: int) -> list[int]:
    """Where `size` bytes could be mapped at either end of a gap of `pid`'s address space, at
    `lowest` or above and within `reach` of `site`: nearest first (trampolines, whose ``jmp
    rel32`` must reach them).  Raises as `mappings` does."""
    candidates = []
    previous_end = lowest
    for start, end, _, _ in list(mappings(pid)) + [Mapping(1 << 47, 1 << 47, "", "")]:
        if start - previous_end >= size:
            for at in (previous_end, start - size):      # either end of the gap
                if abs(at - site) < reach and at >= lowest:
                    candidates.append(at)
        previous_end = max(previous_end, end)
    return sorted(candidates, key=lambda at: abs(at - site))


def status(pid: int | str = "self") -> dict[str, str]:
    """/proc/PID/status as field -> text (``"Tgid"`` -> ``"1234"``, ``"SigCgt"`` -> hex); empty
    when the thread is gone."""
    try:
        with open(f"/proc/{pid}/status") as lines:
            return {name: value.strip() for name, _, value in (line.partition(":") for line in lines)}
    except OSError:
        return {}
