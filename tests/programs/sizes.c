/* Window accesses of every size, aligned and not, checked by the program itself.
 * Default layout: rax 0x00, rcx 0x08, rdx 0x10, rbx 0x18, rsp 0x20, rbp 0x28,
 * rsi 0x30, rdi 0x38, r8..r15 0x40..0x78, rip 0x80, rflags 0x88, mxcsr 0x90,
 * ymm i at 0x100 + 32*i (its xmm at the same address).
 * Prints one "name: got X want Y ok|FAIL" line per check; exits with the number of failures. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int failures;

static void check(const char *name, uint64_t got, uint64_t want) {
    int ok = got == want;
    printf("%s: got %#llx want %#llx %s\n", name, (unsigned long long)got,
           (unsigned long long)want, ok ? "ok" : "FAIL");
    failures += !ok;
}

int main(void) {
    uint64_t out, out2;

    /* 1-byte read: mov cl, [1] is ah */
    __asm__ volatile ("movq $0x1234, %%rax\n\tmovb 1, %%cl\n\tmovzbq %%cl, %0"
                      : "=r" (out) :: "rax", "rcx");
    check("read1 ah", out, 0x12);

    /* 2-byte read into ax keeps rax's upper bits */
    __asm__ volatile ("movq $-1, %%rax\n\tmovq $0xabcd1234, %%rcx\n\tmovw 8, %%ax\n\tmovq %%rax, %0"
                      : "=r" (out) :: "rax", "rcx");
    check("read2 cx", out, 0xffffffffffff1234ull);

    /* 4-byte read into eax zero-extends */
    __asm__ volatile ("movq $-1, %%rax\n\tmovabsq $0x1234567887654321, %%rdx\n\tmovl 0x10, %%eax\n\t"
                      "movq %%rax, %0" : "=r" (out) :: "rax", "rdx");
    check("read4 edx", out, 0x87654321);

    /* 8-byte read: add rax, [8] adds rcx */
    __asm__ volatile ("movq $5, %%rax\n\tmovq $7, %%rcx\n\taddq 8, %%rax\n\tmovq %%rax, %0"
                      : "=r" (out) :: "rax", "rcx", "cc");
    check("read8 add rcx", out, 12);

    /* 1-byte write: byte 1 of rdi */
    __asm__ volatile ("xorl %%edi, %%edi\n\tmovb $0x55, 0x39\n\tmovq %%rdi, %0"
                      : "=r" (out) :: "rdi");
    check("write1 rdi byte 1", out, 0x5500);

    /* 2-byte write: the low word of rsi, the rest kept */
    __asm__ volatile ("movq $-1, %%rsi\n\tmovw $0x1234, 0x30\n\tmovq %%rsi, %0"
                      : "=r" (out) :: "rsi");
    check("write2 si", out, 0xffffffffffff1234ull);

    /* 4-byte write: memory semantics, the upper half of rbx is kept */
    __asm__ volatile ("movq $-1, %%rbx\n\tmovl $0x12345678, 0x18\n\tmovq %%rbx, %0"
                      : "=r" (out) :: "rbx");
    check("write4 ebx", out, 0xffffffff12345678ull);

    /* 8-byte write from a register: r9 = r8 */
    __asm__ volatile ("movabsq $0x1122334455667788, %%r8\n\txorl %%r9d, %%r9d\n\tmovq %%r8, 0x48\n\t"
                      "movq %%r9, %0" : "=r" (out) :: "r8", "r9");
    check("write8 r9", out, 0x1122334455667788ull);

    /* unaligned 8-byte read at 0x4: rax[63:32] then rcx[31:0], little-endian */
    __asm__ volatile ("movabsq $0x1111111122222222, %%rax\n\tmovabsq $0x3333333344444444, %%rcx\n\t"
                      "movq 4, %%rdx\n\tmovq %%rdx, %0" : "=r" (out) :: "rax", "rcx", "rdx");
    check("read8 at 0x4", out, 0x4444444411111111ull);

    /* unaligned 8-byte write at 0xc: rcx[63:32] and rdx[31:0] */
    __asm__ volatile ("xorl %%ecx, %%ecx\n\txorl %%edx, %%edx\n\tmovabsq $0xaaaaaaaabbbbbbbb, %%rbx\n\t"
                      "movq %%rbx, 0xc\n\tmovq %%rcx, %0\n\tmovq %%rdx, %1"
                      : "=r" (out), "=r" (out2) :: "rbx", "rcx", "rdx");
    check("write8 at 0xc rcx", out, 0xbbbbbbbb00000000ull);
    check("write8 at 0xc rdx", out2, 0xaaaaaaaa);

    /* 16-byte SSE read: movdqu xmm0, [0] is rcx:rax */
    uint64_t vector[2] = {0, 0};
    __asm__ volatile ("movabsq $0x0123456789abcdef, %%rax\n\tmovabsq $0xfedcba9876543210, %%rcx\n\t"
                      "movdqu 0, %%xmm0\n\tmovdqu %%xmm0, (%0)"
                      :: "r" (vector) : "rax", "rcx", "xmm0", "memory");
    check("read16 xmm0 low", vector[0], 0x0123456789abcdefull);
    check("read16 xmm0 high", vector[1], 0xfedcba9876543210ull);

    /* 16-byte SSE write: movdqu [0x10], xmm1 sets rdx (low) and rbx (high) */
    uint64_t source[2] = {0x5555666677778888ull, 0x9999aaaabbbbccccull};
    __asm__ volatile ("movdqu (%2), %%xmm1\n\tmovdqu %%xmm1, 0x10\n\tmovq %%rdx, %0\n\tmovq %%rbx, %1"
                      : "=r" (out), "=r" (out2) : "r" (source) : "rdx", "rbx", "xmm1", "memory");
    check("write16 rdx", out, 0x5555666677778888ull);
    check("write16 rbx", out2, 0x9999aaaabbbbccccull);

    /* rip reads as the address of the next instruction */
    __asm__ volatile ("movq 0x80, %%rax\n1:\tleaq 1b(%%rip), %%rcx\n\tsubq %%rcx, %%rax\n\tmovq %%rax, %0"
                      : "=r" (out) :: "rax", "rcx");
    check("rip is next", out, 0);

    /* rflags: CF set by stc is seen through the window */
    __asm__ volatile ("stc\n\tmovq 0x88, %%rax\n\tandq $1, %%rax\n\tmovq %%rax, %0"
                      : "=r" (out) :: "rax", "cc");
    check("rflags CF", out, 1);

    /* mxcsr: read the default, write FTZ|DAZ through the window, read back with stmxcsr */
    uint32_t saved, now;
    __asm__ volatile ("stmxcsr %0" : "=m" (saved));
    __asm__ volatile ("movl 0x90, %%eax\n\tmovq %%rax, %0" : "=r" (out) :: "rax");
    check("mxcsr read", out, saved);
    __asm__ volatile ("movl $0x9fc0, 0x90\n\tstmxcsr %0" : "=m" (now));
    check("mxcsr write", now, 0x9fc0);
    __asm__ volatile ("ldmxcsr %0" :: "m" (saved));

    /* vector registers through the window: xmm3 at 0x160 */
    uint64_t lanes[2] = {0x1010101020202020ull, 0x3030303040404040ull};
    __asm__ volatile ("movdqu (%1), %%xmm3\n\tmovq 0x168, %%rax\n\tmovq %%rax, %0"
                      : "=r" (out) : "r" (lanes) : "rax", "xmm3", "memory");
    check("xmm3 high qword", out, 0x3030303040404040ull);
    __asm__ volatile ("movq $0x77, 0x160\n\tmovq %%xmm3, %0" : "=r" (out) :: "xmm3");
    check("xmm3 low qword written", out, 0x77);

    printf("%d failures\n", failures);
    return failures;
}
