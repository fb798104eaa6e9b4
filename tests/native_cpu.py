"""The oracle's view of regmap's native engine (`regmap.x86.native`), plus what only tests need.

The engine runs one instruction on the host CPU against a shadow page holding the window image;
this module gives the tests its constants under their short names, `run_native`, and helpers
that only tests want: running an instruction in a forked child with no handler, asking the CPU
whether LDMXCSR takes a value.
"""
from __future__ import annotations

import os
import signal
from functools import lru_cache

from iced_x86 import Instruction, MemorySizeExt, Register, RegisterExt

from regmap.x86 import host
from regmap.x86.native import region as _region
from regmap.x86.native.engine import NativeFault, Placed, decode, memory_operand_index, place, run
from regmap.x86.native.region import GPRS, SHADOW_SIZE, STACK_SIZE
from regmap.x86.native.state import NativeState, write_state
from regmap.x86.native.stub import GPR_REGISTERS

__all__ = [
    "GPRS", "SHADOW_BASE", "SHADOW_SIZE", "STACK_BASE", "STACK_SIZE", "STACK_TOP", "INSN_ADDRESS",
    "NativeState", "NativeFault", "Placed", "place", "run_native", "cpu_flags", "vector_width",
    "window_address",
]

# The region's addresses (REGION, SHADOW_BASE, ...) are looked up when a test first uses one, not
# when this module is imported: a region that cannot be made then fails (or, off a supported host,
# skips) each test that needs it with the reason, instead of stopping the collection of every
# module that imports this one.
_LAZY = {"REGION": lambda r: r, "REGION_BASE": lambda r: r.base, "SHADOW_BASE": lambda r: r.shadow,
         "STACK_BASE": lambda r: r.stack, "STACK_TOP": lambda r: r.stack_top, "INSN_ADDRESS": lambda r: r.insn}


def region() -> _region.Region:
    """The native engine's region, made on first use.  Skips the test where the host cannot run the
    engine at all; on a host that can, a region that cannot be made is a failure (``OSError``)."""
    try:
        return _region.ensure()
    except OSError as error:
        problem = host.platform_problem()
        if problem:
            import pytest
            pytest.skip(f"the native engine cannot run here: {problem}")
        raise OSError(error.errno, f"the native engine's region cannot be made: {error}") from error


def __getattr__(name: str):
    if name in _LAZY:
        return _LAZY[name](region())
    if name == "USER_CS":
        return user_cs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


USER_RFLAGS = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800
WATCHDOG_SECONDS = 2.0      # an instruction that has not finished by then (a branch gone astray) is stopped
cpu_flags, vector_width, vector_count = host.cpu_flags, host.vector_width, host.vector_count

_GPR_OF_REGISTER = dict(zip(GPR_REGISTERS, GPRS))


def run_native(code: bytes, state: NativeState, *, bias: dict[str, int] | None = None) -> NativeState:
    """`regmap.x86.native.engine.run` with the tests' watchdog and user-flag rule: the oracle's
    states never set AC (it would turn the forms' unaligned accesses into #AC).  ``ValueError`` if
    the explicit memory operand does not lie in the window."""
    instr = place(code).instruction
    ea = window_address(instr, state.gpr)
    if ea is not None:
        size = max(MemorySizeExt.size(instr.memory_size), 1)
        if not 0 <= ea <= SHADOW_SIZE - size:
            raise ValueError(f"{instr}: effective address {ea:#x} (+{size}) is not inside the window")
    state = state.copy()
    state.rflags &= ~0x40000
    return run(code, state, bias=bias, watchdog=WATCHDOG_SECONDS)


def window_address(instr: Instruction, gpr: dict[str, int]) -> int | None:
    """The effective address of ``instr``'s explicit memory operand given ``gpr`` (None if it has none).

    VSIB operands (per-element indexes) are not resolved: None.
    """
    if memory_operand_index(instr) is None or instr.is_vsib or instr.is_ip_rel_memory_operand:
        return None
    bits = 64
    ea = instr.memory_displacement
    if instr.memory_base != Register.NONE:
        bits = RegisterExt.size(instr.memory_base) * 8
        ea += gpr[_GPR_OF_REGISTER[RegisterExt.full_register(instr.memory_base)]]
    if instr.memory_index != Register.NONE:
        bits = RegisterExt.size(instr.memory_index) * 8
        ea += gpr[_GPR_OF_REGISTER[RegisterExt.full_register(instr.memory_index)]] * instr.memory_index_scale
    if instr.memory_base == Register.NONE and instr.memory_index == Register.NONE:
        bits = 64
    return ea & ((1 << bits) - 1)


def run_in_child(code: bytes, state: NativeState, **kw) -> int:
    """Run ``code`` natively in a forked child with no fault handler; return the signal that ended it
    (0 if it exited normally).  For asserting that an instruction really kills a process."""
    pid = os.fork()
    if pid == 0:
        try:
            for sig in _region.FAULT_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            # the stub installs its action for the fault signals: make that action SIG_DFL
            import struct
            r = region()
            struct.pack_into("<Q", r.view, _region.B_ACTION, 0)
            placed = place(code)
            body = placed.native + r.jump_to_epilogue(placed.after)
            r.write_code(r.insn - r.code, body)
            run = state.copy()
            for name, amount in (kw.get("bias") or {}).items():
                run.gpr[name] = (run.gpr[name] + amount) & (2**64 - 1)
            write_state(r, run)
            r.unblock_watchdog(True)        # the stub blocks SIGVTALRM but for a watchdog's run
            _region.arm_watchdog(WATCHDOG_SECONDS)
            r.stub()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


@lru_cache(maxsize=1)
def user_cs() -> int:
    """The code segment selector this process runs with (a far branch through the window must load
    it again): ``USER_CS``."""
    return run_native(b"\x8c\xc8", NativeState()).gpr["rax"] & 0xFFFF      # mov eax, cs


@lru_cache(maxsize=4096)
def mxcsr_accepted(value: int) -> bool:
    """Whether the CPU's LDMXCSR takes ``value`` (reserved bits set raise #GP)."""
    state = NativeState()
    state.shadow = (value & 0xFFFFFFFF).to_bytes(4, "little") + bytes(SHADOW_SIZE - 4)
    try:
        run_native(bytes.fromhex("0fae142500000000"), state)                 # ldmxcsr [0]
    except NativeFault as fault:
        if fault.signo == signal.SIGSEGV:
            return False
        raise
    return True


_ = decode  # re-exported for tests that decode at the instruction slot
