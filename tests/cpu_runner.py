"""The oracle's independent reference: one instruction on the host CPU through a small C program
(programs/cpu_runner.c), not through regmap's native engine.

The oracle compares regmap with the CPU.  Its CPU side used to be the engine's own stub
(native_cpu.run_native), so a bug in how the stub loads or saves the machine (a register it
skips, an x87 tag it mangles) was on both sides and could not show.  This runner is built with gcc
at test time and runs as a child process; the state goes through a shared memfd, which the child
maps at the addresses the oracle's states point at (the engine's shadow page and scratch stack in
this process, which are free in the child), so the same states and placed code run unchanged.
Only the addresses are taken from regmap; the placement, loading, saving and fault reporting are
this module's and the C program's.

`get()` gives the session's runner, or None (with `why_not()` the reason: no gcc, not Linux x86-64).
"""
from __future__ import annotations

import atexit
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "snippets"))
from runtime_build import cpu_flags as _cpu_flags  # noqa: E402 - /proc/cpuinfo, not regmap.x86.host

SOURCE = Path(__file__).resolve().parent / "programs" / "cpu_runner.c"
BLOCK_SIZE, SHADOW_AT, STACK_AT = 0xC00, 0x1000, 0x2000      # the memfd's layout (cpu_runner.c)
_GPR, _RFLAGS, _MXCSR, _LEN, _FAULT, _CODE, _K, _FX, _ZMM = 0, 0x80, 0x88, 0x8C, 0x90, 0xC0, 0x100, 0x200, 0x400
# the flags a state may load: CF PF AF ZF SF DF OF (TF would trap; AC is cleared as the oracle's
# states never set it: it would turn unaligned operands into #AC), plus the fixed bit 1 and IF
LOADED = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800 | 0x2 | 0x200
M64 = 2**64 - 1


def why_not() -> str | None:
    """Why the runner cannot be used here, or None."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"the independent CPU runner needs Linux on x86-64 (this is {sys.platform} on {platform.machine()})"
    if shutil.which("gcc") is None:
        return "no gcc on PATH to build the independent CPU runner (tests/programs/cpu_runner.c)"
    return None


def width() -> int:
    flags = _cpu_flags()
    return 512 if "avx512f" in flags else 256 if "avx" in flags else 128


def place(code: bytes, insn: int, shadow: int) -> bytes:
    """``code`` re-encoded to run at ``insn`` with its explicit memory operand's displacement moved
    by ``shadow`` (base and index kept: the registers keep their window values), as the oracle's
    convention has it (`native_cpu.place`); without one, unchanged."""
    from iced_x86 import Code, Decoder, Encoder, OpKind, RegisterExt
    instr = Decoder(64, code, ip=insn).decode()
    if instr.code == Code.INVALID:
        raise ValueError(f"cannot decode {code.hex(' ')}")
    code = code[:instr.len]
    if not any(instr.op_kind(i) == OpKind.MEMORY for i in range(instr.op_count)):
        return code
    registers = instr.memory_base or instr.memory_index
    a32 = RegisterExt.size(registers) == 4 if registers else instr.memory_displ_size == 4
    instr.memory_displacement = (instr.memory_displacement + shadow) & (0xFFFFFFFF if a32 else M64)
    if instr.memory_displ_size == 0:
        instr.memory_displ_size = 1                     # [rcx] gains a displacement
    encoder = Encoder(64)
    encoder.encode(instr, insn)
    return encoder.take_buffer()


class RunnerDied(RuntimeError):
    """The runner process ended (its own bug, or a signal it does not catch)."""


class Runner:
    def __init__(self, shadow: int, stack: int, stack_size: int, insn: int):
        self.shadow, self.stack, self.stack_size, self.insn = shadow, stack, stack_size, insn
        self.width = width()
        self._directory = tempfile.mkdtemp(prefix="cpu_runner")
        atexit.register(shutil.rmtree, self._directory, True)
        self.executable = Path(self._directory) / "cpu_runner"
        kmov = "kmovq" if "avx512bw" in _cpu_flags() else "kmovw"
        subprocess.run(["gcc", "-O2", f"-DWIDTH={self.width}", f"-DKMOV={kmov}", "-o", str(self.executable),
                        str(SOURCE)], check=True, capture_output=True)
        self.fd = os.memfd_create("cpu_runner")
        os.ftruncate(self.fd, STACK_AT + stack_size)
        import mmap
        self.memory = mmap.mmap(self.fd, STACK_AT + stack_size)
        self.process = None
        atexit.register(self.close)

    def _start(self) -> None:
        self.process = subprocess.Popen(
            [str(self.executable), hex(self.shadow), hex(self.stack), hex(self.stack_size), hex(self.insn),
             str(self.fd)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=(self.fd,), bufsize=0)

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
                pipe.close()
            self.process = None

    def execute(self, native: bytes, state):
        """Run ``native`` (placed at ``insn``) from ``state`` (a `NativeState`); the state after it,
        or `NativeFault` (raised by the caller's class, passed in ``state``'s module)."""
        from regmap.x86.native.state import NativeState
        m = self.memory
        gpr = struct.pack("<16Q", *(state.gpr.get(name, 0) & M64 for name in GPR_ORDER))
        m[_GPR:_GPR + 128] = gpr
        struct.pack_into("<QII", m, _RFLAGS, (state.rflags & LOADED) | 0x202, state.mxcsr & 0xFFFFFFFF, len(native))
        m[_CODE:_CODE + len(native)] = native
        struct.pack_into("<8Q", m, _K, *(k & M64 for k in state.k))
        # FXSAVE image: FCW FSW FTW(abridged) FOP FIP FDP, MXCSR (loaded after by LDMXCSR), ST(i), xmm
        struct.pack_into("<HHBxHQQII", m, _FX, state.fcw & 0xFFFF, state.fsw & 0xFFFF, state.ftw & 0xFF,
                         state.fop & 0x7FF, state.fip & M64, state.fdp & M64, 0x1F80, 0)
        for i in range(8):
            m[_FX + 32 + 16 * i:_FX + 48 + 16 * i] = (state.st[i] & (2**80 - 1)).to_bytes(16, "little")
        for i in range(16):
            m[_FX + 160 + 16 * i:_FX + 176 + 16 * i] = (state.zmm[i] & (2**128 - 1)).to_bytes(16, "little")
        m[_ZMM:_ZMM + 2048] = b"".join((z & (2**512 - 1)).to_bytes(64, "little") for z in state.zmm)
        m[SHADOW_AT:SHADOW_AT + 0x1000] = state.shadow
        if state.stack is not None:
            m[STACK_AT:STACK_AT + self.stack_size] = state.stack
        if self.process is None:
            self._start()
        try:
            self.process.stdin.write(b"r")
            done = self.process.stdout.read(1)
        except BrokenPipeError:
            done = b""
        if done != b"x":
            self.process.kill()
            _, err = self.process.communicate()
            status = self.process.returncode
            self.process = None
            raise RunnerDied(f"the CPU runner ended (status {status}) running {native.hex(' ')}: "
                             f"{err.decode(errors='replace').strip()}")
        signo, si_code, address, rip = struct.unpack_from("<iiQQ", m, _FAULT)
        if signo:
            return (signo, si_code, address, rip)
        out = NativeState()
        out.gpr = dict(zip(GPR_ORDER, struct.unpack_from("<16Q", m, _GPR)))
        out.rflags, out.mxcsr = struct.unpack_from("<QI", m, _RFLAGS)
        out.k = list(struct.unpack_from("<8Q", m, _K)) if self.width == 512 else list(state.k)
        out.fcw, out.fsw, out.ftw, out.fop, out.fip, out.fdp = struct.unpack_from("<HHBxHQQ", m, _FX)
        out.st = [int.from_bytes(m[_FX + 32 + 16 * i:_FX + 42 + 16 * i], "little") for i in range(8)]
        if self.width == 128:
            out.zmm = [int.from_bytes(m[_FX + 160 + 16 * i:_FX + 176 + 16 * i], "little") for i in range(16)] + [0] * 16
        else:
            count, size = (32, 64) if self.width == 512 else (16, 32)
            out.zmm = [int.from_bytes(m[_ZMM + 64 * i:_ZMM + 64 * i + size], "little") if i < count else 0
                       for i in range(32)]
        out.shadow = bytes(m[SHADOW_AT:SHADOW_AT + 0x1000])
        out.stack = bytes(m[STACK_AT:STACK_AT + self.stack_size]) if state.stack is not None else None
        return out


GPR_ORDER = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
_RUNNER: list = []


def get() -> Runner | None:
    """The session's runner (built and started on first use), or None where it cannot be."""
    if not _RUNNER:
        if why_not():
            _RUNNER.append(None)
        else:
            import native_cpu as N
            _RUNNER.append(Runner(N.SHADOW_BASE, N.STACK_BASE, N.STACK_SIZE, N.INSN_ADDRESS))
    return _RUNNER[0]


