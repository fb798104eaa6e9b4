# Native snippets for tests/test_runtime*.py, assembled at test time (gcc -shared).
# Page-0 addresses are the default layout's: rax 0x00, rcx 0x08, rdx 0x10, rbx 0x18,
# rsp 0x20, rbp 0x28, rsi 0x30, rdi 0x38, r8..r15 0x40..0x78, rip 0x80, rflags 0x88,
# ymm i at 0x100 + 32*i (its xmm at the same address, its upper half 16 bytes above).
    .intel_syntax noprefix
    .text

# long add_rcx_loop(long n, long rcx): n times `add rax, [8]` (rax += rcx); returns rax
    .globl add_rcx_loop
add_rcx_loop:
    mov rcx, rsi
    xor eax, eax
    test rdi, rdi
    jz 2f
1:  add rax, qword ptr [8]
    dec rdi
    jnz 1b
2:  ret

# long echo_rdi(long x): returns rdi, read through page 0
    .globl echo_rdi
echo_rdi:
    mov rax, qword ptr [0x38]
    ret

# long read_window_0(long x): returns whatever page-0 address 0 is (rdi in a layout that puts it there)
    .globl read_window_0
read_window_0:
    mov rax, qword ptr [0]
    ret

# long window_mix(long a, long b): a few sizes and operations through page 0
    .globl window_mix
window_mix:
    mov rax, qword ptr [0x38]       # rax = a
    add rax, qword ptr [0x30]       # rax = a + b
    mov qword ptr [0x10], 7         # rdx = 7
    sub rax, qword ptr [0x10]       # rax = a + b - 7
    mov rcx, rax
    xor qword ptr [0x08], rdi       # rcx ^= a
    mov r8, rcx
    and qword ptr [0x40], 0xfff     # r8 &= 0xfff
    mov rax, r8
    mov byte ptr [0x01], 0x5a       # ah = 0x5a
    mov dl, byte ptr [0x00]         # dl = al
    mov dword ptr [0x14], 0         # rdx[63:32] = 0
    add rax, rdx
    ret

# unsigned long flags_window(long a, long b) / flags_native: rflags after cmp a, b
    .globl flags_window
flags_window:
    cmp qword ptr [0x38], rsi
    pushfq
    pop rax
    ret
    .globl flags_native
flags_native:
    cmp rdi, rsi
    pushfq
    pop rax
    ret

# void xmm_window(const void *in16, void *out16): xmm1 = xmm0 (= *in) via page 0
    .globl xmm_window
xmm_window:
    movdqu xmm0, xmmword ptr [rdi]
    movdqu xmm1, xmmword ptr [0x100]
    movdqu xmmword ptr [rsi], xmm1
    ret

# void ymm_window(const void *in32, void *out32): ymm1 = ymm0 (= *in) via page 0
    .globl ymm_window
ymm_window:
    vmovdqu ymm0, ymmword ptr [rdi]
    vmovdqu ymm1, ymmword ptr [0x100]
    vmovdqu ymmword ptr [rsi], ymm1
    vzeroupper
    ret

# void ymm_high_from_init(const void *in16, void *out64): with the upper halves of all ymm in
# their initial state, store *in into the upper half of ymm2 through page 0; out = ymm2, ymm4
    .globl ymm_high_from_init
ymm_high_from_init:
    vzeroupper
    movdqu xmm3, xmmword ptr [rdi]
    movdqu xmmword ptr [0x150], xmm3
    vmovdqu ymmword ptr [rsi], ymm2
    vmovdqu ymmword ptr [rsi + 32], ymm4
    vzeroupper
    ret

# long div_window(long a, long b): a / b with the divisor read through page 0 (rcx)
    .globl div_window
div_window:
    mov rax, rdi
    mov rcx, rsi
    xor edx, edx
    .globl div_window_insn
div_window_insn:
    div qword ptr [8]
    ret

# long div_native(long a, long b)
    .globl div_native
div_native:
    mov rax, rdi
    mov rcx, rsi
    xor edx, edx
    .globl div_native_insn
div_native_insn:
    div rcx
    ret

# long load_from(const long *p) / void store_to(long *p): plain accesses (genuine faults)
    .globl load_from
load_from:
    mov rax, qword ptr [rdi]
    ret
    .globl store_to
