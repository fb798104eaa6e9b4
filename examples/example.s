# examples/example.s -- "memory-mapped registers work!", written for regmap.
#
# A program in the style of the original crate's example: it asks for its
# registers to be memory-mapped, then makes its system calls with every
# register set through page 0 (default layout: rax 0x00, rcx 0x08, rdx 0x10,
# rbx 0x18, rsp 0x20, rbp 0x28, rsi 0x30, rdi 0x38).
#
#     regmap run examples/example.s
#
# regmap run links a map_registers that just returns (the tracer has mapped
# the registers already); without regmap the first page-0 store faults.

        .set    LEN, 30                 # strlen("memory-mapped registers work!\n")

        .text
        .globl  _start
_start:
        call    map_registers

        # the message, 30 bytes in 32 on the stack, lowest address first
        subq    $32, %rsp
        movabsq $0x6d2d79726f6d656d, %rax       # "memory-m"
        movq    %rax, (%rsp)
        movabsq $0x6572206465707061, %rax       # "apped re"
        movq    %rax, 8(%rsp)
        movabsq $0x2073726574736967, %rax       # "gisters "
        movq    %rax, 16(%rsp)
        movabsq $0x00000a216b726f77, %rax       # "work!\n"
        movq    %rax, 24(%rsp)

        # write(1, rsp, LEN)
        movq    $1, 56                  # rdi = 1, standard output
        movq    %rsp, 48                # rsi = the message
        movq    $LEN, 16                # rdx = its length
        movq    $1, 0                   # rax = SYS_write
        syscall

        # exit(0)
        movq    $0, 56                  # rdi = 0
        movq    $60, 0                  # rax = SYS_exit
        syscall

        .section .note.GNU-stack, "", @progbits
