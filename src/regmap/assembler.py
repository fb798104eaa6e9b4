"""Instruction text -> machine code: the one path `regmap.emulate` and ``regmap emulate`` share.

Assembly is Intel syntax as GNU ``as`` reads it after ``.intel_syntax noprefix`` (the system
assembler, run once per call; ``;`` or newlines separate instructions, labels work), with
NASM's operand sizes accepted too: ``qword [0x38]`` is read as ``qword ptr [0x38]``.

Why ``as`` and not an assembler library: the one maintained-looking candidate on the package
index, keystone-engine, last released in 2020 (0.9.2, a manylinux1 wheel with its own native
library), encodes ``[0x38]`` in 64-bit code as rip-relative, not as the absolute address a
page-0 access needs, and refuses ``qword [0x38]`` as well.  iced-x86 (already a dependency)
has no text assembler.  binutils is on every machine that builds C.

Hex text is machine code: ``"48 03 04 25 08 00 00 00"``, ``"4803"``, ``"0x48 0x03"``,
``"\\x48\\x03"`` and ``"48,03"`` are the same bytes.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

from regmap.errors import DecodeError, RegmapError

__all__ = ["AssemblyError", "assemble", "code_bytes", "hex_bytes", "is_hex"]

# NASM writes a memory operand's size without "ptr" (``qword [8]``, ``dword fs:[8]``); GNU as
# needs it.  tword is NASM's name for the 10-byte x87 operand, tbyte GNU's.
_NASM_SIZE = re.compile(r"\b(byte|word|dword|fword|qword|tword|tbyte|oword|xmmword|ymmword|zmmword)"
                        r"\s+(?!ptr\b)(?=\[|[cdefgs]s\s*:)", re.IGNORECASE)
_SIZE_NAMES = {"tword": "tbyte"}
# hex text: bytes as pairs of digits, each optionally written 0x48 or \x48, separated (or not)
# by white space or commas
_HEX_TEXT = re.compile(r"[\s,]*(?:(?:0x|\\x)?[0-9a-f]{2}[\s,]*)+", re.IGNORECASE)
_HEX_BYTE = re.compile(r"(?:0x|\\x)?([0-9a-f]{2})", re.IGNORECASE)
_HEX_CHARACTERS = re.compile(r"[0-9a-fx\\\s,]+", re.IGNORECASE)
_FIRST_BYTE = re.compile(r"(?:0x|\\x)?[0-9a-f]{2}(?:[\s,]|$)", re.IGNORECASE)


class AssemblyError(RegmapError):
    """No assembler, or the assembler refused the code."""


def code_bytes(code: bytes | bytearray | memoryview | str) -> bytes:
    """Machine code from bytes, hex text, or Intel-syntax assembly (`assemble`).

    Text made only of hex digit pairs (with the spellings of `hex_bytes`) is hex; any other
    text is assembly.  A lone mnemonic spelled in hex digits (``fadd``) therefore reads as hex:
    give it its operands (``fadd st(0), st(1)``).  `DecodeError` if there are no bytes."""
    if isinstance(code, str):
        data = hex_bytes(code) if is_hex(code) else assemble(code)
    elif isinstance(code, (bytes, bytearray, memoryview)):
        data = bytes(code)
    else:
        raise TypeError(f"code must be bytes, hex text or assembly text, not {type(code).__name__}")
    if not data:
        raise DecodeError(None, data, text=code if isinstance(code, str) else None)
    return data


def is_hex(text: str) -> bool:
    """Whether `text` is meant as hex bytes, well formed or not: it is (``48 03``, ``fadd``), or
    it has a decimal digit and is made of hex spellings only (``48 0``) or starts with a byte
    (``48 03 zz``).  ``add``, ``dec rcx`` and ``1: dec rcx; jnz 1b`` are assembly."""
    text = text.strip()
    if _HEX_TEXT.fullmatch(text):
        return True
    return any(c.isdigit() for c in text) and bool(
        _HEX_CHARACTERS.fullmatch(text) or _FIRST_BYTE.match(text))


def hex_bytes(text: str) -> bytes:
    """The bytes of hex text: ``48 03``, ``4803``, ``0x48 0x03``, ``\\x48\\x03``, ``48,03``."""
    if not _HEX_TEXT.fullmatch(text.strip()):
        if not text.strip():
            raise DecodeError(None, b"", text=text)
        raise DecodeError(None, b"", text=text, reason=(
            "not hex text (write bytes as '48 03 04 25', '0x48 0x03', '\\x48\\x03' or '48,03')"))
    return bytes.fromhex("".join(_HEX_BYTE.findall(text)))


def assemble(source: str) -> bytes:
    """Machine code for Intel-syntax `source`, assembled with the system ``as``."""
    assembler = shutil.which("as")
    if assembler is None:
        raise AssemblyError("no assembler: 'as' (GNU binutils) is not on PATH; install binutils, "
                            "or give the instruction bytes as hex (regmap emulate --hex)")
    from regmap.elf import elf_section_contents
    text = _NASM_SIZE.sub(lambda m: _SIZE_NAMES.get(m[1].lower(), m[1]) + " ptr ", source)
    with tempfile.TemporaryDirectory(prefix="regmap-as-") as directory:
        source_path, object_path = (os.path.join(directory, name) for name in ("code.s", "code.o"))
        with open(source_path, "w") as file:
            file.write(f".intel_syntax noprefix\n.text\n{text}\n")
        done = subprocess.run([assembler, "--64", "-o", object_path, source_path],
                              capture_output=True, text=True, errors="replace")
        if done.returncode != 0:
            lines = (line.strip() for line in done.stderr.replace(source_path + ":", "").splitlines())
            messages = [re.sub(r"^\d+: ", "", line) for line in lines
                        if line and not line.startswith("Assembler messages")]
            raise AssemblyError(f"as cannot assemble {source!r}: " + "; ".join(messages))
        sections = elf_section_contents(object_path)
    if sections.get(".rela.text"):
        raise AssemblyError(f"{source!r} refers to a symbol outside the code (the assembler left a "
                            "relocation); emulate runs code on its own")
    return sections.get(".text", b"")
