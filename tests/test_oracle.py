"""Every instruction form the emulator supports, against the host CPU.

Each supported iced ``Code`` is driven through ``oracle.check`` twice: with its window operand
naturally aligned and misaligned (for a single byte the two coincide; where the CPU refuses a
misaligned operand with #GP, movdqa say, the emulator must refuse it too).  Hypothesis draws a form
(registers, immediates, address shape, window offset) and a seed; the seed gives a few more forms and
the register values (edge values mixed with random bits), so one hypothesis example checks several
cases.  A disagreement is reported with its inputs simplified (see ``oracle.check_minimized``).
The session summary says how many forms were verified.
"""
from __future__ import annotations

import os
import platform
import random
import sys

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
    pytest.skip("the oracle runs instructions on an x86-64 Linux host", allow_module_level=True)

import native_cpu as N  # noqa: E402
import oracle  # noqa: E402
from forms import Impossible, code_name, form_info, forms, host_can_run, random_form  # noqa: E402

try:
    from regmap.x86 import supported_codes
    SUPPORTED = sorted(supported_codes())
    _IMPORT_ERROR = ""
except Exception as exc:                          # the emulator is not importable: say so, run nothing
    SUPPORTED, _IMPORT_ERROR = [], f"{type(exc).__name__}: {exc}"

# hypothesis examples per (form, alignment), each checking 1 + EXTRA_FORMS encodings with
# REGISTER_SETS register sets: the whole suite should stay within a few minutes on 2 cores
# (REGMAP_ORACLE_EXAMPLES raises it for a deeper run)
EXAMPLES = int(os.environ.get("REGMAP_ORACLE_EXAMPLES", "0")) or max(3, min(30, 4000 // max(1, len(SUPPORTED))))
EXTRA_FORMS = 2
REGISTER_SETS = 2
_PHASES = (Phase.explicit, Phase.reuse, Phase.generate)

REPORT = oracle.REPORT

_EDGE64 = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
           0x100000000, 2**63 - 1, 2**63, 2**64 - 1, 2**64 - 2)


def random_gpr(rng: random.Random) -> int:
    """A general-register value: edges, small counts, sign-extended 32-bit values, or random bits."""
    pick = rng.randrange(8)
    if pick < 2:
        return rng.choice(_EDGE64)
    if pick == 2:
        return rng.randrange(0, 70)                          # shift and rotate counts, bit indexes
    if pick == 3:
        return rng.getrandbits(32) | (2**64 - 2**32)         # a negative int32, sign-extended
    if pick == 4:
        return rng.getrandbits(rng.choice((8, 16, 32)))
    return rng.getrandbits(64)


_vector_registers_cache: dict[bytes, frozenset[int]] = {}


def vector_registers(form) -> frozenset[int]:
    """Numbers of the vector registers ``form`` uses or its window operand covers."""
    found = _vector_registers_cache.get(form.bytes)
    if found is None:
        from iced_x86 import Decoder
        instr = Decoder(64, form.bytes).decode()
        names = oracle._other_registers(instr, oracle._load_layout(None), form.offset)
        found = frozenset(int(n[3:]) for n in names if n.startswith("zmm"))
        _vector_registers_cache[form.bytes] = found
    return found


def random_inputs(form, rng: random.Random):
    """Basis register values (the form's address registers fixed) and the scratch stack's bytes."""
    info = form_info(form.code)
    regs = {name: random_gpr(rng) for name in N.GPRS}
    regs["rflags"] = rng.getrandbits(12)
    rich = vector_registers(form)
    for i in range(32):
        # lanes with edge values where the instruction looks; plain random bits elsewhere (cheaper)
        regs[f"zmm{i}"] = oracle.random_vector(rng) if i in rich else rng.getrandbits(512)
    for i in range(8):
        regs[f"k{i}"] = rng.choice((0, 2**64 - 1, 0xFFFF, rng.getrandbits(64), rng.getrandbits(16)))
        regs[f"st{i}"] = rng.getrandbits(80)
    regs["mxcsr"] = (0x1F80 | rng.choice((0, 0, 1, 2, 3)) << 13 | rng.choice((0, 0, 0x8040))
                     | rng.getrandbits(6) * rng.randrange(2))
    regs.update(form.fixed)
    if not form.bias and not form.instruction.is_vsib:   # the generator's promise: the operand is there
        assert N.window_address(form.instruction, regs) == form.offset, form
    mask, value = form.rflags_fixed
    regs["rflags"] = (regs["rflags"] & ~mask) | value
    if info.uses_stack:
        regs["rsp"] = N.STACK_TOP
    if info.is_branch:
        # the target is read from the window: make it the native instruction's end, where the stub goes on
        from regmap.layout import load_layout
        layout = load_layout()
        if info.far:      # offset, then the selector: the one this process already runs in
            layout.write(form.offset, form.size - 2, N.place(form.bytes).after, regs)
            layout.write(form.offset + form.size - 2, 2, N.USER_CS, regs)
            regs["cs"] = N.USER_CS
        else:
            layout.write(form.offset, form.size, N.place(form.bytes).after, regs)
    return regs, rng.randbytes(N.STACK_SIZE)


def verify(form, rng: random.Random, count: int = 1) -> list[str]:
    """Check ``form`` against the CPU with ``count`` random register sets; the outcomes' kinds."""
    kinds = []
    for _ in range(count):
        regs, stack = random_inputs(form, rng)
        kinds.append(oracle.check_minimized(form, regs, stack=stack).kind)
    return kinds


def _skip_reason(code: int) -> str:
    info = form_info(code)
    if not info.drivable:
        return f"generator: {info.reason}"
    ok, why = host_can_run(code, N.cpu_flags())
    if not ok:
        return why
    return ""


def _params():
    if not SUPPORTED:
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=f"regmap.x86 unavailable: {_IMPORT_ERROR}"))]
    return [pytest.param(code, aligned, id=f"{code_name(code)}-{'aligned' if aligned else 'unaligned'}")
            for code in SUPPORTED for aligned in (True, False)]


