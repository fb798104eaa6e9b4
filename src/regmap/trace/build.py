"""``regmap run``'s build step: a C or assembly source file -> an executable in a temporary directory.

- ``.c`` is compiled with the system C compiler (``$CC``, else ``cc``, ``gcc``, ``clang`` on
  PATH); ``.s`` is assembled and ``.S`` preprocessed and assembled by the same driver (or, with
  no compiler but binutils' ``as`` and ``ld``, a ``.s`` file defining ``_start`` is built with
  those).
- The object's symbol table decides the link: a source that defines ``_start`` is linked
  ``-nostdlib -static``; any other is a normal C program with ``main``.
- A program written for the original crate calls ``map_registers`` at start.  If the object
  leaves ``map_registers`` undefined, a stub assembled here provides it: a function that just
  returns, since under the tracer the registers are already mapped.
"""
from __future__ import annotations

import os
import shlex
import shutil
import struct
import subprocess
from typing import NamedTuple

from regmap.elf import elf_sections
from regmap.trace.program import FAILURE, NOT_FOUND, TraceError

C_SUFFIXES = (".c",)
ASM_SUFFIXES = (".s", ".S")
COMPILERS = ("cc", "gcc", "clang")
C_FLAGS = ("-O2", "-g", "-pthread",
           # a constant pointer into page 0 is a window access, not undefined behaviour
           "-fno-delete-null-pointer-checks")

STB_LOCAL = 0                   # an ELF symbol's binding, st_info >> 4
STUB_SYMBOLS = ("map_registers",)
STUB = """\
# Provided by regmap run: under the tracer the registers are already mapped,
# so map_registers() only has to return.
    .text
    .globl map_registers
    .type map_registers, @function
map_registers:
    ret
    .size map_registers, . - map_registers
    .section .note.GNU-stack, "", @progbits
"""


def find_compiler() -> list[str] | None:
    """The C compiler driver to use, as an argv prefix, or ``None``."""
    chosen = os.environ.get("CC", "").strip()
    if chosen:
        words = shlex.split(chosen)
        if words and shutil.which(words[0]):
            return [shutil.which(words[0]), *words[1:]]
    for name in COMPILERS:
        path = shutil.which(name)
        if path:
            return [path]
    return None


class Symbols(NamedTuple):
    """The symbol names of an object file."""
    defined: set[str]          # global, weak or local
    undefined: set[str]
    local: set[str]            # defined but not visible to the linker (a label without .globl)


def elf_symbols(path: str) -> Symbols:
    """The symbol names of an ELF64 little-endian object file."""
    with open(path, "rb") as file:
        data = file.read()
    sections = elf_sections(data)
    defined, undefined, local = set(), set(), set()
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != 2 or not entsize:                 # SHT_SYMTAB
            continue
        strtab = sections[link]
        str_offset, str_size = strtab[4], strtab[5]
        strings = data[str_offset:str_offset + str_size]
        for index in range(1, size // entsize):
            st_name, st_info, _other, st_shndx = struct.unpack_from("<IBBH", data,
                                                                    offset + index * entsize)
            end = strings.find(b"\0", st_name)
            name = strings[st_name:end].decode("utf-8", "replace")
            if not name or st_info & 0xF in (3, 4):   # sections and file names
                continue
            (undefined if st_shndx == 0 else defined).add(name)
            if st_shndx != 0 and st_info >> 4 == STB_LOCAL:
                local.add(name)
    return Symbols(defined, undefined, local)


def _check_entry(symbols: Symbols, source: str) -> None:
    """A program starts at ``_start`` or, through the C library, at ``main``: refuse, in one
    line, a source with neither rather than show the linker's complaint."""
    if "_start" in symbols.defined or "main" in symbols.defined - symbols.local:
        return
    if "main" in symbols.local:
        raise TraceError(f"{source}: its main is local, the C library cannot call it "
                         "(add .globl main)", FAILURE)
    raise TraceError(f"{source} defines neither main nor _start: nothing to run", FAILURE)


def _run(command: list[str], source: str) -> None:
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as error:
        raise TraceError(f"cannot build {source}: {command[0]}: {error.strerror}", FAILURE) from None
    if result.returncode != 0:
        tool = os.path.basename(command[0])
        raise TraceError(f"cannot build {source}: {tool} exited with status {result.returncode}",
                         FAILURE, detail=result.stdout.rstrip("\n"))


def build(source: str, directory: str) -> str:
    """Build ``source`` into an executable inside ``directory``; return its path.
    ``TraceError``: a missing source (127), an unknown kind of file, no compiler, a failed build."""
    if not os.path.exists(source):
        raise TraceError(f"{source}: no such file", NOT_FOUND)
    if os.path.isdir(source):
        raise TraceError(f"{source}: is a directory", 2)
    stem, suffix = os.path.splitext(os.path.basename(source))
    if suffix not in C_SUFFIXES + ASM_SUFFIXES:
        raise TraceError(f"{source}: cannot build a '{suffix or os.path.basename(source)}' file "
                         "(regmap run takes .c, .s or .S)", 2)
    stem = stem or "program"
    absolute = os.path.abspath(source)
    obj = os.path.join(directory, stem + ".o")
    stub_source = os.path.join(directory, "regmap-stub.s")
    stub_obj = os.path.join(directory, "regmap-stub.o")
    executable = os.path.join(directory, stem)
    with open(stub_source, "w") as file:
        file.write(STUB)

    compiler = find_compiler()
    if compiler is None:
        assembler, linker = shutil.which("as"), shutil.which("ld")
        if suffix != ".s" or not (assembler and linker):
            raise TraceError("no C compiler on PATH (looked for $CC, cc, gcc, clang); "
                             "install one (e.g. apt-get install gcc) or set CC", FAILURE)
        _run([assembler, "-o", obj, absolute], source)
        defined, undefined, _local = elf_symbols(obj)
        if "_start" not in defined:
            raise TraceError(f"cannot build {source}: it has no _start and there is no C compiler "
                             "on PATH to link it with the C library (install gcc or set CC)",
                             FAILURE)
        objects = [obj]
        if undefined & set(STUB_SYMBOLS) and not defined & set(STUB_SYMBOLS):
            _run([assembler, "-o", stub_obj, stub_source], source)
            objects.append(stub_obj)
        _run([linker, "-static", "-o", executable, *objects], source)
        return executable

    flags = list(C_FLAGS) if suffix in C_SUFFIXES else []
    _run([*compiler, *flags, "-c", "-o", obj, absolute], source)
    symbols = elf_symbols(obj)
    _check_entry(symbols, source)
    defined, undefined, _local = symbols
    objects = [obj]
    if undefined & set(STUB_SYMBOLS) and not defined & set(STUB_SYMBOLS):
        _run([*compiler, "-c", "-o", stub_obj, stub_source], source)
        objects.append(stub_obj)
    if "_start" in defined:
        _run([*compiler, "-nostdlib", "-static", "-o", executable, *objects], source)
    else:
        _run([*compiler, "-pthread", "-o", executable, *objects], source)
    return executable
