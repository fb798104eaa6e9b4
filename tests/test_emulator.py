"""The emulator through `regmap.emulate`: the x86 rules that the window makes interesting.

The oracle suite (test_oracle.py) compares every form with the host CPU;
these tests pin the rules by name, so a failure says which rule broke.
"""
import pytest

import regmap
from regmap.errors import DivideError, GeneralProtection, NotWindowAccess, UnsupportedInstruction

MASK64 = (1 << 64) - 1


def run(hex_code, regs=None, **kwargs):
    return regmap.emulate(bytes.fromhex(hex_code), regs or {}, **kwargs).regs


def test_the_original_crates_example_step_by_step():
    """example.s: write(1, rsp, 32) set up entirely through page-0 stores."""
    state = {"rsp": 0x7FFF_0000}
    program = [
        "48 c7 04 25 38 00 00 00 01 00 00 00",  # movq $1, 56      -> rdi = 1
        "48 89 24 25 30 00 00 00",              # mov %rsp, 48     -> rsi = rsp
        "48 c7 04 25 10 00 00 00 20 00 00 00",  # movq $32, 16     -> rdx = 32
        "48 c7 04 25 00 00 00 00 01 00 00 00",  # movq $1, 0       -> rax = 1 (write)
    ]
    rip = 0x400000
    for code in program:
        state = run(code, state, rip=rip)
        assert state["rip"] == rip + len(bytes.fromhex(code))
        rip = state["rip"]
    assert (state["rax"], state["rdi"], state["rsi"], state["rdx"]) == (1, 1, 0x7FFF_0000, 32)


def test_add_rax_from_the_rcx_slot():
    regs = run("48 03 04 25 08 00 00 00", {"rax": MASK64, "rcx": 2})
    assert regs["rax"] == 1 and regs["cf"] == 1 and regs["zf"] == 0


def test_byte_reads_see_the_high_byte_registers():
    assert run("8a 04 25 01 00 00 00", {"rax": 0xBEEF})["al"] == 0xBE


def test_a_32_bit_register_write_zero_extends_but_a_4_byte_window_write_does_not():
    assert run("8b 04 25 08 00 00 00", {"rax": MASK64, "rcx": 5})["rax"] == 5
    assert run("89 0c 25 00 00 00 00", {"rax": MASK64, "rcx": 5})["rax"] == 0xFFFFFFFF_00000005


def test_an_unaligned_qword_spans_two_registers():
    regs = run("48 8b 14 25 04 00 00 00", {"rax": 0x11111111_22222222, "rcx": 0x33333333_44444444})
    assert regs["rdx"] == 0x44444444_11111111


def test_xadd_writes_memory_last():
    """xadd [8], rcx: rcx <- old [8] (= rcx), then [8] <- sum: rcx ends doubled."""
    assert run("48 0f c1 0c 25 08 00 00 00", {"rcx": 21})["rcx"] == 42


def test_cmpxchg_on_its_own_accumulator_always_succeeds():
    regs = run("48 0f b1 0c 25 00 00 00 00", {"rax": 7, "rcx": 9})  # cmpxchg [0], rcx
    assert regs["rax"] == 9 and regs["zf"] == 1


def test_cmpxchg_32_bit_failure_zero_extends_the_accumulator():
    regs = run("0f b1 0c 25 08 00 00 00", {"rax": 0xAAAAAAAA_00000001, "rcx": 2})  # cmpxchg [8], ecx
    assert regs["rax"] == 2 and regs["zf"] == 0


def test_cmov_32_bit_zeroes_the_upper_half_even_when_false():
    regs = run("0f 45 04 25 08 00 00 00", {"rax": MASK64, "rcx": 3, "rflags": 0x40})  # cmovne eax,[8], ZF=1
    assert regs["rax"] == 0xFFFFFFFF


@pytest.mark.parametrize("code", ["ff 34 25 08 00 00 00", "48 ff 34 25 08 00 00 00"])
def test_push_a_window_qword_with_and_without_rex_w(code):
    stack = 0x7000_0000
    result = regmap.emulate(bytes.fromhex(code), {"rcx": 0x1122334455667788, "rsp": stack + 64},
                            memory={stack: bytes(64)})
    assert result.regs["rsp"] == stack + 56
    assert result.memory_writes == [(stack + 56, (0x1122334455667788).to_bytes(8, "little"))]


