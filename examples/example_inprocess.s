# The original regmap crate's example.s flow, as a function called from Python after
# regmap.map_registers(): every argument of write(2) goes into its register through a
# store to page 0, then `syscall`.  Returns what write returned (in rax).
    .intel_syntax noprefix
    .section .rodata
message:
    .ascii "memory-mapped registers work!\n"
    .set message_length, . - message

    .text
    .globl regmap_example
    .type regmap_example, @function
regmap_example:
    mov qword ptr [0x38], 1                 # rdi = 1: standard output
    lea rcx, [rip + message]
    mov qword ptr [0x30], rcx               # rsi = the message
    mov qword ptr [0x10], message_length    # rdx = its length
    mov qword ptr [0x00], 1                 # rax = 1: SYS_write
    syscall
    ret
    .size regmap_example, .-regmap_example

    .section .note.GNU-stack,"",@progbits