def run(code: bytes, state, *, bias: dict[str, int] | None = None):
    """`native_cpu.run_native`'s contract through the runner: ``code`` (the window form) placed on
    the shadow page, run from ``state`` (AC cleared; ``bias`` added to the registers that point
    into the window for an implicit operand); the state after it, or `native_cpu.NativeFault`."""
    import native_cpu as N
    from iced_x86 import Decoder, MemorySizeExt
    runner = get()
    instr = Decoder(64, code, ip=runner.insn).decode()
    ea = N.window_address(instr, state.gpr)
    if ea is not None:
        size = max(MemorySizeExt.size(instr.memory_size), 1)
        if not 0 <= ea <= 0x1000 - size:
            raise ValueError(f"{instr}: effective address {ea:#x} (+{size}) is not inside the window")
    native = place(bytes(code), runner.insn, runner.shadow)
    run_state = state.copy()
    run_state.rflags &= ~0x40000
    for name, amount in (bias or {}).items():
        run_state.gpr[name] = (run_state.gpr[name] + amount) & M64
    result = runner.execute(native, run_state)
    if isinstance(result, tuple):
        signo, si_code, address, rip = result
        inside = runner.insn <= rip < runner.insn + len(native)
        raise N.NativeFault(signo, si_code, address, rip, f"{instr} (independent runner)", inside)
    # with a 32-bit address size a string instruction writes esi/edi as 32-bit registers: the
    # bias comes off modulo 2**32
    mask = 0xFFFFFFFF if bias and _address_bits(instr) == 32 else M64
    for name, amount in (bias or {}).items():
        result.gpr[name] = (result.gpr[name] - amount) & mask
    return result


def _address_bits(instr) -> int:
    from iced_x86 import InstructionInfoFactory
    for m in InstructionInfoFactory().info(instr).used_memory():
        return {1: 16, 2: 32, 3: 64}.get(m.address_size, 64)          # iced CodeSize
    return 64
