"""Every form with a trampoline, sent there by the handler's machine code, against emulation.

tests/test_trampoline_forms.py runs each form through its trampoline from a patched site (a
``jmp``).  Here the site is never patched: its fault is served by `regmap.runtime.dispatch`, which
sets the frame's rip to the trampoline.  Forms are drawn with every address shape (a constant, a
base, base + index, an index), the address registers fixed by the form and everything else
random; each state runs with every execution emulated, then with fast faults after the site's
first fault, and must give the same registers, flags, vector and x87 state, or the same signal,
si_code, si_addr and registers.  The register-addressed forms also check that a site is sent to
its trampoline only with the address it was planned for.
"""
from __future__ import annotations

import ctypes
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from test_runtime_trampoline import GPRS  # noqa: E402
from test_trampoline_forms import (REASON, STATE_SIZE, build_trials, caught,  # noqa: E402
                                   draw_forms, drawn_states, random_state, run, run_emulated,
                                   trampolined)

import regmap  # noqa: E402
from regmap.runtime import dispatch  # noqa: E402

pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
STATES = 3
SHAPES = ("abs", "base", "base+index", "index")
__all__ = ["caught"]       # the fixture, used by name


def dispatchable(form) -> bool:
    """Whether the form's address is one a trampoline can be planned for (no moffs or string
    operand) and it gets one."""
    return not form.address_shape.startswith(("moffs", "string")) and trampolined(form, form.offset)


def forms(rng: random.Random) -> list:
    return draw_forms(rng, SHAPES, dispatchable, avoid=frozenset({"rsp"}))


@pytest.fixture(scope="module")
def trials(tmp_path_factory):
    chosen = forms(random.Random(41))
    return build_trials(tmp_path_factory.mktemp("dispatch-forms"), chosen), chosen


def state_for(rng: random.Random, form, fx: bytes) -> bytes:
    """A random state with the registers the form's address needs set to their values."""
    state = bytearray(random_state(rng, form, fx))
    for name, value in form.fixed.items():
        at = 8 * GPRS.index(name)
        state[at:at + 8] = (value & (1 << 64) - 1).to_bytes(8, "little")
    assert len(state) == STATE_SIZE
    return bytes(state)


def test_every_trampoline_form_sent_by_the_handler_runs_as_emulated(trials, caught):
    lib, chosen = trials
    states = drawn_states(43, chosen, STATES, state_for)
    emulated = run_emulated(lib, states)
    with regmap.mapped(translate=0, fast_faults=1):
        for i, form_states in enumerate(states):     # the first fault of each site plans it
            run(lib, i, form_states[0])
        regmap.runtime.reset_stats()
        through = [[run(lib, i, s) for s in form_states] for i, form_states in enumerate(states)]
        dispatched_count = regmap.stats().dispatched
        dispatched = {known.site for known in dispatch.PLANS.values() if any(known.records.values())}
        register_addressed = {known.site for known in dispatch.PLANS.values() if known.registers}
    sites = [ctypes.cast(getattr(lib, f"site_{i}"), ctypes.c_void_p).value for i in range(len(chosen))]
    sent = [i for i, site in enumerate(sites) if site in dispatched]
    wrong = [(chosen[i].instruction, chosen[i].address_shape, j) for i in range(len(chosen))
             for j in range(STATES) if through[i][j] != emulated[i][j]]
    by_register = sum(1 for i in sent if sites[i] in register_addressed)
    print(f"{len(chosen)} forms drawn, {len(sent)} sent to trampolines by the handler "
          f"({by_register} register-addressed)")
    assert not wrong, f"{len(wrong)} differ: {wrong[:20]}"
    assert len(sent) > 100 and by_register > 50
    # and the handler sent them there (a state that faults at the site may reach Python)
    assert dispatched_count >= len(sent)
