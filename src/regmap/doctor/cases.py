"""The self-test's sample: a few dozen window forms of every family, and the states they start from.

Each line of a table is: family, the instruction's bytes, its text, and what its starting state
must have (``rsi=0x8``; ``st0``: one value on the x87 stack).  Every other register is drawn
at random from a seed (the same seed, the same states), the flags too (DF stays clear), and
``rsp`` is the middle of the case's scratch stack.  Addresses are the default layout's: 0x8 is
rcx, 0x10 rdx, 0x100 + 32 i ymm i (docs/architecture.md).
"""
from __future__ import annotations

import dataclasses
import random

from iced_x86 import Decoder

from regmap.doctor import image
from regmap.x86 import host

FORMS = """
mov        488b042508000000         mov rax, qword ptr [0x8]
mov        c704251000000078563412   mov dword ptr [0x10], 0x12345678
mov        8a042509000000           mov al, byte ptr [0x9]
mov        0fb704251a000000         movzx eax, word ptr [0x1a]
mov        480fbe142541000000       movsx rdx, byte ptr [0x41]
alu        4803042508000000         add rax, qword ptr [0x8]
alu        12042509000000           adc al, byte ptr [0x9]
alu        48290c2518000000         sub qword ptr [0x18], rcx
alu        48313c2530000000         xor qword ptr [0x30], rdi
alu        4c3b0c2540000000         cmp r9, qword ptr [0x40]
alu        48f71c2548000000         neg qword ptr [0x48]
alu        ff042550000000           inc dword ptr [0x50]
alu        480fc1142508000000       xadd qword ptr [0x8], rdx
alu        f04c0fb1142558000000     lock cmpxchg qword ptr [0x58], r10
alu        f704256000000000ff0000   test dword ptr [0x60], 0xff00
bit        f3480fb8042508000000     popcnt rax, qword ptr [0x8]
bit        480f38f0042508000000     movbe rax, qword ptr [0x8]
bit        f2480f38f1042508000000   crc32 rax, qword ptr [0x8]
string     48ad                     lodsq                                      rsi=0x8
string     ab                       stosd                                      rdi=0x10
string     a4                       movsb                                      rsi=0x9 rdi=0x18
string     f3aa                     rep stosb                                  rdi=0x40 rcx=3
stack      ff342508000000           push qword ptr [0x8]
stack      8f042518000000           pop qword ptr [0x18]
cmov-setcc 480f44042508000000       cmovz rax, qword ptr [0x8]
cmov-setcc 0f4c0c2510000000         cmovl ecx, dword ptr [0x10]
cmov-setcc 0f92042511000000         setc byte ptr [0x11]
sse        f30f6f042500000000       movdqu xmm0, xmmword ptr [0x0]
sse        660ffe0c2540000000       paddd xmm1, xmmword ptr [0x40]
sse        0f29142520010000         movaps xmmword ptr [0x120], xmm2
sse        f20f581c2508000000       addsd xmm3, qword ptr [0x8]
sse        f2480f2a242518000000     cvtsi2sd xmm4, qword ptr [0x18]
sse        660f38002c2500010000     pshufb xmm5, xmmword ptr [0x100]
sse        660f2f342508000000       comisd xmm6, qword ptr [0x8]
sse        0fae1c2510000000         stmxcsr dword ptr [0x10]                   mxcsr=0x3fa1
sse        0fae142508000000         ldmxcsr dword ptr [0x8]                    rcx=0x5fc0
sse        660f38dc3c2500010000     aesenc xmm7, xmmword ptr [0x100]
sse        66440f3a4404252000000011 pclmulqdq xmm8, xmmword ptr [0x20], 0x11
avx        c5ec580c2500010000       vaddps ymm1, ymm2, ymmword ptr [0x100]
avx        c5fe7f1c2540010000       vmovdqu ymmword ptr [0x140], ymm3
avx        c5d1ef242500000000       vpxor xmm4, xmm5, xmmword ptr [0x0]
avx        c4e27d18342508000000     vbroadcastss ymm6, dword ptr [0x8]
avx        c4e2bdb83c2560010000     vfmadd231pd ymm7, ymm8, ymmword ptr [0x160]
avx        c463fd000c25800100001b   vpermq ymm9, ymmword ptr [0x180], 0x1b
avx512     62f1fe486f0c2500010000   vmovdqu64 zmm1, zmmword ptr [0x100]
avx512     62e1f540d4042500000000   vpaddq zmm16, zmm17, zmmword ptr [0x0]
avx512     62f16d48760c2540000000   vpcmpeqd k1, zmm2, zmmword ptr [0x40]
avx512     62f15c4a581c2500010000   vaddps zmm3{k2}, zmm4, zmmword ptr [0x100]
avx512     c5f8901c2508000000       kmovw k3, word ptr [0x8]
avx512     62f34d48252c254000000096 vpternlogd zmm5, zmm6, zmmword ptr [0x40], 0 x96
x87        dd042508000000           fld qword ptr [0x8]
x87        db042510000000           fild dword ptr [0x10]
x87        dc042508000000           fadd qword ptr [0x8]                       st0
x87        dd1c2518000000           fstp qword ptr [0x18]                      st0
x87        d93c2510000000           fnstcw word ptr [0x10]
"""

