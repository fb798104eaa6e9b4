"""`regmap.emulate` as an API: inputs, DecodeError, the lazy registers, changed/flags/repr, snippets."""
from collections.abc import Mapping

import pytest

import regmap
from regmap import alias
from regmap.emulation import Emulation, RegisterValues
from regmap.errors import DecodeError, RegmapError, UnsupportedInstruction
from regmap.layout import load_layout

ADD_RAX_RCX_SLOT = "48 03 04 25 08 00 00 00"        # add rax, [8]: rcx in the default layout
ADC_AL_CH_SLOT = "12 04 25 09 00 00 00"             # adc al, [9]: ch
# l: add rax, [8]; dec rcx; jnz l
SUM_LOOP = ADD_RAX_RCX_SLOT + " 48 ff c9 75 f3"


# -- inputs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [
    bytes.fromhex(ADD_RAX_RCX_SLOT), bytearray.fromhex(ADD_RAX_RCX_SLOT),
    memoryview(bytes.fromhex(ADD_RAX_RCX_SLOT)), ADD_RAX_RCX_SLOT, ADD_RAX_RCX_SLOT.replace(" ", ""),
    "48 03 04 25\n08 00 00 00"])
def test_code_is_bytes_or_hex_text(code):
    assert regmap.emulate(code, {"rax": 1, "rcx": 2}).regs["rax"] == 3


@pytest.mark.parametrize("code,shown,reason", [
    (b"", "[]", "there are no bytes"),
    ("", "''", "there are no bytes"),
    ("  \n", "'  \\n'", "there are no bytes"),
    ("48 03 zz", "'48 03 zz'", "not hex text"),
    ("48 03", "[48 03]", "the bytes end in the middle of an instruction"),
    (b"\x48\x03\x04", "[48 03 04]", "the bytes end in the middle of an instruction"),
])
def test_undecodable_input_is_a_decode_error_naming_the_bytes(code, shown, reason):
    with pytest.raises(DecodeError) as error:
        regmap.emulate(code, {})
    assert isinstance(error.value, RegmapError)
    assert shown in str(error.value) and reason in str(error.value)


def test_an_invalid_opcode_names_its_bytes_and_address():
    with pytest.raises(DecodeError) as error:
        regmap.emulate("c4", {}, rip=0x1000)              # a VEX prefix with nothing after it
    assert error.value.code == b"\xc4" and error.value.address == 0x1000
    assert "at 0x1000 from [c4]" in str(error.value)


def test_code_of_another_type_is_a_type_error():
    with pytest.raises(TypeError, match="bytes, hex text or assembly text"):
        regmap.emulate(0x48, {})


def test_regs_are_optional_and_any_case():
    assert regmap.emulate(ADD_RAX_RCX_SLOT).regs["rax"] == 0
    assert regmap.emulate(ADD_RAX_RCX_SLOT, {"RAX": 5, "Ecx": 1}).regs["RAX"] == 6


# -- the result --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def adc():
    return regmap.emulate(ADC_AL_CH_SLOT, {"rax": 0xFF, "rcx": 0x100, "cf": 1})


def test_regs_is_a_lazy_mapping_of_every_register(adc):
    layout = load_layout()
    names = [name for name in layout.registers.registers if name != layout.window]
    assert isinstance(adc.regs, Mapping) and not isinstance(adc.regs, dict)
    assert list(adc.regs) == names and len(adc.regs) == len(names)
    everything = dict(adc.regs)
    assert everything["al"] == adc.regs["al"] == (0xFF + 1 + 1) & 0xFF
    assert everything["ah"] == 0 and everything["eax"] == adc.regs["rax"]
    assert "AL" in adc.regs and layout.window not in adc.regs and "nosuch" not in adc.regs
    with pytest.raises(KeyError):
        adc.regs["nosuch"]
    with pytest.raises(KeyError):
        adc.regs[layout.window]
    assert adc.regs.get("nosuch", -1) == -1


