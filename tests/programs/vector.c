/* Vector registers through the window, with their upper halves (XSAVE components 2, 6, 7).
 * Build with -mavx512f.  Prints "skip: ..." and exits 0 when the CPU lacks AVX-512F.
 * Default layout: ymm i at 0x100 + 32*i, its xmm at the same address. */
#include <stdint.h>
#include <stdio.h>

static int failures;

static void check(const char *name, uint64_t got, uint64_t want) {
    int ok = got == want;
    printf("%s: got %#llx want %#llx %s\n", name, (unsigned long long)got,
           (unsigned long long)want, ok ? "ok" : "FAIL");
    failures += !ok;
}

int main(void) {
    if (!__builtin_cpu_supports("avx512f")) {
        printf("skip: no AVX-512F\n");
        return 0;
    }
    uint64_t zmm[8], result[8], ymm[4];
    for (int i = 0; i < 8; i++)
        zmm[i] = 0x1111111111111111ull * (i + 1);

    /* zmm3 full; a qword written through the window changes only bits 63:0 */
    __asm__ volatile ("vmovdqu64 (%1), %%zmm3\n\t"
                      "movq $0x77, 0x160\n\t"
                      "vmovdqu64 %%zmm3, (%0)"
                      :: "r" (result), "r" (zmm) : "xmm3", "memory");
    check("zmm3 qword 0 written", result[0], 0x77);
    for (int i = 1; i < 8; i++) {
        char name[32];
        snprintf(name, sizeof name, "zmm3 qword %d kept", i);
        check(name, result[i], zmm[i]);
    }

    /* a VEX read of ymm3 through the window into ymm4 (each asm statement sets the vector
     * registers it relies on: calls in between may clear their upper halves) */
    __asm__ volatile ("vmovdqu64 (%1), %%zmm3\n\t"
                      "vmovdqu 0x160, %%ymm4\n\tvmovdqu %%ymm4, (%0)"
                      :: "r" (ymm), "r" (zmm) : "xmm3", "xmm4", "memory");
    check("ymm4 = ymm3 qword 0", ymm[0], zmm[0]);
    check("ymm4 = ymm3 qword 3", ymm[3], zmm[3]);

    /* a VEX write of ymm5 into ymm1 through the window (ymm1 at 0x120) */
    __asm__ volatile ("vmovdqu64 (%1), %%zmm5\n\t"
                      "vpxor %%xmm1, %%xmm1, %%xmm1\n\t"
                      "vmovdqu %%ymm5, 0x120\n\t"
                      "vmovdqu %%ymm1, (%0)"
                      :: "r" (ymm), "r" (zmm) : "xmm1", "xmm5", "memory");
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "ymm1 qword %d", i);
        check(name, ymm[i], zmm[i]);
    }

    /* zmm16..31 are untouched by all this: a canary in zmm17 survives a window access */
    __asm__ volatile ("vmovdqu64 (%1), %%zmm17\n\t"
                      "movq $1, 0x180\n\t"
                      "vmovdqu64 %%zmm17, (%0)"
                      :: "r" (result), "r" (zmm) : "xmm17", "xmm4", "memory");
    check("zmm17 qword 7 kept", result[7], zmm[7]);

    printf("%d failures\n", failures);
    return failures;
}
