# hello_world for regmap, in-process: the native code below steers control flow only by
# writing mapped registers.  Each "call" is:
#   - arguments stored into the rdi/rsi slots ([0x38], [0x30]),
#   - a return address pushed by writing the rsp slot ([0x20]),
#   - a jump made by writing the rip slot ([0x80]).
# There is no call instruction (and no other jump) in it.
#
# void hello_world(void *puts, void *fflush, void *write)
    .intel_syntax noprefix
    .section .rodata
greeting:
    .asciz "Hello, world!"
farewell:
    .ascii "...and every call above was a store to page 0.\n"
    .set farewell_length, . - farewell

    .text
    .globl hello_world
    .type hello_world, @function
hello_world:
    push rbx
    push r12
    push r13                              # rsp is 16-byte aligned again: ready to "call"
    mov rbx, rdi                          # puts
    mov r12, rsi                          # fflush
    mov r13, rdx                          # write

    # puts(greeting)
    lea rax, [rip + greeting]
    mov qword ptr [0x38], rax             # rdi = greeting
    lea rax, [rip + 1f]
    lea rcx, [rsp - 8]
    mov qword ptr [rcx], rax              # the return address, just below rsp ...
    mov qword ptr [0x20], rcx             # ... pushed: rsp -= 8
    mov qword ptr [0x80], rbx             # rip = puts
1:
    # fflush(NULL): puts's line leaves stdio's buffer before write's bytes go out
    mov qword ptr [0x38], 0               # rdi = NULL
    lea rax, [rip + 2f]
    lea rcx, [rsp - 8]
    mov qword ptr [rcx], rax
    mov qword ptr [0x20], rcx
    mov qword ptr [0x80], r12             # rip = fflush
2:
    # write(1, farewell, farewell_length)
    mov qword ptr [0x38], 1               # rdi = 1
    lea rax, [rip + farewell]
    mov qword ptr [0x30], rax             # rsi = farewell
    mov edx, farewell_length
    lea rax, [rip + 3f]
    lea rcx, [rsp - 8]
    mov qword ptr [rcx], rax
    mov qword ptr [0x20], rcx
    mov qword ptr [0x80], r13             # rip = write
3:
    pop r13
    pop r12
    pop rbx
    ret
    .size hello_world, .-hello_world

    .section .note.GNU-stack,"",@progbits
