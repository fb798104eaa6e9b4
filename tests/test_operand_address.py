"""`regmap.x86.trampoline.operand_address`: how a site's operand address comes from the registers.

The fast-fault handler (regmap.runtime.dispatch) sends a register-addressed site to the trampoline
built for one window address only when this computation, on the registers the thread stopped with,
gives that address.  The oracle is the form generator (tests/forms.py), which draws base, index,
scale, displacement and 67h, and register values that put the operand at a chosen window offset.
Runs anywhere: nothing is executed.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from iced_x86 import Code

sys.path.insert(0, str(Path(__file__).resolve().parent))
from forms import Impossible, form_info, random_form  # noqa: E402

from regmap.x86 import supported_codes  # noqa: E402
from regmap.x86.trampoline import Declined, operand_address  # noqa: E402

SHAPES = ("abs", "base", "base+index", "index")


def drawn(seed: int, count: int) -> list:
    rng = random.Random(seed)
    codes = [c for c in sorted(supported_codes()) if c != Code.INVALID and form_info(c).drivable]
    forms = []
    for code in rng.sample(codes, min(count, len(codes))):
        try:
            form = random_form(code, rng, shapes=(rng.choice(SHAPES),))
        except Impossible:
            continue
        if not form.address_shape.startswith(("moffs", "string")):
            forms.append(form)
    return forms


@pytest.mark.parametrize("seed", range(4))
def test_the_address_from_the_registers_is_the_window_address_the_form_was_drawn_for(seed):
    checked = declined = 0
    for form in drawn(seed, 400):
        try:
            operand = operand_address(0x401000, form.bytes)
        except Declined as reason:
            declined += 1
            assert str(reason)
            continue
        registers = {name: value for name, value in form.fixed.items()}
        value = operand.value(lambda name: registers.get(name, 0) & (1 << 64) - 1)
        assert value == form.offset, (form.instruction, form.address_shape, operand, registers)
        checked += 1
    assert checked > 200 and declined < checked


@pytest.mark.parametrize("code, expected", [
    ("48 8b 44 b7 08", ("rdi", "rsi", 2, 8, (1 << 64) - 1)),          # mov rax, [rdi+rsi*4+8]
    ("67 8b 47 08", ("rdi", None, 0, 8, 0xFFFFFFFF)),                 # mov eax, [edi+8]
    ("48 8b 04 25 38 00 00 00", (None, None, 0, 0x38, (1 << 64) - 1)),  # mov rax, [0x38]
    ("67 48 8b 04 25 38 00 00 00", (None, None, 0, 0x38, 0xFFFFFFFF)),  # the same under 67h
])
def test_known_encodings(code, expected):
    assert tuple(operand_address(0, bytes.fromhex(code))) == expected


@pytest.mark.parametrize("code, why", [
    ("48 8b 3f", "writes a register of its own address"),            # mov rdi, [rdi]
    ("48 8b 05 00 00 00 00", "rip"),                                  # mov rax, [rip]
    ("62 f2 fd 49 92 04 c8", "the address uses .mm1"),                 # vgatherdpd (vsib)
    ("48 89 c8", "no single explicit memory operand"),                 # mov rax, rcx
])
def test_what_the_handler_cannot_work_out_is_declined_with_the_reason(code, why):
    with pytest.raises(Declined, match=why):
        operand_address(0, bytes.fromhex(code))
