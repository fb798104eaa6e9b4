"""faulthandler.enable() after map_registers() leaves regmap's handler a stack it can run on.

regmap's SIGSEGV handler runs the emulator, Python, on the thread's alternate stack, so
map_registers() gives the thread one of ALTSTACK_SIZE.  faulthandler.enable() puts up its own, a
~16 KiB heap block: the handler then ran Python on it, off its bottom into the heap below
("double free or corruption", "realloc(): invalid next size" at exit; PYTHONMALLOC=debug: "bad
trailing pad byte"), which is what made tests/test_runtime_faulthandler.py fail now and then.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import python_env, why_not_native  # noqa: E402

REASON = why_not_native()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

CHILD = textwrap.dedent('''
    import faulthandler, sys
    enable = faulthandler.enable             # a reference taken before regmap is imported
    import regmap
    from regmap.runtime import _sys
    try:                                     # where the speed branch moves it
        from regmap.runtime.altstack import ALTSTACK_MIN
    except ImportError:
        from regmap.runtime.handler import ALTSTACK_MIN
    regmap.map_registers()
    if sys.argv[1] == "module":
        faulthandler.enable()
    else:
        enable()                             # behind regmap's back: mapping again repairs it
        regmap.map_registers()
    stack = _sys.get_altstack()
    print(stack.size >= ALTSTACK_MIN and not stack.flags & _sys.SS_DISABLE, stack.size)
    regmap.unmap_registers()
''')


@pytest.mark.parametrize("how", ["module", "early reference"])
def test_the_handler_keeps_a_large_alternate_stack_after_faulthandler_enable(how):
    result = subprocess.run([sys.executable, "-c", CHILD, how], capture_output=True, text=True,
                            env=python_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "True", result.stdout
