# The state runner of tests/test_backends_agree.py: load a full register state, run one
# instruction, save the full state.  Everything lives at fixed addresses below 2 GiB (abs32),
# the same in every process, so that a pointer into them is the same value everywhere.
#   IN  = 0x30000000  state in:  gprs 0x00 (rax rcx rdx rbx rsp rbp rsi rdi r8..r15), rflags 0x80,
#                     mxcsr 0x88, mode 0x90 (0 SSE, 1 AVX, 2 AVX-512F, 3 AVX-512BW), code 0x98,
#                     return 0xa0, host rsp 0xa8, k0..7 0x100, FXSAVE image 0x200, zmm i 0x400 + 64 i
#   OUT = 0x30001000  the same layout, written after the instruction
    .intel_syntax noprefix
    .set IN, 0x30000000
    .set OUT, 0x30001000
    .text
    .globl regmap_run_case
    .type regmap_run_case, @function
regmap_run_case:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov qword ptr [IN + 0xa8], rsp
    lea rax, [rip + 9f]
    mov qword ptr [IN + 0xa0], rax
    fxrstor [IN + 0x200]
    mov rax, qword ptr [IN + 0x90]
    cmp rax, 2
    jb 1f
    vmovdqu64 zmm0, zmmword ptr [IN + 0x400 + 0]
    vmovdqu64 zmm1, zmmword ptr [IN + 0x400 + 64]
    vmovdqu64 zmm2, zmmword ptr [IN + 0x400 + 128]
    vmovdqu64 zmm3, zmmword ptr [IN + 0x400 + 192]
    vmovdqu64 zmm4, zmmword ptr [IN + 0x400 + 256]
    vmovdqu64 zmm5, zmmword ptr [IN + 0x400 + 320]
    vmovdqu64 zmm6, zmmword ptr [IN + 0x400 + 384]
    vmovdqu64 zmm7, zmmword ptr [IN + 0x400 + 448]
    vmovdqu64 zmm8, zmmword ptr [IN + 0x400 + 512]
    vmovdqu64 zmm9, zmmword ptr [IN + 0x400 + 576]
    vmovdqu64 zmm10, zmmword ptr [IN + 0x400 + 640]
    vmovdqu64 zmm11, zmmword ptr [IN + 0x400 + 704]
    vmovdqu64 zmm12, zmmword ptr [IN + 0x400 + 768]
    vmovdqu64 zmm13, zmmword ptr [IN + 0x400 + 832]
    vmovdqu64 zmm14, zmmword ptr [IN + 0x400 + 896]
    vmovdqu64 zmm15, zmmword ptr [IN + 0x400 + 960]
    vmovdqu64 zmm16, zmmword ptr [IN + 0x400 + 1024]
    vmovdqu64 zmm17, zmmword ptr [IN + 0x400 + 1088]
    vmovdqu64 zmm18, zmmword ptr [IN + 0x400 + 1152]
    vmovdqu64 zmm19, zmmword ptr [IN + 0x400 + 1216]
    vmovdqu64 zmm20, zmmword ptr [IN + 0x400 + 1280]
    vmovdqu64 zmm21, zmmword ptr [IN + 0x400 + 1344]
    vmovdqu64 zmm22, zmmword ptr [IN + 0x400 + 1408]
    vmovdqu64 zmm23, zmmword ptr [IN + 0x400 + 1472]
    vmovdqu64 zmm24, zmmword ptr [IN + 0x400 + 1536]
    vmovdqu64 zmm25, zmmword ptr [IN + 0x400 + 1600]
    vmovdqu64 zmm26, zmmword ptr [IN + 0x400 + 1664]
    vmovdqu64 zmm27, zmmword ptr [IN + 0x400 + 1728]
    vmovdqu64 zmm28, zmmword ptr [IN + 0x400 + 1792]
    vmovdqu64 zmm29, zmmword ptr [IN + 0x400 + 1856]
    vmovdqu64 zmm30, zmmword ptr [IN + 0x400 + 1920]
    vmovdqu64 zmm31, zmmword ptr [IN + 0x400 + 1984]
    cmp rax, 3
    jb 3f
    kmovq k0, qword ptr [IN + 0x100 + 0]
    kmovq k1, qword ptr [IN + 0x100 + 8]
    kmovq k2, qword ptr [IN + 0x100 + 16]
    kmovq k3, qword ptr [IN + 0x100 + 24]
    kmovq k4, qword ptr [IN + 0x100 + 32]
    kmovq k5, qword ptr [IN + 0x100 + 40]
    kmovq k6, qword ptr [IN + 0x100 + 48]
    kmovq k7, qword ptr [IN + 0x100 + 56]
    jmp 2f
