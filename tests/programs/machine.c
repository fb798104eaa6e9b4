/* Runs under the tracer with a stand-in emulator (tests/test_trace_machine.py) to check the
 * traced Machine itself.  The stand-in only knows "mov rax, [0]" (48 8b 04 25 00 00 00 00)
 * and reads r15 to know what to do:
 *   1 vector: reads zmm16, k1 and mxcsr, writes zmm17 (zmm16's qwords reversed), k2 = ~k1,
 *             rax = k1
 *   2 memory: rsi = three pages (read-write, read-only, none); tries reads, writes and fetches
 *             around them, rax = what it found
 *   3 raise RuntimeError, 4 raise UnsupportedInstruction, 5 raise DivideError (SIGFPE ignored)
 * argv[1] is the number. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

__attribute__((target("avx512f")))
static int vector(void) {
    if (!__builtin_cpu_supports("avx512f")) {
        printf("skip: no AVX-512F\n");
        return 0;
    }
    uint64_t in[8], out[8];
    unsigned long rax, k2;
    for (int i = 0; i < 8; i++)
        in[i] = 0x0101010101010101ull * (i + 1);
    __asm__ volatile ("vmovdqu64 (%3), %%zmm16\n\t"
                      "movl $0x5a5a, %%ecx\n\tkmovw %%ecx, %%k1\n\t"
                      "movq $1, %%r15\n\t"
                      "movq 0, %%rax\n\t"
                      "vmovdqu64 %%zmm17, (%2)\n\t"
                      "kmovw %%k2, %%ecx\n\tmovq %%rcx, %1"
                      : "=a" (rax), "=r" (k2) : "r" (out), "r" (in)
                      : "rcx", "r15", "xmm16", "xmm17", "k1", "k2", "memory");
    printf("rax %#lx k2 %#lx\n", rax, k2);
    for (int i = 0; i < 8; i++)
        printf("zmm17[%d] %#llx\n", i, (unsigned long long)out[i]);
    return 0;
}

static int memory(void) {
    char *pages = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memcpy(pages + 4096 - 4, "abcd", 4);
    memcpy(pages + 2 * 4096 - 3, "xyz", 3);
    mprotect(pages + 4096, 4096, PROT_READ);
    mprotect(pages + 2 * 4096, 4096, PROT_NONE);
    unsigned long rax;
    __asm__ volatile ("movq $2, %%r15\n\tmovq 0, %%rax" : "=a" (rax) : "S" (pages) : "r15", "memory");
    printf("rax %#lx\n", rax);
    printf("written %.5s\n", pages + 16);
    printf("kept %.4s\n", pages + 4096 - 4);
    return 0;
}

int main(int argc, char **argv) {
    int mode = argc > 1 ? atoi(argv[1]) : 0;
    setvbuf(stdout, NULL, _IONBF, 0);
    if (mode == 1)
        return vector();
    if (mode == 2)
        return memory();
    if (mode == 5)
        signal(SIGFPE, SIG_IGN);
    unsigned long rax, r15 = mode;
    __asm__ volatile ("movq %1, %%r15\n\tmovq 0, %%rax" : "=a" (rax) : "r" (r15) : "r15");
    printf("survived %lu\n", rax);
    return 0;
}
