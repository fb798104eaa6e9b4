# double window_sum(long n, double x): n times addsd xmm0, [8] with rcx = x (set through the
# window, re-set every iteration so another thread's rcx could never leak in unnoticed)
    .intel_syntax noprefix
    .text
    .globl window_sum
    .type window_sum, @function
window_sum:
    movq rax, xmm0
    pxor xmm0, xmm0
    test rdi, rdi
    jz 2f
1:  mov [8], rax
    addsd xmm0, qword ptr [8]
    dec rdi
    jnz 1b
2:  ret
    .size window_sum, .-window_sum
    .section .note.GNU-stack,"",@progbits
