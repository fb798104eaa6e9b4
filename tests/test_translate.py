"""regmap.x86.translate: which window instructions have an exact register form, and the proof.

The proof is the host CPU: for every instruction form the emulator supports, random encodings
with a constant window address are offered to `translate`; each one it accepts runs natively
twice from the same registers, once as written (its operand on a shadow page holding the window
image) and once as the register form, and the two must leave every register, flag and stack byte
the same, the shadow page's written bytes standing for the registers they are.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from iced_x86 import Code, Decoder, FlowControl, InstructionInfoFactory, Mnemonic, OpCodeInfo, OpKind, Register

sys.path.insert(0, str(Path(__file__).resolve().parent))
import native_cpu as N  # noqa: E402
from forms import Impossible, form_info, host_can_run, random_form  # noqa: E402

from regmap.layout import load_layout  # noqa: E402
from regmap.x86 import supported_codes  # noqa: E402
from regmap.x86.translate import WRITES, padded, translate, why_not  # noqa: E402

_INFO = InstructionInfoFactory()

LAYOUT = load_layout()
M64 = (1 << 64) - 1
ADDRESS = 0x401000


def code_of(hex_bytes: str) -> bytes:
    return bytes.fromhex(hex_bytes)


# -- the rules, on hand-picked encodings --------------------------------------------------------

TRANSLATED = [
    ("48 03 04 25 08 00 00 00", "add rax,rcx"),            # add rax, [8]
    ("03 04 25 08 00 00 00", "add eax,ecx"),                # a 32-bit read: fine
    ("48 89 04 25 08 00 00 00", "mov rcx,rax"),             # a 64-bit write
    ("66 89 04 25 08 00 00 00", "mov cx,ax"),               # 16-bit writes merge, as the window's do
    ("88 04 25 09 00 00 00", "mov ch,al"),                  # ch, no REX needed
    ("f3 0f 6f 04 25 00 01 00 00", "movdqu xmm0,xmm0"),     # legacy SSE load
    ("f3 0f 7f 0c 25 00 01 00 00", "movdqu xmm0,xmm1"),     # legacy SSE store merges
    ("c5 fe 6f 0c 25 00 01 00 00", "vmovdqu ymm1,ymm0"),    # VEX load: the destination is a register
    ("ff 14 25 08 00 00 00", "call rcx"),                   # prefixes in front: the same return address
    ("48 0f ba 24 25 08 00 00 00 03", "bt rcx,3"),          # an immediate bit offset is modulo 64
]

DECLINED = [
    ("89 04 25 08 00 00 00", "zero-extends"),               # mov dword [8], eax
    ("c5 fa 7f 0c 25 00 01 00 00", "upper lanes"),          # vmovdqu [0x100], xmm1
    ("48 03 07", "depends on a register"),                  # add rax, [rdi]
    ("48 03 04 25 04 00 00 00", "several registers"),       # add rax, [4]
    ("f3 0f 10 04 25 00 01 00 00", "4 bytes"),              # movss xmm0, [0x100]
    ("48 0f a3 04 25 08 00 00 00", "bit string"),           # bt [8], rax
    ("f0 48 01 04 25 08 00 00 00", "LOCK"),                 # lock add [8], rax
    ("ff 34 25 20 00 00 00", "rsp slot"),                   # push qword [0x20]
    ("48 03 04 25 80 00 00 00", "rip"),                     # add rax, [0x80]
    ("64 48 03 04 25 08 00 00 00", "segment"),              # add rax, fs:[8]
    ("67 48 03 04 25 08 00 00 00", "address-size"),         # add rax, [8] with 67h
    ("40 88 34 25 09 00 00 00", "no encoding"),             # mov [9], sil: ch with REX
    ("48 a1 08 00 00 00 00 00 00 00", "memory only"),       # mov rax, moffs [8]
]


@pytest.mark.parametrize("hex_bytes, expected", TRANSLATED)
def test_translated_forms(hex_bytes, expected):
    old = code_of(hex_bytes)
    translation = translate(ADDRESS, old, LAYOUT)
    assert translation is not None, why_not(ADDRESS, old, LAYOUT)
    assert translation.new_text == expected
    assert translation.old == old and len(translation.new) == len(old)
    # one instruction, no boundary inside it for a thread to be paused at
    (body,) = Decoder(64, translation.new, ip=ADDRESS)
    assert body.len == len(old) and body.next_ip == ADDRESS + len(old)


@pytest.mark.parametrize("hex_bytes, reason", DECLINED)
def test_declined_forms(hex_bytes, reason):
    code = code_of(hex_bytes)
    assert translate(ADDRESS, code, LAYOUT) is None
    assert reason in why_not(ADDRESS, code, LAYOUT)


def test_another_layout_names_other_registers(tmp_path):
    layout_file = tmp_path / "rdi_first.regs"
    layout_file.write_text("include amd64;\n"
                           "alias rsi_rdi : 128;\n"
                           "def rsi_rdi [reg rsi; reg rdi];\n"
                           "alias page : 32768;\n"
                           "def page [unk * 255; reg rsi_rdi];\n")
    rdi_first = load_layout(str(layout_file))
    translation = translate(ADDRESS, code_of("48 03 04 25 00 00 00 00"), rdi_first)   # [0]
    assert translation.new_text == "add rax,rdi"
    assert "hole" in why_not(ADDRESS, code_of("48 03 04 25 10 00 00 00"), rdi_first) \
        or "not a window operand" in why_not(ADDRESS, code_of("48 03 04 25 10 00 00 00"), rdi_first)


def test_a_read_of_the_rip_slot_becomes_a_rip_relative_lea():
    translation = translate(ADDRESS, code_of("48 8b 04 25 80 00 00 00"), LAYOUT)   # mov rax, [0x80]
    (lea,) = Decoder(64, translation.new, ip=ADDRESS)
    assert lea.mnemonic == Mnemonic.LEA and lea.is_ip_rel_memory_operand
    assert lea.ip_rel_memory_address == lea.next_ip == ADDRESS + 8     # what the slot reads as
    assert translate(ADDRESS, code_of("48 03 04 25 80 00 00 00"), LAYOUT) is None  # add: no


def test_padding_keeps_one_instruction_of_the_length_asked():
    body = code_of("48 01 c8")                                   # add rax, rcx
    for length in range(len(body), 16):
        (ins,) = Decoder(64, padded(body, length))
        assert ins.len == length and ins.code == Decoder(64, body).decode().code
        assert ins.op0_register == Register.RAX and ins.op1_register == Register.RCX


# -- the proof: the host CPU runs both forms -----------------------------------------------------

def candidate_codes():
    flags = N.cpu_flags()
    for code in sorted(supported_codes()):
        info = OpCodeInfo(code)
        if info.encoding not in (0, 1):            # legacy, VEX
            continue
        if Code.INVALID == code or not form_info(code).drivable:
            continue
        if not host_can_run(code, flags)[0]:
            continue
        yield code


def _window_bytes_to_registers(instr, values: dict, shadow: bytes, address: int, size: int) -> dict:
    """The registers after a memory-form run: the written window bytes put into their registers
    (after the instruction's own register writes: the memory write is its last effect)."""
    out = dict(values)
    if _INFO.info(instr).op_access(_memory_index(instr)) in WRITES:
        LAYOUT.write(address, size, int.from_bytes(shadow[address:address + size], "little"), out)
    return out


def _memory_index(instr) -> int:
    return next(i for i in range(instr.op_count) if instr.op_kind(i) == OpKind.MEMORY)


def _registers(state: N.NativeState) -> dict:
    values = dict(state.gpr)
    values.update({f"zmm{i}": v for i, v in enumerate(state.zmm[:16])})
    return values


@pytest.mark.skipif(sys.platform != "linux", reason="the native runner needs Linux on x86-64")
def test_every_translation_is_exact_on_the_host_cpu():
    rng = random.Random(11)
    checked, codes_translated = 0, set()
    for code in candidate_codes():
        for _ in range(6):
            try:
                form = random_form(code, rng, shapes=("abs",))
            except Impossible:
                break
            translation = translate(ADDRESS, form.bytes, LAYOUT)
            if translation is None:
                continue
            instr = form.instruction
            if instr.flow_control != FlowControl.NEXT or instr.stack_pointer_increment \
                    or translation.new_text.startswith("lea"):
                continue      # branches, the stack and the rip slot: in test_runtime_translate
            values = {name: rng.getrandbits(64) for name in N.GPRS}
            values["rsp"] = N.STACK_TOP
            values.update(form.fixed)
            zmm = [rng.getrandbits(256) for _ in range(32)]
            image = LAYOUT.image(dict(values, **{f"zmm{i}": z for i, z in enumerate(zmm)}))
            state = N.NativeState(gpr={n: values[n] for n in N.GPRS},
                                  rflags=0x202 | rng.choice((0, 0x8D5)), zmm=zmm, shadow=image)
            try:
                memory_form = N.run_native(form.bytes, state)
            except N.NativeFault as fault:
                with pytest.raises(N.NativeFault) as also:
                    N.run_native(_body(translation), state)
                assert also.value.signo == fault.signo, translation
                continue
            register_form = N.run_native(_body(translation), state)
            expected = _window_bytes_to_registers(instr, _registers(memory_form), memory_form.shadow,
                                                  form.offset, form.size)
            got = _registers(register_form)
            assert got == expected, f"{translation}: {form}"
            assert register_form.rflags == memory_form.rflags, f"{translation}: {form}"
            assert register_form.stack == memory_form.stack
            checked += 1
            codes_translated.add(code)
    print(f"{checked} translations of {len(codes_translated)} forms checked on the host CPU")
    assert checked > 200 and len(codes_translated) > 100, (checked, len(codes_translated))


def _body(translation) -> bytes:
    *padding, body = Decoder(64, translation.new, ip=ADDRESS)
    start = body.ip - ADDRESS
    return translation.new[start:start + body.len]
