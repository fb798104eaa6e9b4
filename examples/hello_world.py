"""hello_world for regmap, in-process: native code that calls puts, fflush and write without a
single call instruction.  It passes arguments by storing to the rdi/rsi slots of page 0,
pushes each return address by storing to the rsp slot, and jumps by storing to the rip slot;
regmap's fault handler turns each of those stores into the register write it names.

    python examples/hello_world.py

Assembles examples/hello_world_inprocess.s with gcc into a temporary directory.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import regmap
import regmap.runtime

SOURCE = Path(__file__).resolve().with_name("hello_world_inprocess.s")


def build(directory: str) -> ctypes.CDLL:
    if shutil.which("gcc") is None:
        sys.exit("this example needs gcc to assemble hello_world_inprocess.s")
    library = Path(directory) / "libhello_world_inprocess.so"
    subprocess.run(["gcc", "-shared", "-o", str(library), str(SOURCE)], check=True)
    lib = ctypes.CDLL(str(library))
    lib.hello_world.restype = None
    lib.hello_world.argtypes = [ctypes.c_void_p] * 3
    return lib


def address(function) -> int:
    return ctypes.cast(function, ctypes.c_void_p).value


def main() -> int:
    libc = ctypes.CDLL(None)
    with tempfile.TemporaryDirectory(prefix="regmap-hello-") as directory:
        lib = build(directory)
        sys.stdout.flush()   # the native code writes to fd 1 itself
        with regmap.mapped():
            regmap.runtime.reset_stats()
            lib.hello_world(address(libc.puts), address(libc.fflush), address(libc.write))
            stats = regmap.stats()
    print(f"({stats.emulated} page-0 stores emulated: "
          + ", ".join(f"{count} {name}" for name, count in sorted(stats.by_mnemonic.items()))
          + ")", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