3:
    kmovw k0, word ptr [IN + 0x100 + 0]
    kmovw k1, word ptr [IN + 0x100 + 8]
    kmovw k2, word ptr [IN + 0x100 + 16]
    kmovw k3, word ptr [IN + 0x100 + 24]
    kmovw k4, word ptr [IN + 0x100 + 32]
    kmovw k5, word ptr [IN + 0x100 + 40]
    kmovw k6, word ptr [IN + 0x100 + 48]
    kmovw k7, word ptr [IN + 0x100 + 56]
    jmp 2f
1:  cmp rax, 1
    jb 2f
    vmovdqu ymm0, ymmword ptr [IN + 0x400 + 0]
    vmovdqu ymm1, ymmword ptr [IN + 0x400 + 64]
    vmovdqu ymm2, ymmword ptr [IN + 0x400 + 128]
    vmovdqu ymm3, ymmword ptr [IN + 0x400 + 192]
    vmovdqu ymm4, ymmword ptr [IN + 0x400 + 256]
    vmovdqu ymm5, ymmword ptr [IN + 0x400 + 320]
    vmovdqu ymm6, ymmword ptr [IN + 0x400 + 384]
    vmovdqu ymm7, ymmword ptr [IN + 0x400 + 448]
    vmovdqu ymm8, ymmword ptr [IN + 0x400 + 512]
    vmovdqu ymm9, ymmword ptr [IN + 0x400 + 576]
    vmovdqu ymm10, ymmword ptr [IN + 0x400 + 640]
    vmovdqu ymm11, ymmword ptr [IN + 0x400 + 704]
    vmovdqu ymm12, ymmword ptr [IN + 0x400 + 768]
    vmovdqu ymm13, ymmword ptr [IN + 0x400 + 832]
    vmovdqu ymm14, ymmword ptr [IN + 0x400 + 896]
    vmovdqu ymm15, ymmword ptr [IN + 0x400 + 960]
2:  ldmxcsr dword ptr [IN + 0x88]
    mov rsp, IN + 0x80
    popfq
    mov rax, qword ptr [IN + 0]
    mov rcx, qword ptr [IN + 8]
    mov rdx, qword ptr [IN + 16]
    mov rbx, qword ptr [IN + 24]
    mov rsp, qword ptr [IN + 32]
    mov rbp, qword ptr [IN + 40]
    mov rsi, qword ptr [IN + 48]
    mov rdi, qword ptr [IN + 56]
    mov r8, qword ptr [IN + 64]
    mov r9, qword ptr [IN + 72]
    mov r10, qword ptr [IN + 80]
    mov r11, qword ptr [IN + 88]
    mov r12, qword ptr [IN + 96]
    mov r13, qword ptr [IN + 104]
    mov r14, qword ptr [IN + 112]
    mov r15, qword ptr [IN + 120]
    jmp qword ptr [IN + 0x98]
