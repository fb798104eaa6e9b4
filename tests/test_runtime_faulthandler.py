"""faulthandler enabled after map_registers(): regmap stays first for window faults, keeps an
alternate stack its handler fits on, and a genuine crash (a wild pointer, a stack overflow) still
ends with faulthandler's report, exactly as with faulthandler alone.

Child processes, compared with the same program without regmap (see test_runtime_faults.py).
"""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import SNIPPETS, build_library, python_env, why_not_native  # noqa: E402

REASON = why_not_native()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

CHILD = textwrap.dedent('''
    import ctypes, faulthandler, resource, sys
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.path.insert(0, {snippets!r})
    from runtime_build import declare
    lib = declare(ctypes.CDLL({library!r}))
    enable = faulthandler.enable             # a reference taken before regmap is imported
    mode, order, crash = sys.argv[1:4]
    if order == "enabled first, disable":
        faulthandler.enable()
    if mode == "regmap":
        import regmap
        regmap.map_registers()
    if order == "enable":                    # through the module, as pytest and libraries do
        faulthandler.enable()
    elif order == "early reference":         # through the old reference, then map again
        enable()
        if mode == "regmap":
            regmap.map_registers()
    elif order == "enable, disable":
        faulthandler.enable()
        faulthandler.disable()
    elif order == "enabled first, disable":
        faulthandler.disable()
    if mode == "regmap":
        assert lib.echo_rdi(5) == 5          # a window access: [0x38] is rdi
        assert lib.add_rcx_loop(100, 3) == 300
    print("window ok", flush=True)


    def crash_site():
        if crash == "overflow":
            lib.overflow()
        lib.load_from(0xDEAD0000)


    if crash != "no crash":
        crash_site()
    print("survived")
''')


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    directory = tmp_path_factory.mktemp("faulthandler")
    library = build_library(directory)
    path = directory / "child.py"
    path.write_text(CHILD.format(snippets=str(SNIPPETS.parent), library=str(library)))
    return path


def run(script, *args):
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          env=python_env(), timeout=60)
    return done.returncode, done.stdout, re.sub(r"0x[0-9a-f]+", "0x...", done.stderr)


ORDERS = ["enable", "early reference", "enable, disable", "enabled first, disable"]


@pytest.mark.parametrize("order", ORDERS)
def test_window_access_after_faulthandler_is_enabled(script, order):
    assert run(script, "regmap", order, "no crash") == (0, "window ok\nsurvived\n", "")


@pytest.mark.parametrize("crash", ["crash", "overflow"])
@pytest.mark.parametrize("order", ORDERS)
def test_a_genuine_crash_still_prints_faulthandlers_report(script, order, crash):
    plain = run(script, "plain", order, crash)
    mapped = run(script, "regmap", order, crash)
    assert plain[0] == -11 and plain[1] == "window ok\n"
    if "disable" in order:
        assert plain[2] == ""
    else:
        assert "Fatal Python error: Segmentation fault" in plain[2] and "in crash_site" in plain[2]
    assert mapped == plain


# The first faulthandler.enable() or register() of a process puts faulthandler's own alternate
# stack (about 16 KiB of heap) on the calling thread, over regmap's.  regmap's handler needs more
# than that for a first fault at a site on some interpreters (3.12: over 25 KiB) and wrote below it
# into the heap: the child died at exit, "Garbage-collecting", or hung.  The size is asserted
# directly, as that crash depends on what the heap holds below faulthandler's stack.
ALTSTACK_CHILD = textwrap.dedent('''
    import ctypes, faulthandler, signal, sys, threading
    sys.path.insert(0, {snippets!r})
    from runtime_build import declare
    lib = declare(ctypes.CDLL({library!r}))
    enable = faulthandler.enable             # a reference taken before regmap is imported
    import regmap
    from regmap.runtime import _sys, handler


    def altstack():
        current = _sys.get_altstack()
        return "none" if current.flags & _sys.SS_DISABLE else \\
            "regmap's" if current.size == handler.ALTSTACK_SIZE else "another"


    def window_access():
        assert lib.echo_rdi(5) == 5 and lib.add_rcx_loop(100, 3) == 300
        return altstack()


    def in_a_thread(call):
        result = []
        def run():
            call()
            result.append(window_access())
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        return result[0]


    CALLS = {{
        "enable": lambda: faulthandler.enable(),
        "register": lambda: faulthandler.register(signal.SIGUSR1),
        "early reference, map again": lambda: (enable(), regmap.map_registers()),
    }}
    call = CALLS[sys.argv[1].removesuffix(" in a thread")]
    regmap.map_registers()
    if sys.argv[1].endswith(" in a thread"):
        print("thread:", in_a_thread(call))
    else:
        call()
    print("mapping thread:", window_access())
    regmap.unmap_registers()
    print("after unmap:", altstack())
''')


@pytest.fixture(scope="module")
def altstack_script(script):
    path = script.parent / "altstack_child.py"
    path.write_text(ALTSTACK_CHILD.format(snippets=str(SNIPPETS.parent),
                                          library=str(script.parent / "libsnippets.so")))
    return path


@pytest.mark.parametrize("call", ["enable", "register", "early reference, map again"])
def test_faulthandler_leaves_the_handler_regmaps_alternate_stack(altstack_script, call):
    # After unmap the mapping thread has faulthandler's stack back, as without regmap.
    assert run(altstack_script, call) == (
        0, "mapping thread: regmap's\nafter unmap: another\n", "")


@pytest.mark.parametrize("call", ["enable in a thread", "register in a thread"])
def test_faulthandler_enabled_in_another_thread_leaves_it_regmaps_stack(altstack_script, call):
    # The main thread's own stack is untouched (regmap's since it mapped) and goes back at unmap.
    assert run(altstack_script, call) == (
        0, "thread: regmap's\nmapping thread: regmap's\nafter unmap: none\n", "")


def test_faulthandler_is_wrapped_once():
    import faulthandler
    import regmap
    with regmap.mapped():
        wrapped = faulthandler.enable
        regmap.map_registers()
        assert faulthandler.enable is wrapped
        assert not getattr(faulthandler.enable.__wrapped__, "regmap_guard", False)
