/* Exceptions of instructions the native engine runs, on operands at base + slot (base 0: the
 * register window under regmap; base a buffer: the same code without it).  fault_case() catches
 * the signal and reports signo, si_code and si_addr (as "at the instruction" when it is the
 * faulting instruction's own address).  main() prints one line per case.  The operands live in
 * ymm15's slot (0x2e0), which no compiler-chosen base register aliases. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sigjmp_buf env;
static volatile long got[3];

static void on_fault(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    got[0] = sig;
    got[1] = si->si_code;
    got[2] = (long)si->si_addr;
    siglongjmp(env, 1);
}

extern char at_gp[], at_xm[], at_mf[], at_ud[], at_ac[];

/* Each case stores what its operand needs through base, then runs the faulting instruction at its
 * label. */
static void run_case(char *base, int which) {
    switch (which) {
    case 0:     /* #GP: legacy SSE on a misaligned operand */
        __asm__ volatile(".intel_syntax noprefix\n"
                         "at_gp: addps xmm0, [%0 + 0x2e8]\n"
                         ".att_syntax" :: "r"(base) : "xmm0", "xmm15");
        break;
    case 1:     /* #XM: division by zero with the zero-divide exception unmasked in MXCSR */
        __asm__ volatile(".intel_syntax noprefix\n"
                         "mov qword ptr [%0 + 0x2e0], 0\n"
                         "mov eax, 0x1d80\n"
                         "mov [rsp - 8], eax\n"
                         "ldmxcsr [rsp - 8]\n"
                         "mov rax, 0x3ff0000000000000\n"
                         "movq xmm0, rax\n"
                         "at_xm: divsd xmm0, [%0 + 0x2e0]\n"
                         ".att_syntax" :: "r"(base) : "rax", "xmm0", "xmm15", "memory");
        break;
    case 2:     /* #MF: an unmasked x87 zero-divide left pending, then an x87 load */
        __asm__ volatile(".intel_syntax noprefix\n"
                         "mov rax, 0x3ff0000000000000\n"
                         "mov [%0 + 0x2e0], rax\n"
                         "mov word ptr [rsp - 8], 0x37b\n"
                         "fldcw [rsp - 8]\n"
                         "fld1\n"
                         "fldz\n"
                         "fdivp st(1), st\n"
                         "at_mf: fld qword ptr [%0 + 0x2e0]\n"
                         ".att_syntax" :: "r"(base) : "rax", "xmm15", "memory", "st");
        break;
    case 3:     /* #UD */
        __asm__ volatile(".intel_syntax noprefix\n"
                         "at_ud: ud1 eax, [%0 + 0x2e0]\n"
                         ".att_syntax" :: "r"(base) : "rax", "xmm15");
        break;
    case 5:     /* #GP found in the data read (an MXCSR image with reserved bits set): the CPU
                 * reads the operand before it checks, so on the window a page fault comes first */
        __asm__ volatile(".intel_syntax noprefix\n"
                         "mov dword ptr [%0 + 0x118], 0xffffffff\n"
                         "fxrstor [%0 + 0x100]\n"
                         ".att_syntax" :: "r"(base) : "memory");
        break;
    case 4:     /* #AC: alignment checking on, an x87 load from a misaligned operand */
        __asm__ volatile(".intel_syntax noprefix\n"
                         "mov rax, 0x3ff0000000000000\n"
                         "mov [%0 + 0x2e0], rax\n"
                         "pushfq\n"
                         "or dword ptr [rsp], 0x40000\n"
                         "popfq\n"
                         "at_ac: fld qword ptr [%0 + 0x2e1]\n"
                         "fstp st(0)\n"
                         ".att_syntax" :: "r"(base) : "rax", "xmm15", "memory", "st");
        break;
    }
}

static char *const labels[] = {at_gp, at_xm, at_mf, at_ud, at_ac};

/* the signal each case raises: only its handler is installed (under map_registers() a SIGSEGV
 * handler of the program's own would replace regmap's) */
static const int expected_signal[] = {SIGSEGV, SIGFPE, SIGFPE, SIGILL, SIGBUS};

/* out: signo, si_code, 1 if si_addr is the instruction's address (else si_addr) */
void fault_case(char *base, int which, long *out) {
    struct sigaction action, old;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(expected_signal[which], &action, &old);
    got[0] = got[1] = got[2] = 0;
    if (sigsetjmp(env, 1) == 0)
        run_case(base, which);
    /* clear what the cases leave behind: AC, the x87 state, MXCSR's masks */
    __asm__ volatile("pushfq; andl $~0x40000, (%%rsp); popfq; fninit" ::: "memory");
    unsigned int mxcsr = 0x1f80;
    __asm__ volatile("ldmxcsr %0" :: "m"(mxcsr));
    sigaction(expected_signal[which], &old, NULL);
    out[0] = got[0];
    out[1] = got[1];
    out[2] = got[2] == (long)labels[which] ? 1 : got[2];
}

/* the case with no handler of the program's own: the fault takes its default action */
void raw_case(char *base, int which) {
    run_case(base, which);
}

int main(int argc, char **argv) {
    static char buffer[4096] __attribute__((aligned(64)));
    char *base = argc > 1 && strcmp(argv[1], "plain") == 0 ? buffer : (char *)0;
    for (int which = 0; which < 5; which++) {
        long out[3];
        fault_case(base, which, out);
        printf("%d %ld %ld %ld\n", which, out[0], out[1], out[2]);
    }
    return 0;
}
