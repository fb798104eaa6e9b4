/* The native engine end to end: native_ops (native_ops.s) on the register window under regmap,
 * or on a plain buffer without it ("plain").  Prints every result as hex, one per line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void native_ops(char *base, unsigned char *out, long avx512);

int main(int argc, char **argv) {
    static char buffer[4096] __attribute__((aligned(64)));
    unsigned char out[1024] __attribute__((aligned(64)));
    long avx512 = argc > 2 && strcmp(argv[2], "avx512") == 0;
    memset(out, 0, sizeof out);
    native_ops(argc > 1 && strcmp(argv[1], "plain") == 0 ? buffer : (char *)0, out, avx512);
    /* results 0..8: 32 bytes at 32 i; 9..14 (AVX-512): 64 bytes at 288 + 64 (i - 9) */
    for (int i = 0; i < 15; i++) {
        for (int j = 0; j < (i < 9 ? 32 : 64); j++)
            printf("%02x", out[(i < 9 ? 32 * i : 288 + 64 * (i - 9)) + j]);
        printf("\n");
    }
    return 0;
}