9:
    mov qword ptr [OUT + 0], rax
    mov qword ptr [OUT + 8], rcx
    mov qword ptr [OUT + 16], rdx
    mov qword ptr [OUT + 24], rbx
    mov qword ptr [OUT + 32], rsp
    mov qword ptr [OUT + 40], rbp
    mov qword ptr [OUT + 48], rsi
    mov qword ptr [OUT + 56], rdi
    mov qword ptr [OUT + 64], r8
    mov qword ptr [OUT + 72], r9
    mov qword ptr [OUT + 80], r10
    mov qword ptr [OUT + 88], r11
    mov qword ptr [OUT + 96], r12
    mov qword ptr [OUT + 104], r13
    mov qword ptr [OUT + 112], r14
    mov qword ptr [OUT + 120], r15
    mov rsp, OUT + 0x88
    pushfq
    mov rsp, qword ptr [IN + 0xa8]
    stmxcsr dword ptr [OUT + 0x88]
    fxsave [OUT + 0x200]
    mov rax, qword ptr [IN + 0x90]
    cmp rax, 2
    jb 1f
    vmovdqu64 zmmword ptr [OUT + 0x400 + 0], zmm0
    vmovdqu64 zmmword ptr [OUT + 0x400 + 64], zmm1
    vmovdqu64 zmmword ptr [OUT + 0x400 + 128], zmm2
    vmovdqu64 zmmword ptr [OUT + 0x400 + 192], zmm3
    vmovdqu64 zmmword ptr [OUT + 0x400 + 256], zmm4
    vmovdqu64 zmmword ptr [OUT + 0x400 + 320], zmm5
    vmovdqu64 zmmword ptr [OUT + 0x400 + 384], zmm6
    vmovdqu64 zmmword ptr [OUT + 0x400 + 448], zmm7
    vmovdqu64 zmmword ptr [OUT + 0x400 + 512], zmm8
    vmovdqu64 zmmword ptr [OUT + 0x400 + 576], zmm9
    vmovdqu64 zmmword ptr [OUT + 0x400 + 640], zmm10
    vmovdqu64 zmmword ptr [OUT + 0x400 + 704], zmm11
    vmovdqu64 zmmword ptr [OUT + 0x400 + 768], zmm12
    vmovdqu64 zmmword ptr [OUT + 0x400 + 832], zmm13
    vmovdqu64 zmmword ptr [OUT + 0x400 + 896], zmm14
    vmovdqu64 zmmword ptr [OUT + 0x400 + 960], zmm15
    vmovdqu64 zmmword ptr [OUT + 0x400 + 1024], zmm16
    vmovdqu64 zmmword ptr [OUT + 0x400 + 1088], zmm17
    vmovdqu64 zmmword ptr [OUT + 0x400 + 1152], zmm18
    vmovdqu64 zmmword ptr [OUT + 0x400 + 1216], zmm19
    vmovdqu64 zmmword ptr [OUT + 0x400 + 1280], zmm20
    vmovdqu64 zmmword ptr [OUT + 0x400 + 1344], zmm21
    vmovdqu64 zmmword ptr [OUT + 0x400 + 1408], zmm22
    vmovdqu64 zmmword ptr [OUT + 0x400 + 1472], zmm23
    vmovdqu64 zmmword ptr [OUT + 0x400 + 1536], zmm24
    vmovdqu64 zmmword ptr [OUT + 0x400 + 1600], zmm25
    vmovdqu64 zmmword ptr [OUT + 0x400 + 1664], zmm26
    vmovdqu64 zmmword ptr [OUT + 0x400 + 1728], zmm27
    vmovdqu64 zmmword ptr [OUT + 0x400 + 1792], zmm28
    vmovdqu64 zmmword ptr [OUT + 0x400 + 1856], zmm29
    vmovdqu64 zmmword ptr [OUT + 0x400 + 1920], zmm30
    vmovdqu64 zmmword ptr [OUT + 0x400 + 1984], zmm31
    cmp rax, 3
    jb 3f
    kmovq qword ptr [OUT + 0x100 + 0], k0
    kmovq qword ptr [OUT + 0x100 + 8], k1
    kmovq qword ptr [OUT + 0x100 + 16], k2
    kmovq qword ptr [OUT + 0x100 + 24], k3
    kmovq qword ptr [OUT + 0x100 + 32], k4
    kmovq qword ptr [OUT + 0x100 + 40], k5
    kmovq qword ptr [OUT + 0x100 + 48], k6
    kmovq qword ptr [OUT + 0x100 + 56], k7
    jmp 4f
3:
    kmovw word ptr [OUT + 0x100 + 0], k0
    kmovw word ptr [OUT + 0x100 + 8], k1
    kmovw word ptr [OUT + 0x100 + 16], k2
    kmovw word ptr [OUT + 0x100 + 24], k3
    kmovw word ptr [OUT + 0x100 + 32], k4
    kmovw word ptr [OUT + 0x100 + 40], k5
    kmovw word ptr [OUT + 0x100 + 48], k6
    kmovw word ptr [OUT + 0x100 + 56], k7
    jmp 4f
1:  cmp rax, 1
    jb 2f
    vmovdqu ymmword ptr [OUT + 0x400 + 0], ymm0
    vmovdqu ymmword ptr [OUT + 0x400 + 64], ymm1
    vmovdqu ymmword ptr [OUT + 0x400 + 128], ymm2
    vmovdqu ymmword ptr [OUT + 0x400 + 192], ymm3
    vmovdqu ymmword ptr [OUT + 0x400 + 256], ymm4
    vmovdqu ymmword ptr [OUT + 0x400 + 320], ymm5
    vmovdqu ymmword ptr [OUT + 0x400 + 384], ymm6
    vmovdqu ymmword ptr [OUT + 0x400 + 448], ymm7
    vmovdqu ymmword ptr [OUT + 0x400 + 512], ymm8
    vmovdqu ymmword ptr [OUT + 0x400 + 576], ymm9
    vmovdqu ymmword ptr [OUT + 0x400 + 640], ymm10
    vmovdqu ymmword ptr [OUT + 0x400 + 704], ymm11
    vmovdqu ymmword ptr [OUT + 0x400 + 768], ymm12
    vmovdqu ymmword ptr [OUT + 0x400 + 832], ymm13
    vmovdqu ymmword ptr [OUT + 0x400 + 896], ymm14
    vmovdqu ymmword ptr [OUT + 0x400 + 960], ymm15
4:  vzeroupper
2:  fninit
    mov dword ptr [OUT + 0x8c], 0x1f80
    ldmxcsr dword ptr [OUT + 0x8c]
    mov dword ptr [OUT + 0x8c], 0
    cld
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
    .size regmap_run_case, . - regmap_run_case
    .section .note.GNU-stack,"",@progbits
