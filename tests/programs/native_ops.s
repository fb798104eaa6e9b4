# void native_ops(char *base, unsigned char out[512], long avx512)
#
# Instructions regmap runs on its native engine, each on a memory operand at base + slot: with
# base = 0 under regmap the operands are the register window (slot 0x8 is rcx, 0x60 r12, 0x120
# xmm1...), with base = a plain buffer the same code runs without regmap.  Every value an
# operand needs is stored to its slot first, through the same base, so the two runs compute the
# same results: result i is at out + 32 i.
    .intel_syntax noprefix
    .text
    .globl native_ops
native_ops:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    sub rsp, 8
    mov rbp, rdi                  # base
    mov rbx, rsi                  # out
    mov r15, rdx                  # avx512?
    # 0: addsd xmm0, [base+8] = 2.25 + 1.5
    mov rax, 0x3ff8000000000000   # 1.5
    mov [rbp + 8], rax
    mov rax, 0x4002000000000000   # 2.25
    movq xmm0, rax
    addsd xmm0, [rbp + 8]
    movq [rbx + 0], xmm0
    # 1: cvtsi2sd xmm0, qword [base+0x10] = 12345
    mov qword ptr [rbp + 0x10], 12345
    cvtsi2sd xmm0, qword ptr [rbp + 0x10]
    movq [rbx + 32], xmm0
    # 2: sqrtsd xmm0, [base+8] = sqrt(2)
    mov rax, 0x4000000000000000   # 2.0
    mov [rbp + 8], rax
    sqrtsd xmm0, [rbp + 8]
    movq [rbx + 64], xmm0
    # 3: fld [base+8]; fadd [base+0x10]; fstp [base+0x40] = 2.0 + 0.1
    mov rax, 0x3fb999999999999a   # 0.1
    mov [rbp + 0x10], rax
    fld qword ptr [rbp + 8]
    fadd qword ptr [rbp + 0x10]
    fstp qword ptr [rbp + 0x40]   # r8
    mov rax, [rbp + 0x40]
    mov [rbx + 96], rax
    # 4: aesenc xmm2, [base+0x120] (xmm1's slot)
    mov rax, 0x0123456789abcdef
    movq xmm7, rax
    pinsrq xmm7, rax, 1
    movdqu [rbp + 0x120], xmm7
    mov rax, 0x1122334455667788
    movq xmm2, rax
    aesenc xmm2, [rbp + 0x120]
    movdqu [rbx + 128], xmm2
    # 5: vfmadd231sd xmm3, xmm4, [base+8] = 3.0 + 0.5 * 2.0
    mov rax, 0x4008000000000000
    movq xmm3, rax
    mov rax, 0x3fe0000000000000
    movq xmm4, rax
    vfmadd231sd xmm3, xmm4, [rbp + 8]
    movq [rbx + 160], xmm3
    # 6: strlen(base + 0x60) on r12..r15's slots
    mov rax, 0x652065766974616e   # "native e"
    mov [rbp + 0x60], rax
    mov rax, 0x21656e69676e   # "ngine!"
    mov [rbp + 0x68], rax
    mov qword ptr [rbp + 0x70], 0
    mov qword ptr [rbp + 0x78], 0
    lea rdi, [rbp + 0x60]
    call strlen@PLT
    mov [rbx + 192], rax
    # 7: memchr(base + 0x60, '!', 32) - base
    lea rdi, [rbp + 0x60]
    mov esi, 0x21
    mov edx, 32
    call memchr@PLT
    sub rax, rbp
    mov [rbx + 224], rax
    # 8: strcmp(base + 0x60, "native engine!")
    lea rdi, [rbp + 0x60]
    lea rsi, [rip + expected]
    call strcmp@PLT
    mov [rbx + 256], rax
    # 9: vaddpd zmm5, zmm6, [base+0x100] (AVX-512 only)
    test r15, r15
    jz 1f
    mov rax, 0x3ff0000000000000
    vpbroadcastq zmm6, rax
    mov rax, 0x4000000000000000
    vpbroadcastq ymm7, rax
    vmovdqu [rbp + 0x100], ymm7
    vmovdqu [rbp + 0x120], ymm7
    vaddpd zmm5, zmm6, [rbp + 0x100]
    vmovdqu64 [rbx + 288], zmm5
1:
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    vzeroupper
    ret

    .section .rodata
expected:
    .asciz "native engine!"
    .section .note.GNU-stack,"",@progbits
