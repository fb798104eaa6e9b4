# void native_ops(char *base, unsigned char out[1024], long avx512)
#
# Instructions regmap runs on its native engine, each on a memory operand at base + slot: with
# base = 0 under regmap the operands are the register window (slot 0x8 is rcx, 0x60 r12, 0x120
# xmm1...), with base = a plain buffer the same code runs without regmap.  Every value an
# operand needs is stored to its slot first, through the same base, so the two runs compute the
# same results: result i < 9 is 32 bytes at out + 32 i, result i >= 9 (AVX-512) 64 bytes at
# out + 288 + 64 (i - 9).
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
    # avx512? on the stack: under regmap every general register has a window slot the
    # operations below overwrite (strlen's string lies on r12..r15)
    mov [rsp], rdx
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
    # 9..13: AVX-512 (only when asked).  Register operands are zmm16..31 and k1..k4: under regmap
    # the slots 0x100.. are ymm0..15, so an operation on zmm0..15 would see its own window stores.
    # Each stores a value that differs from what was there, so an operation regmap skipped or got
    # wrong changes the output.
    cmp qword ptr [rsp], 0
    je 1f
    # 9: vaddpd zmm16, zmm17, [base+0x100] (ymm0:ymm1's slots, 64 bytes) = 1.0 + 2.0
    mov rax, 0x3ff0000000000000
    vpbroadcastq zmm17, rax
    mov rax, 0x4000000000000000
    vpbroadcastq zmm18, rax
    vmovdqu64 [rbp + 0x100], zmm18
    vaddpd zmm16, zmm17, [rbp + 0x100]
    vmovdqu64 [rbx + 288], zmm16
    # 10: vfmadd231pd zmm19{k1}, zmm20, qword [base+8]{1to8}: a broadcast from rcx's slot, merge-masked
    vmovdqu64 zmm19, [rip + doubles]
    vmovdqu64 zmm20, [rip + doubles + 64]
    mov rax, 0x3fd0000000000000   # 0.25
    mov [rbp + 8], rax
    mov eax, 0xa5
    kmovw k1, eax
    vfmadd231pd zmm19{k1}, zmm20, qword ptr [rbp + 8]{1to8}
    vmovdqu64 [rbx + 352], zmm19
    # 11: vmovdqu64 [base+0x140]{k2}, zmm21 (ymm2:ymm3's slots): a masked store, read back whole
    vmovdqu64 zmm22, [rip + dwords]
    vmovdqu64 [rbp + 0x140], zmm22
    vpaddd zmm21, zmm22, zmm22
    mov eax, 0x3c
    kmovw k2, eax
    vmovdqu64 [rbp + 0x140]{k2}, zmm21
    vmovdqu64 zmm23, [rbp + 0x140]
    vmovdqu64 [rbx + 416], zmm23
    # 12: vpcompressd [base+0x180]{k3}, zmm21 (ymm4:ymm5's slots): popcnt(k3) dwords packed from
    # the slot's start, the rest left as they were; read back whole
    vmovdqu64 [rbp + 0x180], zmm22
    mov eax, 0x9a53
    kmovw k3, eax
    vpcompressd [rbp + 0x180]{k3}, zmm21
    vmovdqu64 zmm24, [rbp + 0x180]
    vmovdqu64 [rbx + 480], zmm24
    # 13: vpexpandd zmm24{k3}{z}, [base+0x180]: the packed dwords back to k3's lanes, the rest zero
    vpexpandd zmm24{k3}{z}, [rbp + 0x180]
    vmovdqu64 [rbx + 544], zmm24
    # 14: vpcmpgtd k4, zmm22, [base+0x200] (ymm8:ymm9's slots) into a mask register, shown as
    # zmm25 with the lanes k4 does not select zeroed
    vpsubd zmm25, zmm22, [rip + dwords + 64]
    vmovdqu64 [rbp + 0x200], zmm25
    vpcmpgtd k4, zmm22, [rbp + 0x200]
    vmovdqa32 zmm26{k4}{z}, zmm25
    vmovdqu64 [rbx + 608], zmm26
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
    .balign 64
doubles:                          # 16 doubles: zmm19's and zmm20's lanes
    .double 1.5, -2.0, 3.25, 1e300, -0.0, 7.0, 0.1, 1e-310
    .double 2.0, 4.0, -8.0, 1e10, 3.0, 0.5, 0.3, 1e-300
dwords:                           # 16 dwords 1..16, then 16 small signed ones
    .long 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16
    .long 3, -1, 0, 7, -5, 2, 2, 0, 9, -9, 1, 20, -3, 4, 0, 6
    .section .note.GNU-stack,"",@progbits