# forms that leave some flags undefined (the SDM's word; Intel and AMD CPUs do differ): the
# comparison is exact all the same, the host CPU's flags are the ones regmap must produce
UNDEFINED_FLAG_FORMS = """
shift      48d1242510000000         shl qword ptr [0x10], 1
shift      48d3042510000000         rol qword ptr [0x10], cl
shift      480fac14251800000005     shrd qword ptr [0x18], rdx, 5
mul-div    480faf042508000000       imul rax, qword ptr [0x8]
mul-div    48f7242508000000         mul qword ptr [0x8]
mul-div    48f7342508000000         div qword ptr [0x8]                        rdx=0 rcx=0x9abcdef12345
bit        480fba24250800000005     bt qword ptr [0x8], 5
bit        480fbc042508000000       bsf rax, qword ptr [0x8]
bit        f3480fbc042508000000     tzcnt rax, qword ptr [0x8]
bit        c4e2e0f2042508000000     andn rax, rbx, qword ptr [0x8]
"""


@dataclasses.dataclass(frozen=True)
class Case:
    family: str
    code: bytes
    text: str
    setting: tuple[tuple[str, int | None], ...]
    undefined_flags: bool

    @property
    def needs(self) -> tuple[str, ...]:
        """The CPU features the host lacks for this form (empty: it runs here)."""
        return host.missing_features(self.instruction.code)

    @property
    def instruction(self):
        return next(iter(Decoder(64, self.code)))

    @property
    def name(self) -> str:
        return self.text


def _parse(table: str, undefined: bool) -> list[Case]:
    cases = []
    for line in table.strip().splitlines():
        family, code, rest = line.split(None, 2)
        text, _, setting = rest.partition("  ")
        pairs = []
        for word in setting.split():
            name, _, value = word.partition("=")
            pairs.append((name, int(value, 0) if value else None))
        cases.append(Case(family, bytes.fromhex(code), text.strip(), tuple(pairs), undefined))
    return cases


def sample() -> list[Case]:
    return _parse(FORMS, False) + _parse(UNDEFINED_FLAG_FORMS, True)


_RANDOM_FLAGS = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x800       # DF (0x400) stays clear


def starting_state(case: Case, block: image.Block, index: int, seed: int) -> dict[str, int]:
    """The state case (slot index of block) starts from, drawn from seed."""
    draw = random.Random(f"{seed}:{case.text}")
    state = {name: draw.getrandbits(64) for name in image.GPRS}
    state["rsp"] = block.stack_top(index)
    state["rflags"] = 2 | draw.getrandbits(12) & _RANDOM_FLAGS
    state.update(mxcsr=0x1F80, fcw=0x037F, fsw=0, ftw=0)
    state.update({f"st{i}": 0 for i in range(8)})
    width = block.profile.vector_width
    state.update({name: draw.getrandbits(width) for name in block.vector_names()})
    opmask_bits = 64 if block.profile.wide_opmasks else 16
    state.update({name: draw.getrandbits(opmask_bits) for name in block.opmask_names()})
    state["stack"] = draw.getrandbits(8 * image.STACK_SIZE)
    for name, value in case.setting:
        if name == "st0":     # one value on the x87 stack: TOP 7, tag of physical register 7 valid
            exponent = 0x3FFF + draw.randrange(-8, 8)
            state.update(fsw=7 << 11, ftw=0x80,
                         st0=exponent << 64 | 1 << 63 | draw.getrandbits(63))
        else:
            state[name] = value
    return state
