# For tests/test_gdb.py: rdi = 7 through page 0 (at `store`), then exit(rdi).
        .text
        .globl  _start, store, done
_start:
        movq    $7, %rsi
store:
        movq    %rsi, 56                # rdi = rsi
done:
        movq    $60, 0                  # rax = SYS_exit
        syscall
        .section .note.GNU-stack, "", @progbits
