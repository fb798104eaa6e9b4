"""faulthandler enabled after map_registers(): regmap stays first for window faults, and a genuine
crash still ends with faulthandler's report, exactly as with faulthandler alone.

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
        lib.load_from(0xDEAD0000)


    if crash == "crash":
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


@pytest.mark.parametrize("order", ORDERS)
def test_a_genuine_crash_still_prints_faulthandlers_report(script, order):
    plain = run(script, "plain", order, "crash")
    mapped = run(script, "regmap", order, "crash")
    assert plain[0] == -11 and plain[1] == "window ok\n"
    if "disable" in order:
        assert plain[2] == ""
    else:
        assert "Fatal Python error: Segmentation fault" in plain[2] and "in crash_site" in plain[2]
    assert mapped == plain


def test_faulthandler_is_wrapped_once():
    import faulthandler
    import regmap
    with regmap.mapped():
        wrapped = faulthandler.enable
        regmap.map_registers()
        assert faulthandler.enable is wrapped
        assert not getattr(faulthandler.enable.__wrapped__, "regmap_guard", False)
