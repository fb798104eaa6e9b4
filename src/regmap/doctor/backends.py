"""The self-test's four runs of a case: the CPU itself (the oracle) and regmap's three backends.

Every run returns, for each case index it ran, either the state after (see `image`) or a string
saying why there is none (an exception, a crash).  The oracle runs the instruction with its
window operand moved onto a real buffer holding the layout's image of the starting state
(``[0x8]`` becomes ``[buffer + 0x8]``; a string instruction's rsi/rdi point into the buffer
instead), then puts the buffer bytes the instruction wrote back through the layout, after its
register writes, as regmap does (``xadd [8], rcx`` leaves rcx = 2 * rcx).
"""
from __future__ import annotations

import ctypes
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile

from iced_x86 import Encoder, InstructionInfoFactory, MemorySizeExt, OpAccess, Register, RegisterExt

from regmap.doctor import code as machine
from regmap.doctor import image
from regmap.doctor.cases import Case

_WRITES = {OpAccess.WRITE, OpAccess.READ_WRITE, OpAccess.COND_WRITE, OpAccess.READ_COND_WRITE}
_GPR_NAME = {getattr(Register, name.upper()): name for name in image.GPRS}
MASK64 = 2**64 - 1
IN_PROCESS_TIMEOUT = 20.0
TRACED_TIMEOUT = 30.0

Runs = dict  # case index -> state dict, or a string: why the run gave no state


def _basis(state: dict[str, int]) -> dict[str, int]:
    return {name: value for name, value in state.items() if name != "stack"}


# -- the CPU: the oracle --------------------------------------------------------------------------
def _string_pointers(instruction) -> tuple[str, ...]:
    """The registers a string instruction addresses memory through (rsi, rdi)."""
    if not instruction.is_string_instruction:
        return ()
    used = InstructionInfoFactory().info(instruction).used_memory()
    return tuple(sorted({_GPR_NAME[RegisterExt.full_register(m.base)] for m in used}))


def oracle_code(case: Case, window: int) -> bytes:
    """``case``'s instruction with its window operand moved ``window`` bytes up."""
    instruction = case.instruction
    if instruction.is_string_instruction:
        return case.code
    instruction.memory_displacement = (instruction.memory_displacement + window) & MASK64
    encoder = Encoder(64)
    encoder.encode(instruction, 0)
    return encoder.take_buffer()


def _written(case: Case, state: dict[str, int], window: int) -> set[int]:
    """Window offsets ``case``'s explicit or string memory operands write, from ``state``."""
    instruction = case.instruction
    if not instruction.is_string_instruction:
        instruction.memory_displacement = (instruction.memory_displacement + window) & MASK64
    offsets = set()
    for used in InstructionInfoFactory().info(instruction).used_memory():
        if used.access not in _WRITES:
            continue
        address = used.displacement
        if used.base != Register.NONE:
            address += state[_GPR_NAME[RegisterExt.full_register(used.base)]]
        if used.index != Register.NONE:
            address += state[_GPR_NAME[RegisterExt.full_register(used.index)]] * used.scale
        address = (address & MASK64) - window
        offsets.update(o for o in range(address, address + MemorySizeExt.size(used.memory_size))
                       if 0 <= o < image.WINDOW_SIZE)
    return offsets


def run_oracle(block: image.Block, cases: dict[int, Case], states: dict[int, dict], layout) -> Runs:
    """Each case natively, its window operand on the block's window buffer."""
    window = block.base + block.window
    pointers = {i: _string_pointers(case.instruction) for i, case in cases.items()}
    calls = machine.functions(block, {i: oracle_code(case, window) for i, case in cases.items()})
    results: Runs = {}
    for index, case in cases.items():
        state = dict(states[index])
        before = layout.image(_basis(state))
        ctypes.memmove(window, before, image.WINDOW_SIZE)
        for name in pointers[index]:
            state[name] = (state[name] + window) & MASK64
        ctypes.memmove(block.slot(index), block.slot_bytes(index, state), block.slot_size)
        calls[index]()
        after = block.result(ctypes.string_at(block.slot(index), block.slot_size))
        for name in pointers[index]:
            after[name] = (after[name] - window) & MASK64
        now = ctypes.string_at(window, image.WINDOW_SIZE)
        written = _written(case, state, window) | {o for o in range(image.WINDOW_SIZE)
                                                   if now[o] != before[o]}
        for offset in sorted(written):     # the window's writes land after the registers'
            layout.write(offset, 1, now[offset], after)
        results[index] = after
    return results


# -- the pure backend -----------------------------------------------------------------------------
def run_pure(block: image.Block, cases: dict[int, Case], states: dict[int, dict], layout) -> Runs:
    from regmap.pure import emulate
    results: Runs = {}
    for index, case in cases.items():
        state = states[index]
        stack = bytearray(state["stack"].to_bytes(image.STACK_SIZE, "little"))
        base = block.stack(index)
        try:
            emulation = emulate(case.code, _basis(state), layout=layout,
                                memory={base: bytes(stack)}, trace=False)
        except Exception as error:     # noqa: BLE001 - every failure is a finding
            results[index] = f"{type(error).__name__}: {error}"
            continue
        after = dict(emulation.regs.basis())
        for address, data in emulation.memory_writes:
            if base <= address and address + len(data) <= base + image.STACK_SIZE:
                stack[address - base:address - base + len(data)] = data
        after["stack"] = int.from_bytes(stack, "little")
        results[index] = after
    return results