@pytest.mark.parametrize("code, aligned", _params())
def test_oracle(code, aligned):
    reason = _skip_reason(code)
    if reason:
        REPORT.skip(code, reason)
        pytest.skip(reason)

    # no shrinking: a failure's registers are simplified by check_minimized, and shrinking a form
    # through many failing candidates would cost the suite minutes per disagreeing form
    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=_PHASES,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(data=st.data())
    def run(data):
        form = data.draw(forms(code, aligned=aligned), label="form")
        rng = random.Random(data.draw(st.integers(0, 2**32 - 1), label="seed"))
        # the drawn form, then a few more from the seed: hypothesis' bookkeeping costs more than a check
        cases = [form] + [random_form(code, rng, aligned=aligned) for _ in range(EXTRA_FORMS)]
        for case in cases:
            kinds.extend(verify(case, rng, REGISTER_SETS))

    kinds: list[str] = []
    try:
        run()
    except Impossible as exc:
        REPORT.skip(code, f"generator: {exc}")
        pytest.skip(f"generator: {exc}")
    except BaseException:
        REPORT.fail(code)
        raise
    REPORT.passed(code, aligned, kinds)


# ---------------------------------------------------------------------------------------------
# targeted: the special slots (rip reads as the next instruction's address; rflags, mxcsr)

def _reading_codes():
    from iced_x86 import Code
    wanted = ("MOV_R64_RM64", "ADD_R64_RM64", "CMP_RM64_R64", "MOV_R32_RM32", "MOVZX_R32_RM8", "PUSH_RM64")
    return [getattr(Code, n) for n in wanted if getattr(Code, n) in set(SUPPORTED)]


def _writing_codes():
    from iced_x86 import Code
    wanted = ("MOV_RM64_R64", "MOV_RM32_R32", "MOV_RM8_R8", "OR_RM64_R64", "AND_RM32_IMM32", "XOR_RM16_R16",
              "ADD_RM64_IMM8", "MOV_RM64_IMM32")
    return [getattr(Code, n) for n in wanted if getattr(Code, n) in set(SUPPORTED)]


@pytest.mark.parametrize("code", _reading_codes() or [None], ids=lambda c: code_name(c) if c else "none")
@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_special_slots_read(code, data):
    """Reads of rip (the next instruction's address), rflags and mxcsr through the window."""
    if code is None:
        pytest.skip("no reading form supported yet")
    form = data.draw(forms(code, kinds=("special",), avoid=frozenset({"rsp"})))
    verify(form, random.Random(data.draw(st.integers(0, 2**32 - 1))), REGISTER_SETS)


@pytest.mark.parametrize("code", _writing_codes() or [None], ids=lambda c: code_name(c) if c else "none")
@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_special_slots_written(code, data):
    """Stores to rip (a jump), rflags (only user-writable flags change, as with POPFQ) and mxcsr."""
    if code is None:
        pytest.skip("no writing form supported yet")
    form = data.draw(forms(code, kinds=("special",)))
    verify(form, random.Random(data.draw(st.integers(0, 2**32 - 1))), REGISTER_SETS)


# ---------------------------------------------------------------------------------------------
# the generator itself

_GENERATOR_SAMPLES = ("ADD_R64_RM64", "MOV_R8_RM8", "MOV_AL_MOFFS8", "BTS_RM32_R32", "PUSH_RM64", "JMP_RM64",
                      "MOVDQU_XMM_XMMM128", "EVEX_VADDPS_ZMM_K1Z_ZMM_ZMMM512B32_ER", "SHLD_RM16_R16_CL")


@pytest.mark.parametrize("name", _GENERATOR_SAMPLES)
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_generated_operand_lands_on_its_window_offset(name, data):
    from iced_x86 import Code, Decoder
    code = getattr(Code, name)
    if not host_can_run(code, N.cpu_flags())[0]:
        pytest.skip("host CPU lacks the feature")
    form = data.draw(forms(code))
    instr = Decoder(64, form.bytes, ip=0x400000).decode()
    assert instr.code == code
    assert not instr.is_ip_rel_memory_operand                   # [disp32] is the SIB form, never RIP-relative
    regs = {n: 0 for n in N.GPRS}
    regs.update(form.fixed)
    assert N.window_address(instr, regs) == form.offset
    assert form.size > 0
    assert form.aligned == (form.offset % form.size == 0 or form.size & (form.size - 1) != 0)


@pytest.mark.parametrize("name", ("MOVSB_M8_M8", "STOSQ_M64_RAX", "CMPSW_M16_M16", "LODSD_EAX_M32", "SCASB_AL_M8"))
@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_string_forms_point_into_the_window(name, data):
    from iced_x86 import Code
    form = data.draw(forms(getattr(Code, name)))
    assert form.bias and all(form.fixed[p] & 0xFFFFFFFF < 0x1000 for p in form.bias)