def test_changed_maps_each_basis_register_that_changed_to_before_and_after(adc):
    rflags_before = adc.before["rflags"]
    assert adc.before["cf"] == 1 and adc.before["rax"] == 0xFF
    assert adc.changed == {"rax": (0xFF, adc.regs["rax"]), "rip": (0x400000, 0x400007),
                           "rflags": (rflags_before, adc.regs["rflags"])}
    assert set(adc.changed) <= set(alias.load("amd64").basis)


def test_flags_are_decoded_from_rflags(adc):
    rflags = adc.regs["rflags"]
    assert adc.flags["cf"] == rflags & 1 and adc.flags["zf"] == (rflags >> 6) & 1
    assert adc.flags["of"] == (rflags >> 11) & 1 and adc.flags["df"] == 0
    assert all(adc.flags[name] == adc.regs[name] for name in adc.flags)
    assert adc.changed_flags == {name: (adc.before[name], adc.regs[name]) for name in adc.flags
                                 if adc.before[name] != adc.regs[name]}


def test_repr_shows_disassembly_accesses_and_changes(adc):
    text = repr(adc)
    assert text.startswith("<Emulation: 1 instruction, rip left the code")
    assert "adc al,[9]" in text
    assert "read  [0x9] 1 byte = 0x1  (ch)" in text
    assert f"rax 0xff -> {adc.regs['rax']:#x}" in text and "rip 0x400000 -> 0x400007" in text
    assert len(text.splitlines()) <= 6


def test_a_window_write_is_listed_with_its_before_and_after():
    emulation = regmap.emulate("48 89 0c 25 00 00 00 00", {"rax": 7, "rcx": 9})   # mov [0], rcx
    (access,) = emulation.step.accesses
    assert access.write and (access.before, access.after, access.names) == (7, 9, "rax")
    assert "write [0x0] 8 bytes 0x7 -> 0x9  (rax)" in repr(emulation)


def test_emulation_is_exported():
    assert regmap.Emulation is Emulation and isinstance(regmap.emulate("90").regs, RegisterValues)


# -- snippets ----------------------------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 5, 40])
def test_a_loop_runs_until_rip_leaves_the_code(count):
    emulation = regmap.emulate(SUM_LOOP, {"rcx": count})
    assert emulation.finished
    assert emulation.regs["rax"] == count * (count + 1) // 2 and emulation.regs["rcx"] == 0
    assert [step.mnemonic for step in emulation.steps] == ["add", "dec", "jne"] * count
    assert emulation.regs["rip"] == 0x400000 + len(bytes.fromhex(SUM_LOOP))
    assert emulation.step is emulation.steps[-1]


def test_max_steps_stops_a_long_loop():
    emulation = regmap.emulate(SUM_LOOP, {"rcx": 1000}, max_steps=10)
    assert not emulation.finished and len(emulation.steps) == 10
    assert 0x400000 <= emulation.regs["rip"] < 0x400000 + len(bytes.fromhex(SUM_LOOP))
    assert emulation.regs["rcx"] == 1000 - 3 and emulation.regs["rax"] == 1000 + 999 + 998 + 997
    assert "stopped at max_steps" in repr(emulation) and "... 2 more" in repr(emulation)
    with pytest.raises(ValueError, match="max_steps must be at least 1"):
        regmap.emulate(SUM_LOOP, {}, max_steps=0)


def test_loop_instruction_and_instructions_that_do_not_touch_the_window():
    # add rax, [8]; loop back: rax = n + (n-1) + ... + 1; then mov rdx, rax; add rdx, rdx
    code = ADD_RAX_RCX_SLOT + " e2 f6 48 89 c2 48 01 d2"
    emulation = regmap.emulate(code, {"rcx": 4})
    assert emulation.regs["rax"] == 10 and emulation.regs["rdx"] == 20
    assert [step.mnemonic for step in emulation.steps][-3:] == ["loop", "mov", "add"]
    assert emulation.steps[-1].accesses == []


