"""Every form the native engine runs on this host, against the host CPU through the oracle.

The native engine is the CPU too, but the path differs: the emulator builds the window image from
the registers through the layout, re-encodes the instruction with an absolute shadow address,
runs it with its own stack and commits the difference (register writes first, window stores
last); the oracle runs the instruction as placed with the registers' own values and overlays the
stored bytes itself.  Each form is checked with a few random register sets (edge values in the
lanes the instruction looks at), its operand aligned or not.
"""
from __future__ import annotations

import platform
import random
import sys

import pytest

if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
    pytest.skip("the native engine runs on an x86-64 Linux host", allow_module_level=True)

import oracle  # noqa: E402
from forms import Impossible, code_name, form_info, random_form  # noqa: E402
from test_oracle import verify  # noqa: E402

from regmap.x86.support import coverage  # noqa: E402

NATIVE = [entry.code for entry in coverage().entries if entry.status == "native"]
FORMS_PER_CODE = 2
REGISTER_SETS = 2


@pytest.mark.parametrize("code", NATIVE, ids=code_name)
def test_native_form_agrees_with_the_cpu(code):
    info = form_info(code)
    if not info.drivable:
        pytest.skip(f"generator: {info.reason}")
    rng = random.Random(code)
    kinds = []
    for aligned in (True, False)[:FORMS_PER_CODE]:
        try:
            form = random_form(code, rng, aligned=aligned)
        except Impossible as exc:
            pytest.skip(f"generator: {exc}")
        kinds += verify(form, rng, REGISTER_SETS)
    assert kinds
    _ = oracle
