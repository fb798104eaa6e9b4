/* A C program written for the original crate: it links map_registers() from the crate's
 * static library and calls it first.  Under regmap run a stub provides it.
 * Prints "rdi 42" and exits 0. */
#include <stdio.h>

void map_registers(void);

int main(void) {
    unsigned long rdi;
    map_registers();
    __asm__ volatile ("movq $40, 0x38\n\taddq $2, 0x38" : "=D" (rdi) :: "cc");
    printf("rdi %lu\n", rdi);
    return rdi != 42;
}