def test_call_and_ret_use_the_stack_given_as_memory():
    # call f; jmp end; f: mov rax, [8]; ret; end:
    code = "e8 02 00 00 00 eb 09 48 8b 04 25 08 00 00 00 c3"
    stack = 0x7000
    emulation = regmap.emulate(code, {"rcx": 0x55, "rsp": stack + 64}, memory={stack: bytes(64)})
    assert [step.mnemonic for step in emulation.steps] == ["call", "mov", "ret", "jmp"]
    assert emulation.regs["rax"] == 0x55 and emulation.regs["rsp"] == stack + 64
    assert emulation.memory_writes == [(stack + 56, (0x400005).to_bytes(8, "little"))]


def test_an_instruction_without_semantics_stops_the_snippet_with_its_bytes():
    with pytest.raises(UnsupportedInstruction) as error:
        regmap.emulate(ADD_RAX_RCX_SLOT + " 0f a2", {})      # ...; cpuid
    assert "0x400008" in str(error.value) and "0f a2" in str(error.value)
    assert "cpuid" in str(error.value)


def test_trailing_bytes_that_do_not_decode_are_a_decode_error():
    with pytest.raises(DecodeError, match=r"at 0x400008 from \[48\]"):
        regmap.emulate(ADD_RAX_RCX_SLOT + " 48", {})


# -- the trace, worked out when read ------------------------------------------------------------

def stepped_with_trace(emulation, code: str, memory: dict[int, bytes]):
    """The steps a traced `Emulator.step` takes, one by one, from the emulation's start."""
    from regmap.pure import PureMachine
    from regmap.x86 import Emulator
    machine = PureMachine(emulation.before.basis(), {0x400000: bytes.fromhex(code), **memory})
    emulator, end = Emulator(), 0x400000 + len(bytes.fromhex(code))
    steps = []
    while 0x400000 <= machine.registers["rip"] < end:
        steps.append(emulator.step(machine, trace=True, anywhere=True))
    return steps, machine


@pytest.mark.parametrize("code, regs, memory", [
    (SUM_LOOP, {"rcx": 3}, {}),
    # call f; jmp end; f: mov rax, [8]; ret; end:
    ("e8 02 00 00 00 eb 09 48 8b 04 25 08 00 00 00 c3", {"rcx": 0x55, "rsp": 0x7040},
     {0x7000: bytes(64)}),
    # pop qword [8]; push rax; pop qword [0x10]: the push overwrites what the first pop read
    ("8f 04 25 08 00 00 00 50 8f 04 25 10 00 00 00", {"rax": 0x2222, "rsp": 0x7038},
     {0x7000: bytes(56) + (0x1111).to_bytes(8, "little")}),
    # mov [0], rcx; xchg [8], rax; rep stosb into the window (rdi = 0x20, 4 bytes)
    ("48 89 0c 25 00 00 00 00 48 87 04 25 08 00 00 00 f3 aa",
     {"rax": 0x33, "rcx": 4, "rdi": 0x20}, {}),
], ids=["loop", "call-ret", "stack-overwritten-later", "window-writes"])
def test_the_trace_read_afterwards_is_what_a_traced_step_records(code, regs, memory):
    emulation = regmap.emulate(code, regs, memory=memory)
    expected, machine = stepped_with_trace(emulation, code, memory)
    assert emulation.steps == expected
    assert emulation.regs.basis() == {name: machine.registers.get(name, 0)
                                      for name in emulation.layout.registers.basis}
    assert emulation.memory_writes == machine.memory_writes
    assert any(step.accesses for step in emulation.steps)


def test_without_trace_the_steps_carry_no_accesses():
    emulation = regmap.emulate(SUM_LOOP, {"rcx": 2}, trace=False)
    assert [step.accesses for step in emulation.steps] == [None] * 6
    assert emulation.regs["rax"] == 3
