# Loops for benchmarks/form_cost.py: each iteration runs one form that faults into the window
# (two for push/pop).  long loop_X(long n, long arg); every loop starts 32-byte aligned.
    .intel_syntax noprefix
    .text

    .macro LOOP name
    .globl \name
    .type \name, @function
    .p2align 5
\name:
    .endm

LOOP loop_add_const                 # add rax, [8]
    mov rcx, rsi
    xor eax, eax
1:  add rax, qword ptr [8]
    dec rdi
    jnz 1b
    ret

LOOP loop_add_reg                   # add rax, [rdi] with rdi = 8; the counter in rdx
    mov rdx, rdi
    mov rcx, rsi
    mov edi, 8
    xor eax, eax
1:  add rax, qword ptr [rdi]
    dec rdx
    jnz 1b
    ret

LOOP loop_xadd                      # xadd [8], rax
    mov rcx, rsi
    mov eax, 1
1:  xadd qword ptr [8], rax
    dec rdi
    jnz 1b
    mov rax, rcx
    ret

LOOP loop_movdqu                    # movdqu xmm0, [0x100]
1:  movdqu xmm0, xmmword ptr [0x100]
    dec rdi
    jnz 1b
    mov rax, rsi
    ret

LOOP loop_paddd                     # paddd xmm1, [0]
    mov rcx, rsi
    xor eax, eax
1:  paddd xmm1, xmmword ptr [0]
    dec rdi
    jnz 1b
    movq rax, xmm1
    ret

LOOP loop_push_pop                  # push qword [8]; pop qword [0x10]: two faults
    mov rcx, rsi
1:  push qword ptr [8]
    pop qword ptr [0x10]
    dec rdi
    jnz 1b
    mov rax, rdx
    ret

LOOP loop_rep_movsb                 # rep movsb: 64 bytes from [0x40] (r8..r15) to arg
    mov rdx, rdi
    mov rax, rsi
    push r12
    mov r12, 0x0123456789abcdef
1:  mov esi, 0x40
    mov rdi, rax
    mov ecx, 64
    rep movsb
    dec rdx
    jnz 1b
    pop r12
    ret
    .section .note.GNU-stack,"",@progbits
