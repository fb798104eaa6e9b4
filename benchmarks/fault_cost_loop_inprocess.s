# Loops for benchmarks/fault_cost.py: the same loop with the add reading rcx through page 0
# (one fault per iteration) and natively.  long f(long n, long rcx): returns rax.
    .intel_syntax noprefix
    .text
    .globl fault_loop
    .type fault_loop, @function
fault_loop:
    mov rcx, rsi
    xor eax, eax
    test rdi, rdi
    jz 2f
    .p2align 5                      # both loops start on a 32-byte boundary: same fetch layout
1:  add rax, qword ptr [8]          # 48 03 04 25 08 00 00 00: 8 bytes, the floor handler skips 8
    dec rdi
    jnz 1b
2:  ret
    .size fault_loop, .-fault_loop

    .globl native_loop
    .type native_loop, @function
native_loop:
    mov rcx, rsi
    xor eax, eax
    test rdi, rdi
    jz 2f
    .p2align 5
1:  add rax, rcx
    dec rdi
    jnz 1b
2:  ret
    .size native_loop, .-native_loop
    .section .note.GNU-stack,"",@progbits