store_to:
    mov qword ptr [rdi], 1
    ret

# void jump_to(void *target)
    .globl jump_to
jump_to:
    jmp rdi

# void overflow(void): recurse until the stack runs out, touching every page
    .globl overflow
overflow:
    sub rsp, 4096
    mov qword ptr [rsp], 0
    call overflow
    add rsp, 4096
    ret

# long unsupported_window(void): an instruction regmap does not emulate (a far jump), on page 0
    .globl unsupported_window
unsupported_window:
    jmp fword ptr [8]
    xor eax, eax
    ret


# void capture_state(const void *in, void *out): load every general, zmm and opmask register
# from `in`, run one page-0 instruction (at capture_point), store them all to `out`.
# Block: 16 general registers in encoding order (rax rcx rdx rbx rsp rbp rsi rdi r8..r15; rsp
# is not loaded, its value at capture_point is stored), zmm0..31 at 128, k0..7 at 2176,
# rflags at 2240.  Needs AVX-512 (F, BW).
    .globl capture_state
capture_state:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rsi
    vmovdqu64 zmm0, zmmword ptr [rdi + 128]
    vmovdqu64 zmm1, zmmword ptr [rdi + 192]
    vmovdqu64 zmm2, zmmword ptr [rdi + 256]
    vmovdqu64 zmm3, zmmword ptr [rdi + 320]
    vmovdqu64 zmm4, zmmword ptr [rdi + 384]
    vmovdqu64 zmm5, zmmword ptr [rdi + 448]
    vmovdqu64 zmm6, zmmword ptr [rdi + 512]
    vmovdqu64 zmm7, zmmword ptr [rdi + 576]
    vmovdqu64 zmm8, zmmword ptr [rdi + 640]
    vmovdqu64 zmm9, zmmword ptr [rdi + 704]
    vmovdqu64 zmm10, zmmword ptr [rdi + 768]
    vmovdqu64 zmm11, zmmword ptr [rdi + 832]
    vmovdqu64 zmm12, zmmword ptr [rdi + 896]
    vmovdqu64 zmm13, zmmword ptr [rdi + 960]
    vmovdqu64 zmm14, zmmword ptr [rdi + 1024]
    vmovdqu64 zmm15, zmmword ptr [rdi + 1088]
    vmovdqu64 zmm16, zmmword ptr [rdi + 1152]
    vmovdqu64 zmm17, zmmword ptr [rdi + 1216]
    vmovdqu64 zmm18, zmmword ptr [rdi + 1280]
    vmovdqu64 zmm19, zmmword ptr [rdi + 1344]
    vmovdqu64 zmm20, zmmword ptr [rdi + 1408]
    vmovdqu64 zmm21, zmmword ptr [rdi + 1472]
    vmovdqu64 zmm22, zmmword ptr [rdi + 1536]
    vmovdqu64 zmm23, zmmword ptr [rdi + 1600]
    vmovdqu64 zmm24, zmmword ptr [rdi + 1664]
    vmovdqu64 zmm25, zmmword ptr [rdi + 1728]
    vmovdqu64 zmm26, zmmword ptr [rdi + 1792]
    vmovdqu64 zmm27, zmmword ptr [rdi + 1856]
    vmovdqu64 zmm28, zmmword ptr [rdi + 1920]
    vmovdqu64 zmm29, zmmword ptr [rdi + 1984]
    vmovdqu64 zmm30, zmmword ptr [rdi + 2048]
    vmovdqu64 zmm31, zmmword ptr [rdi + 2112]
    kmovq k0, qword ptr [rdi + 2176]
    kmovq k1, qword ptr [rdi + 2184]
    kmovq k2, qword ptr [rdi + 2192]
    kmovq k3, qword ptr [rdi + 2200]
    kmovq k4, qword ptr [rdi + 2208]
    kmovq k5, qword ptr [rdi + 2216]
    kmovq k6, qword ptr [rdi + 2224]
    kmovq k7, qword ptr [rdi + 2232]
    mov rax, qword ptr [rdi]
    mov rcx, qword ptr [rdi + 8]
    mov rdx, qword ptr [rdi + 16]
    mov rbx, qword ptr [rdi + 24]
    mov rbp, qword ptr [rdi + 40]
    mov rsi, qword ptr [rdi + 48]
    mov r8, qword ptr [rdi + 64]
    mov r9, qword ptr [rdi + 72]
    mov r10, qword ptr [rdi + 80]
    mov r11, qword ptr [rdi + 88]
    mov r12, qword ptr [rdi + 96]
    mov r13, qword ptr [rdi + 104]
    mov r14, qword ptr [rdi + 112]
    mov r15, qword ptr [rdi + 120]
    mov rdi, qword ptr [rdi + 56]
    .globl capture_point
