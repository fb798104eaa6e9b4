"""Register-addressed sites through their stubs under `regmap exec --translate`, against the emulated run.

The traced twin of tests/test_stub_forms.py: the same forms and the same kinds of states ((a) the
window address the site is made hot with, (b) other window addresses, (c) real memory, (d) a window
hole, the page after the window, a non-canonical address), in one program with a C driver (that of
tests/test_trace_trampoline_forms.py, with a buffer): it runs each trial twice from state (a), so that
with ``--translate=2`` the tracer makes the site a ``jmp`` to its stub, then every trial from every
state, writing the state after the instruction or the handler's record, and the real-memory buffer
(mapped at a fixed address).  The program runs under `regmap exec` with every window access
emulated, and with ``--translate=2``; the outputs must be equal.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_stub_forms import cases, forms, short_forms  # noqa: E402
from test_trace_trampoline_forms import both_runs, build  # noqa: E402
from test_trampoline_forms import REASON, _default_fx  # noqa: E402
from tracer_host import TRACED_PROGRAMS  # noqa: E402

STATES = 8                    # per form: those of test_stub_forms.cases, (a) again to fill
BUFFER, MEMORY = 4096, 0x2000_0000

pytestmark = [*TRACED_PROGRAMS, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


@pytest.fixture(scope="module", params=["5 bytes or more", "short"])
def driver(tmp_path_factory, request):
    chosen = forms(random.Random(47)) if request.param != "short" else short_forms(random.Random(61))
    rng = random.Random(59)
    fx = _default_fx()
    states = []
    for form in chosen:
        drawn = cases(rng, form, fx, MEMORY + 64)
        states.append((drawn + [drawn[0]] * STATES)[:STATES])
    directory = tmp_path_factory.mktemp("traced-stub-forms")
    # hot: twice from state (a), the address each form was drawn for
    executable = build(directory, chosen, states, HOT_STATES=1, HOT_RUNS=2, BUFFER=BUFFER,
                       MEMORY=f"{MEMORY:#x}")
    return executable, directory, chosen


def test_every_register_addressed_form_through_its_stub_runs_traced_as_emulated(driver):
    executable, directory, chosen = driver
    sites, emulated, through, plain_stats, stats = both_runs(executable, directory, len(chosen),
                                                             states=STATES, buffer=BUFFER)
    kinds = {site["rip"]: site["kind"] for site in stats["translated"]}
    stubbed = [i for i, site in enumerate(sites) if kinds.get(site) == "register-addressed"]
    wrong = [(chosen[i].instruction, chosen[i].address_shape, j) for i in range(len(chosen))
             for j in range(STATES) if through[i][j] != emulated[i][j]]
    print(f"{len(chosen)} register-addressed forms drawn, {len(stubbed)} run through their stubs traced")
    assert not wrong, f"{len(wrong)} differ: {wrong[:20]}"
    assert len(stubbed) > min(100, len(chosen) // 2)
    assert stats["faults"] < plain_stats["faults"]