def test_pop_into_the_rsp_slot_takes_the_popped_value():
    stack = 0x7000_0000
    regs = regmap.emulate(bytes.fromhex("8f 04 25 20 00 00 00"), {"rsp": stack},
                          memory={stack: (0x1234).to_bytes(8, "little")}).regs
    assert regs["rsp"] == 0x1234


def test_the_rip_slot_reads_the_next_instruction_and_writing_it_jumps():
    assert run("48 8b 04 25 80 00 00 00", rip=0x1000)["rax"] == 0x1008
    assert run("48 89 1c 25 80 00 00 00", {"rbx": 0x5000})["rip"] == 0x5000


def test_jmp_and_call_through_the_window():
    assert run("ff 24 25 08 00 00 00", {"rcx": 0x1234})["rip"] == 0x1234
    stack = 0x7000_0000
    result = regmap.emulate(bytes.fromhex("ff 14 25 08 00 00 00"), {"rcx": 0x1234, "rsp": stack + 8},
                            rip=0x400000, memory={stack: bytes(8)})
    assert result.regs["rip"] == 0x1234
    assert result.memory_writes == [(stack, (0x400007).to_bytes(8, "little"))]


def test_writing_the_rflags_slot_changes_only_user_flags():
    regs = run("48 89 04 25 88 00 00 00", {"rax": MASK64, "rflags": 0x202})  # IF set before
    assert regs["cf"] == regs["zf"] == regs["of"] == regs["df"] == 1
    assert regs["if"] == 1 and regs["iopl"] == 0 and regs["vm"] == 0 and regs["rflags"] & 2


def test_movdqu_loads_rax_rcx():
    assert run("f3 0f 6f 04 25 00 00 00 00", {"rax": 1, "rcx": 2})["xmm0"] == 2 << 64 | 1


def test_vex_load_clears_the_upper_vector_bits_and_sse_keeps_them():
    full = (1 << 512) - 1
    assert run("c5 fa 6f 04 25 00 00 00 00", {"zmm0": full, "rax": 5})["zmm0"] == 5  # vmovdqu xmm0
    assert run("f3 0f 6f 04 25 00 00 00 00", {"zmm0": full, "rax": 5})["zmm0"] == full ^ ((1 << 128) - 1) | 5


def test_movdqa_misaligned_is_a_general_protection_fault():
    with pytest.raises(GeneralProtection):
        run("66 0f 6f 04 25 08 00 00 00")


def test_divide_errors():
    with pytest.raises(DivideError):
        run("48 f7 34 25 08 00 00 00", {"rax": 1, "rcx": 0})  # div qword [8]
    with pytest.raises(DivideError):
        run("f6 34 25 08 00 00 00", {"rax": 0x1000, "rcx": 1})  # div byte [8]: quotient > 0xff


def test_an_access_outside_the_window_is_not_ours():
    from regmap.pure import PureMachine
    from regmap.x86 import Emulator
    for code, regs in (("48 8b 04 25 00 10 00 00", {}),              # mov rax, [0x1000]
                       ("48 8b 03", {"rbx": 0xDEAD0000})):            # mov rax, [rbx]
        machine = PureMachine({"rip": 0x400000, **regs}, {0x400000: bytes.fromhex(code)})
        with pytest.raises(NotWindowAccess):
            Emulator().step(machine)
        # emulate runs any instruction; memory it was not given faults as an unmapped page would
        with pytest.raises(regmap.MemoryFault):
            run(code, regs)
    with pytest.raises(NotWindowAccess, match="hole"):
        run("8b 04 25 94 00 00 00")  # the hole after mxcsr


def test_an_unsupported_instruction_names_bytes_disassembly_and_address():
    with pytest.raises(UnsupportedInstruction) as error:
        run("ff 2c 25 00 00 00 00", rip=0x401000)  # jmp far [0]: loads a code segment selector
    message = str(error.value)
    assert "0x401000" in message and "ff 2c 25 00 00 00 00" in message and "jmp" in message
    assert "far branch" in error.value.reason


def test_the_machine_is_unchanged_when_an_instruction_fails():
    from regmap.pure import PureMachine
    from regmap.x86 import Emulator
    code = bytes.fromhex("ff 34 25 08 00 00 00")  # push [8] onto an unmapped stack
    machine = PureMachine({"rip": 0x400000, "rsp": 0x9000, "rcx": 1}, {0x400000: code})
    before = dict(machine.registers)
    with pytest.raises(regmap.MemoryFault):
        Emulator().step(machine)
    assert machine.registers == before


