"""``regmap run``'s build step: C or assembly source files -> an executable in a temporary directory.

- As make builds: ``$CC``, ``$CPPFLAGS`` and ``$CFLAGS`` compile, ``$LDFLAGS`` and ``$LDLIBS``
  link (`build`); the command line's own compiler options come after ``--``.

- ``.c`` is compiled with the system C compiler (``$CC``, else ``cc``, ``gcc``, ``clang`` on
  PATH); ``.s`` is assembled and ``.S`` preprocessed and assembled by the same driver (or, with
  no compiler but binutils' ``as`` and ``ld``, a ``.s`` file defining ``_start`` is built with
  those).
- The objects' symbol tables decide the link: a source that defines ``_start`` is linked
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


# make's variables (its built-in rules: compile ``$(CC) $(CPPFLAGS) $(CFLAGS) -c``, link
# ``$(CC) $(LDFLAGS) objects $(LDLIBS)``), each split as a shell splits it
MAKE_VARIABLES = ("CPPFLAGS", "CFLAGS", "LDFLAGS", "LDLIBS")
# options given after ``--`` that only the link takes (at -c the driver would warn they are unused)
LINK_ONLY = ("-l", "-L", "-Wl,", "-static", "-shared", "-rdynamic", "-nostdlib")


def make_flags(environ=os.environ) -> dict[str, list[str]]:
    """CPPFLAGS, CFLAGS, LDFLAGS and LDLIBS from the environment, as make reads them."""
    return {name: shlex.split(environ.get(name, "")) for name in MAKE_VARIABLES}


def _link_only(option: str) -> bool:
    return option.startswith(LINK_ONLY) or option.endswith((".o", ".a", ".so"))


def _check_source(source: str) -> None:
    if not os.path.exists(source):
        raise TraceError(f"{source}: no such file", NOT_FOUND)
    if os.path.isdir(source):
        raise TraceError(f"{source}: is a directory", 2)
    suffix = os.path.splitext(source)[1]
    if suffix not in C_SUFFIXES + ASM_SUFFIXES:
        raise TraceError(f"{source}: cannot build a '{suffix or os.path.basename(source)}' file "
                         "(regmap run takes .c, .s or .S)", 2)


def build(sources: str | list[str], directory: str, options: list[str] | None = None) -> str:
    """Build ``sources`` into one executable inside ``directory``; return its path.

    C sources are compiled with regmap's `C_FLAGS`, then ``$CPPFLAGS $CFLAGS``, then the
    `options` (what followed ``--`` on the command line); ``.S`` with ``$CPPFLAGS`` and the
    options; ``.s`` with the options.  The link is ``$LDFLAGS objects options $LDLIBS``.  Options
    only a link takes (``-lm``, ``-L...``, ``-Wl,...``) go to the link alone.
    ``TraceError``: a missing source (127), an unknown kind of file, no compiler, a failed build."""
    sources = [sources] if isinstance(sources, str) else list(sources)
    for source in sources:
        _check_source(source)
    options = list(options or ())
    name = sources[0]                           # what messages call the program
    stem = os.path.splitext(os.path.basename(name))[0] or "program"
    executable = os.path.join(directory, stem)
    stub_source = os.path.join(directory, "regmap-stub.s")
    stub_obj = os.path.join(directory, "regmap-stub.o")
    with open(stub_source, "w") as file:
        file.write(STUB)
    objects = [os.path.join(directory, f"{index}-{os.path.basename(source)}.o")
               for index, source in enumerate(sources)]

    compiler = find_compiler()
    if compiler is None:
        assembler, linker = shutil.which("as"), shutil.which("ld")
        if any(not source.endswith(".s") for source in sources) or not (assembler and linker):
            raise TraceError("no C compiler on PATH (looked for $CC, cc, gcc, clang); "
                             "install one (e.g. apt-get install gcc) or set CC", FAILURE)
        for source, obj in zip(sources, objects):
            _run([assembler, "-o", obj, os.path.abspath(source)], source)
        defined, undefined, _local = _symbols(objects)
        if "_start" not in defined:
            raise TraceError(f"cannot build {name}: it has no _start and there is no C compiler "
                             "on PATH to link it with the C library (install gcc or set CC)",
                             FAILURE)
        if undefined & set(STUB_SYMBOLS) and not defined & set(STUB_SYMBOLS):
            _run([assembler, "-o", stub_obj, stub_source], name)
            objects.append(stub_obj)
        _run([linker, "-static", "-o", executable, *objects], name)
        return executable

    make = make_flags()
    compile_options = [option for option in options if not _link_only(option)]
    for source, obj in zip(sources, objects):
        suffix = os.path.splitext(source)[1]
        flags = ([*C_FLAGS, *make["CPPFLAGS"], *make["CFLAGS"]] if suffix in C_SUFFIXES else
                 make["CPPFLAGS"] if suffix == ".S" else [])
        _run([*compiler, *flags, *compile_options, "-c", "-o", obj, os.path.abspath(source)], source)
    symbols = _symbols(objects)
    _check_entry(symbols, name if len(sources) == 1 else " ".join(sources))
    defined, undefined, _local = symbols
    if undefined & set(STUB_SYMBOLS) and not defined & set(STUB_SYMBOLS):
        _run([*compiler, "-c", "-o", stub_obj, stub_source], name)
        objects.append(stub_obj)
    entry = ["-nostdlib", "-static"] if "_start" in defined else ["-pthread"]
    _run([*compiler, *entry, *make["LDFLAGS"], "-o", executable, *objects, *options, *make["LDLIBS"]],
         name)
    return executable


def _symbols(objects: list[str]) -> Symbols:
    """The symbols of several objects together: defined in any, undefined in some and defined
    in none, local in any."""
    defined, undefined, local = set(), set(), set()
    for obj in objects:
        symbols = elf_symbols(obj)
        defined |= symbols.defined
        undefined |= symbols.undefined
        local |= symbols.local
    return Symbols(defined, undefined - defined, local)
