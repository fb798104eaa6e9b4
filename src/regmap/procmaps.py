"""One question about a Linux process's memory map (/proc/PID/maps), asked by both backends."""
from __future__ import annotations


def private_code(pid: int | str, address: int, size: int) -> bool:
    """Whether `size` bytes at `address` lie in one private, executable mapping of `pid`.

    Code regmap rewrites must be there: a private mapping's pages are copied
    on write, so a file's shared pages (or another process's) never change.
    `pid` may be "self".
    """
    try:
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                span, perms = line.split(None, 2)[:2]
                start, end = (int(x, 16) for x in span.split("-"))
                if start <= address < end:
                    return address + size <= end and perms[2] == "x" and perms[3] == "p"
    except (OSError, ValueError):
        pass
    return False