capture_point:
    mov r11, qword ptr [0x38]
    push rax
    mov rax, qword ptr [rsp + 8]
    mov qword ptr [rax + 8], rcx
    pushfq
    pop rcx
    mov qword ptr [rax + 2240], rcx
    lea rcx, [rsp + 8]
    mov qword ptr [rax + 32], rcx
    pop rcx
    mov qword ptr [rax], rcx
    mov qword ptr [rax + 16], rdx
    mov qword ptr [rax + 24], rbx
    mov qword ptr [rax + 40], rbp
    mov qword ptr [rax + 48], rsi
    mov qword ptr [rax + 56], rdi
    mov qword ptr [rax + 64], r8
    mov qword ptr [rax + 72], r9
    mov qword ptr [rax + 80], r10
    mov qword ptr [rax + 88], r11
    mov qword ptr [rax + 96], r12
    mov qword ptr [rax + 104], r13
    mov qword ptr [rax + 112], r14
    mov qword ptr [rax + 120], r15
    vmovdqu64 zmmword ptr [rax + 128], zmm0
    vmovdqu64 zmmword ptr [rax + 192], zmm1
    vmovdqu64 zmmword ptr [rax + 256], zmm2
    vmovdqu64 zmmword ptr [rax + 320], zmm3
    vmovdqu64 zmmword ptr [rax + 384], zmm4
    vmovdqu64 zmmword ptr [rax + 448], zmm5
    vmovdqu64 zmmword ptr [rax + 512], zmm6
    vmovdqu64 zmmword ptr [rax + 576], zmm7
    vmovdqu64 zmmword ptr [rax + 640], zmm8
    vmovdqu64 zmmword ptr [rax + 704], zmm9
    vmovdqu64 zmmword ptr [rax + 768], zmm10
    vmovdqu64 zmmword ptr [rax + 832], zmm11
    vmovdqu64 zmmword ptr [rax + 896], zmm12
    vmovdqu64 zmmword ptr [rax + 960], zmm13
    vmovdqu64 zmmword ptr [rax + 1024], zmm14
    vmovdqu64 zmmword ptr [rax + 1088], zmm15
    vmovdqu64 zmmword ptr [rax + 1152], zmm16
    vmovdqu64 zmmword ptr [rax + 1216], zmm17
    vmovdqu64 zmmword ptr [rax + 1280], zmm18
    vmovdqu64 zmmword ptr [rax + 1344], zmm19
    vmovdqu64 zmmword ptr [rax + 1408], zmm20
    vmovdqu64 zmmword ptr [rax + 1472], zmm21
    vmovdqu64 zmmword ptr [rax + 1536], zmm22
    vmovdqu64 zmmword ptr [rax + 1600], zmm23
    vmovdqu64 zmmword ptr [rax + 1664], zmm24
    vmovdqu64 zmmword ptr [rax + 1728], zmm25
    vmovdqu64 zmmword ptr [rax + 1792], zmm26
    vmovdqu64 zmmword ptr [rax + 1856], zmm27
    vmovdqu64 zmmword ptr [rax + 1920], zmm28
    vmovdqu64 zmmword ptr [rax + 1984], zmm29
    vmovdqu64 zmmword ptr [rax + 2048], zmm30
    vmovdqu64 zmmword ptr [rax + 2112], zmm31
    kmovq qword ptr [rax + 2176], k0
    kmovq qword ptr [rax + 2184], k1
    kmovq qword ptr [rax + 2192], k2
    kmovq qword ptr [rax + 2200], k3
    kmovq qword ptr [rax + 2208], k4
    kmovq qword ptr [rax + 2216], k5
    kmovq qword ptr [rax + 2224], k6
    kmovq qword ptr [rax + 2232], k7
    pop rsi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    vzeroupper
    ret

    .section .note.GNU-stack,"",@progbits
