"""Build the runtime tests' native snippets with gcc into a temporary directory."""
from __future__ import annotations

import ctypes
import os
import platform
import shutil
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
SNIPPETS = HERE / "runtime_snippets.s"


def why_not_native() -> str | None:
    """The reason native snippets cannot run here, or None."""
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return f"needs Linux on x86-64 (this is {sys.platform} on {platform.machine()})"
    if shutil.which("gcc") is None:
        return "needs gcc to assemble the native snippets"
    return None


def build_library(directory: Path, source: Path = SNIPPETS, name: str = "libsnippets.so") -> Path:
    out = Path(directory) / name
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(out), str(source)], check=True,
                   capture_output=True)
    return out


def assembled(directory: Path, text: str, name: str) -> ctypes.CDLL:
    """The library ``lib<name>.so`` built in `directory` from the assembly `text`."""
    source = Path(directory) / f"{name}.s"
    source.write_text(text)
    return ctypes.CDLL(str(build_library(directory, source, f"lib{name}.so")))


def in_threads(work, count: int) -> None:
    """``work(i)`` for every i below `count`, each on a thread of its own, until all have ended."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


LONG_FUNCTIONS = ("add_rcx_loop", "echo_rdi", "window_mix", "flags_window", "flags_native",
                  "div_window", "div_native", "load_from", "unsupported_window")


def declare(library):
    """Argument and result types of the snippets (on a CDLL or a PyDLL)."""
    c_long, c_void_p = ctypes.c_long, ctypes.c_void_p
    for name, args in {"add_rcx_loop": [c_long, c_long], "echo_rdi": [c_long],
                       "read_window_0": [c_long],
                       "window_mix": [c_long, c_long], "flags_window": [c_long, c_long],
                       "flags_native": [c_long, c_long], "div_window": [c_long, c_long],
                       "div_native": [c_long, c_long], "load_from": [c_void_p],
                       "unsupported_window": []}.items():
        function = getattr(library, name)
        function.argtypes, function.restype = args, c_long
    for name in ("xmm_window", "ymm_window", "ymm_high_from_init"):
        function = getattr(library, name)
        function.argtypes, function.restype = [c_void_p, c_void_p], None
    for name in ("store_to", "jump_to"):
        function = getattr(library, name)
        function.argtypes, function.restype = [c_void_p], None
    library.overflow.argtypes, library.overflow.restype = [], None
    return library


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def python_env() -> dict[str, str]:
    """The environment for a child Python that imports regmap from this checkout."""
    env = dict(os.environ)
    src = str(HERE.parent.parent / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PYTHONFAULTHANDLER", None)
    return env
