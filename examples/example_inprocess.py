"""The original crate's example, in-process: native code passes write(2)'s arguments through
page-0 stores (fd via [0x38] = rdi, buffer via [0x30] = rsi, length via [0x10] = rdx,
syscall number via [0x00] = rax), then runs `syscall`.

    python examples/example_inprocess.py        # prints: memory-mapped registers work!

Assembles examples/example_inprocess.s with gcc into a temporary directory.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import regmap

SOURCE = Path(__file__).resolve().with_name("example_inprocess.s")
MESSAGE = b"memory-mapped registers work!\n"


def build(directory: str) -> ctypes.CDLL:
    if shutil.which("gcc") is None:
        sys.exit("this example needs gcc to assemble example_inprocess.s")
    library = Path(directory) / "libexample_inprocess.so"
    subprocess.run(["gcc", "-shared", "-o", str(library), str(SOURCE)], check=True)
    lib = ctypes.CDLL(str(library))
    lib.regmap_example.restype = ctypes.c_long
    lib.regmap_example.argtypes = []
    return lib


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="regmap-example-") as directory:
        lib = build(directory)
        sys.stdout.flush()   # the native code writes to fd 1 itself
        with regmap.mapped():
            written = lib.regmap_example()
    return 0 if written == len(MESSAGE) else 1


if __name__ == "__main__":
    sys.exit(main())
