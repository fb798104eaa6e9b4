# Loops for benchmarks/native_cost.py, one page-0 fault per iteration.  long f(long n, long rcx).
#   addsd_loop: addsd xmm0, [8]     -- no Python semantics: the native engine runs it
#   paddq_loop: paddq xmm0, [0x100] -- Python semantics (generic path), or the engine when forced
    .intel_syntax noprefix
    .text
    .globl addsd_loop
    .type addsd_loop, @function
addsd_loop:
    mov rcx, rsi
    pxor xmm0, xmm0
    test rdi, rdi
    jz 2f
1:  addsd xmm0, qword ptr [8]
    dec rdi
    jnz 1b
2:  movq rax, xmm0
    ret
    .size addsd_loop, .-addsd_loop

    .globl paddq_loop
    .type paddq_loop, @function
paddq_loop:
    movq xmm0, rsi
    pxor xmm1, xmm1
    test rdi, rdi
    jz 2f
1:  paddq xmm1, xmmword ptr [0x100]
    dec rdi
    jnz 1b
2:  movq rax, xmm1
    ret
    .size paddq_loop, .-paddq_loop
    .section .note.GNU-stack,"",@progbits