# -- in-process: map_registers() in a forked child ------------------------------------------------
def run_in_process(block: image.Block, cases: dict[int, Case], states: dict[int, dict],
                   layout, fast: bool = False) -> Runs:
    """The cases with regmap.map_registers(), in a child process (a crash, or a fault regmap
    forwards, ends the child and not the doctor; the case it was at is reported, the rest run
    in a new child).  `fast`: each case runs twice from its state, the second time through the
    handler's machine code where the site got a trampoline (``fast_faults``); the results'
    ``"dispatched"`` is how many of those second runs it served."""
    results: Runs = {}
    pending = list(cases)
    dispatched = 0
    while pending:
        got, crashed, started, sent = _in_process_child(block, {i: cases[i] for i in pending},
                                                        states, layout, fast)
        dispatched += sent
        results.update(got)
        pending = [i for i in pending if i not in results]
        if pending and not started:         # map_registers() itself failed: no case can run
            return {**results, **{i: crashed for i in pending}}
        if pending:
            results[pending[0]] = crashed
            pending = pending[1:]
    if fast:
        results["dispatched"] = dispatched
    return results


def run_fast_faults(block: image.Block, cases: dict[int, Case], states: dict[int, dict],
                    layout) -> Runs:
    return run_in_process(block, cases, states, layout, fast=True)


_DISPATCHED, _READY, _ERROR = 0xFFFF_FFFD, 0xFFFF_FFFE, 0xFFFF_FFFF


def _in_process_child(block, cases, states, layout, fast=False) -> tuple[Runs, str, bool, int]:
    """The cases run in a forked child: their results, why it stopped early, whether it got
    as far as running them, and how many it ran through the fast-fault machine code."""
    initial = {index: block.slot_bytes(index, states[index]) for index in cases}
    for index in cases:       # the slots are written before the fork: the child only runs them
        ctypes.memmove(block.slot(index), initial[index], block.slot_size)
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:                                        # the child
        status = 0
        try:
            os.close(read_end)
            import regmap.runtime
            regmap.runtime.map_registers(layout, fast_faults=1 if fast else False)
            calls = machine.functions(block, {i: case.code for i, case in cases.items()})
            os.write(write_end, struct.pack("<II", _READY, 0))
            for index in cases:
                if fast:        # the first fault plans the site; the second may not reach Python
                    calls[index]()
                    ctypes.memmove(block.slot(index), initial[index], block.slot_size)
                    before = regmap.runtime.stats().dispatched
                calls[index]()
                if fast and regmap.runtime.stats().dispatched > before:
                    os.write(write_end, struct.pack("<II", _DISPATCHED, 0))
                data = ctypes.string_at(block.slot(index), block.slot_size)
                os.write(write_end, struct.pack("<II", index, len(data)))
                _write_all(write_end, data)
        except BaseException as error:   # noqa: BLE001 - reported by the parent
            message = f"{type(error).__name__}: {error}".encode()
            os.write(write_end, struct.pack("<II", _ERROR, len(message)) + message)
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    results: Runs = {}
    dispatched = 0
    crashed, started = "", False
    buffer = b""
    try:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while True:
                ready, _, _ = select.select([pipe], [], [], IN_PROCESS_TIMEOUT)
                if not ready:
                    crashed = f"no answer in {IN_PROCESS_TIMEOUT:.0f} s (stopped)"
                    os.kill(pid, signal.SIGKILL)
                    break
                chunk = pipe.read(1 << 16)
                if not chunk:
                    break
                buffer += chunk
                while len(buffer) >= 8:
                    index, size = struct.unpack_from("<II", buffer)
                    if len(buffer) < 8 + size:
                        break
                    data, buffer = buffer[8:8 + size], buffer[8 + size:]
                    if index == _READY:
                        started = True
                    elif index == _DISPATCHED:
                        dispatched += 1
                    elif index == _ERROR:
                        crashed = data.decode(errors="replace")
                    else:
                        results[index] = block.result(data)
    finally:
        _, status = os.waitpid(pid, 0)
    if not crashed and os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        crashed = f"the process died of {signal.Signals(number).name}"
    return results, crashed or "the process ended early", started, dispatched


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- traced: a generated static program under `regmap exec` -----------------------------------------
def run_traced(block: image.Block, cases: dict[int, Case], states: dict[int, dict], layout) -> Runs:
    """The cases in one generated program run by ``regmap exec``; if it fails, each case alone,
    to say which."""
    data = bytearray(block.size)
    for index in cases:
        offset = block.slot(index) - block.base
        data[offset:offset + block.slot_size] = block.slot_bytes(index, states[index])
    with tempfile.TemporaryDirectory(prefix="regmap-doctor-") as directory:
        output, problem = _traced_run(block, {i: c.code for i, c in cases.items()}, bytes(data),
                                      directory, layout)
        if problem is None:
            return {index: _slot_result(block, output, index) for index in cases}
        results: Runs = {}
        for index, case in cases.items():
            output, problem = _traced_run(block, {index: case.code}, bytes(data), directory, layout)
            results[index] = problem if problem else _slot_result(block, output, index)
        return results


def _slot_result(block: image.Block, output: bytes, index: int) -> dict[str, int]:
    offset = block.slot(index) - block.base
    return block.result(output[offset:offset + block.slot_size])


def _traced_run(block, codes, data, directory, layout) -> tuple[bytes, str | None]:
    path = os.path.join(directory, "selftest")
    with open(path, "wb") as file:
        file.write(machine.program(block, codes, data))
    os.chmod(path, 0o700)
    try:
        done = subprocess.run([sys.executable, "-m", "regmap", "exec", path], capture_output=True, timeout=TRACED_TIMEOUT)
    except subprocess.TimeoutExpired:
        return b"", f"regmap exec did not finish in {TRACED_TIMEOUT:.0f} s"
    if done.returncode != 0 or len(done.stdout) != block.size:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        return b"", (f"regmap exec ended with status {done.returncode}"
                     + (f": {detail[-1]}" if detail else ""))
    return done.stdout, None