def test_mxcsr_slot_refuses_reserved_bits_like_ldmxcsr():
    assert run("c7 04 25 90 00 00 00 80 9f 00 00")["mxcsr"] == 0x9F80  # mov dword [0x90], 0x9f80
    with pytest.raises(GeneralProtection):
        run("c7 04 25 90 00 00 00 00 00 01 00")  # bit 16 is reserved


def test_rep_movsb_copies_the_register_file_out_of_the_window():
    """memcpy(buffer, 0, 24): rax, rcx, rdx as they were when the instruction began."""
    buffer = 0x10000
    regs = {"rsi": 0, "rdi": buffer, "rcx": 24, "rax": 0x1122334455667788, "rdx": 0xAABBCCDD}
    result = regmap.emulate(bytes.fromhex("f3 a4"), regs, memory={buffer: bytes(32)})
    copied = b"".join(data for _, data in result.memory_writes)
    assert copied[:8] == (0x1122334455667788).to_bytes(8, "little")
    assert copied[8:16] == (24).to_bytes(8, "little")  # the count as it started, not as it runs down
    assert copied[16:24] == (0xAABBCCDD).to_bytes(8, "little")
    assert (result.regs["rsi"], result.regs["rdi"], result.regs["rcx"]) == (24, buffer + 24, 0)


def test_rep_stosq_fills_registers():
    regs = run("f3 48 ab", {"rdi": 0x40, "rcx": 3, "rax": 7})  # r8, r9, r10 = 7
    assert (regs["r8"], regs["r9"], regs["r10"], regs["r11"]) == (7, 7, 7, 0)
    assert regs["rdi"] == 0x58 and regs["rcx"] == 0


def test_a_store_into_the_count_slot_lands_after_the_count_runs_out():
    """rep stosb over rcx's own bytes: the loop runs its 3 elements, then the stores land."""
    regs = run("f3 aa", {"rdi": 0x8, "rcx": 3, "rax": 0x41})
    assert regs["rcx"] == 0x414141 and regs["rdi"] == 0xB


def test_std_makes_string_instructions_walk_down():
    regs = run("48 ad", {"rsi": 0x38, "rdi": 0x1234, "rflags": 0x400})  # lodsq with DF=1
    assert regs["rax"] == 0x1234 and regs["rsi"] == 0x30


def test_repne_scasb_stops_at_the_first_match():
    regs = run("f2 ae", {"rdi": 0x10, "rcx": 8, "rax": 0x33, "rdx": 0x4433_2211})  # strchr in rdx
    assert regs["zf"] == 1 and regs["rdi"] == 0x13 and regs["rcx"] == 5


def test_repe_cmpsb_compares_two_registers():
    regs = run("f3 a6", {"rsi": 0x10, "rdi": 0x18, "rcx": 8, "rdx": 0x0102030405060708,
                         "rbx": 0x0102030405FF0708})
    assert regs["zf"] == 0 and regs["rcx"] == 5 and regs["rsi"] == 0x13


def test_the_operand_address_is_fixed_before_the_instruction_writes_its_base():
    """cmpxchg8b [rdx-1] failing writes edx: the operand written back is still the one read."""
    regs = run("0f c7 4a ff", {"rdx": 1, "rax": 5})  # [rdx-1] = [0] = rax
    assert regs["zf"] == 0 and regs["rax"] == 5 and regs["rdx"] == 0
    regs = run("48 0f c1 49 f8", {"rcx": 8})  # xadd [rcx-8], rcx: [0] is rax
    assert regs["rax"] == 8 and regs["rcx"] == 0


def test_pop_with_an_rsp_based_destination_uses_the_incremented_rsp():
    stack = 0x7000_0000
    # pop qword [rsp - 0x70000008 + 8]: after the increment, rsp - stack - 8 + ... = 0x38 (rdi)
    disp = (0x38 - (stack + 8)) & 0xFFFFFFFF
    code = bytes.fromhex("8f 84 24") + disp.to_bytes(4, "little")
    regs = regmap.emulate(code, {"rsp": stack}, memory={stack: (0xABC).to_bytes(8, "little")}).regs
    assert regs["rdi"] == 0xABC and regs["rsp"] == stack + 8
