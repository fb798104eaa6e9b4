"""Checks on the program to trace, made before anything is spawned, and the errors they raise."""
from __future__ import annotations

import errno
import os
import stat

from regmap.errors import RegmapError

# exit statuses, as shells use them
NOT_FOUND = 127
NOT_EXECUTABLE = 126
FAILURE = 1

ELF_MACHINES = {
    2: "SPARC", 3: "i386", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 22: "S/390", 40: "ARM",
    42: "SuperH", 43: "SPARC64", 50: "IA-64", 62: "x86-64", 183: "AArch64", 243: "RISC-V",
    258: "LoongArch",
}
EM_X86_64 = 62


class TraceError(RegmapError):
    """The program cannot be run under regmap; ``status`` is the exit status to report."""

    def __init__(self, message: str, status: int = FAILURE, detail: str = ""):
        self.status = status
        self.detail = detail
        super().__init__(message)


def resolve(program: str, path: str | None = None) -> str:
    """The file ``execvp`` would run for ``program``: itself if it has a slash, else the first
    executable match on PATH.  ``TraceError`` (127 or 126) if there is none."""
    if not program:
        raise TraceError("empty program name", NOT_FOUND)
    if "/" in program:
        if not os.path.lexists(program):
            raise TraceError(f"{program}: no such file", NOT_FOUND)
        return program
    search = os.environ.get("PATH", os.defpath) if path is None else path
    denied = None
    for directory in search.split(os.pathsep):
        candidate = os.path.join(directory or ".", program)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if os.access(candidate, os.X_OK):
            return candidate
        denied = denied or candidate
    if denied:
        raise TraceError(f"{denied}: permission denied (not executable)", NOT_EXECUTABLE)
    raise TraceError(f"{program}: command not found", NOT_FOUND)


def check_executable(path: str) -> None:
    """Refuse what the kernel would refuse or regmap cannot trace: a directory, a file without
    execute permission, an ELF file for another machine or class.  A ``#!`` script passes
    (its interpreter is what runs, and is checked by the exec itself)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file", NOT_FOUND) from None
    except OSError as error:
        raise TraceError(f"{path}: {error.strerror}", NOT_EXECUTABLE) from None
    if stat.S_ISDIR(st.st_mode):
        raise TraceError(f"{path}: is a directory", NOT_EXECUTABLE)
    if not stat.S_ISREG(st.st_mode):
        raise TraceError(f"{path}: not a regular file", NOT_EXECUTABLE)
    if not os.access(path, os.X_OK):
        raise TraceError(f"{path}: permission denied (not executable)", NOT_EXECUTABLE)
    try:
        with open(path, "rb") as file:
            header = file.read(20)
    except OSError as error:
        if error.errno == errno.EACCES:
            return              # execute-only binaries exist; let exec decide
        raise TraceError(f"{path}: {error.strerror}", NOT_EXECUTABLE) from None
    if header.startswith(b"#!"):
        return
    if not header.startswith(b"\x7fELF"):
        raise TraceError(f"{path}: not an executable program (no ELF header, no #! line)",
                         NOT_EXECUTABLE)
    if len(header) < 20:
        raise TraceError(f"{path}: truncated ELF header", NOT_EXECUTABLE)
    elf_class, data = header[4], header[5]
    machine = int.from_bytes(header[18:20], "little" if data == 1 else "big")
    name = ELF_MACHINES.get(machine, f"machine {machine}")
    bits = {1: "32-bit", 2: "64-bit"}.get(elf_class, "unknown-class")
    if machine != EM_X86_64 or elf_class != 2 or data != 1:
        if machine == EM_X86_64 and elf_class == 1:
            name = "x32"
        raise TraceError(f"{path}: {bits} ELF for {name}; regmap runs x86-64 programs only",
                         NOT_EXECUTABLE)
