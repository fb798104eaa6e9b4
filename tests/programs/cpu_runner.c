/* The oracle's independent runner (tests/cpu_runner.py): one instruction on the host CPU, with
 * none of regmap's native engine in the way.  The oracle's reference used to run through the
 * engine's own stub, so a bug in the stub's loading or saving of the machine could not show.
 *
 * Started by the tests with a memfd (its number the last argument: the control block, then the
 * shadow page, then the scratch stack), which it maps at the addresses the oracle's states use (the engine's, in the
 * test process: the register values point there).  For each byte read on stdin: copy the block
 * in, load GPRs, rflags, MXCSR, x87 (FXRSTOR), vectors and opmasks, jump to the instruction on
 * its own code page, which jumps back; save it all, write one byte on stdout.  A fault of the
 * instruction reaches the handler, which records it and resumes at the exit path.
 *
 * Built with -DWIDTH=512|256|128 (the host's vector width) and -DKMOV=kmovq|kmovw. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef WIDTH
#define WIDTH 512
#endif
#ifndef KMOV
#define KMOV kmovq
#endif
#define STR_(x) #x
#define STR(x) STR_(x)

/* the control block, as tests/cpu_runner.py packs it */
struct block {
    uint64_t gpr[16];          /* 0x000 rax rcx rdx rbx rsp rbp rsi rdi r8..r15 */
    uint64_t rflags;           /* 0x080 */
    uint32_t mxcsr;            /* 0x088 */
    uint32_t code_len;         /* 0x08c */
    int32_t fault_signo, fault_code;    /* 0x090 */
    uint64_t fault_addr, fault_rip;     /* 0x098, 0x0a0 */
    uint8_t pad0[0x0c0 - 0x0a8];
    uint8_t code[64];          /* 0x0c0 */
    uint64_t k[8];             /* 0x100 */
    uint8_t pad1[0x200 - 0x140];
    uint8_t fx[512];           /* 0x200, FXSAVE image */
    uint8_t zmm[32][64];       /* 0x400 */
};
_Static_assert(sizeof(struct block) == 0xc00, "block layout");

struct block g __attribute__((aligned(64)));       /* what the assembly below loads and saves */
uint64_t saved_rsp, insn_address;
const uint32_t abi_mxcsr = 0x1f80;         /* what run_exit puts back */
extern char run_after[], run_fault[];
int run_insn(void);

#define ZMM_OFF 0x400
#define K_OFF 0x100

#define LOW8(m) m(0) m(1) m(2) m(3) m(4) m(5) m(6) m(7)
#define LOW16(m) LOW8(m) m(8) m(9) m(10) m(11) m(12) m(13) m(14) m(15)
#define ALL32(m) LOW16(m) m(16) m(17) m(18) m(19) m(20) m(21) m(22) m(23) \
    m(24) m(25) m(26) m(27) m(28) m(29) m(30) m(31)
#if WIDTH == 512
#define LOADV(i) "vmovdqu64 zmm" #i ", [rip + g + " STR(ZMM_OFF) " + 64 * " #i "]\n"
#define SAVEV(i) "vmovdqu64 [rip + g + " STR(ZMM_OFF) " + 64 * " #i "], zmm" #i "\n"
#define LOADK(i) STR(KMOV) " k" #i ", [rip + g + " STR(K_OFF) " + 8 * " #i "]\n"
#define SAVEK(i) STR(KMOV) " [rip + g + " STR(K_OFF) " + 8 * " #i "], k" #i "\n"
#define VECTORS(m) ALL32(m)
#define KS(m) LOW8(m)
#elif WIDTH == 256
#define LOADV(i) "vmovdqu ymm" #i ", [rip + g + " STR(ZMM_OFF) " + 64 * " #i "]\n"
#define SAVEV(i) "vmovdqu [rip + g + " STR(ZMM_OFF) " + 64 * " #i "], ymm" #i "\n"
#define VECTORS(m) LOW16(m)
#define KS(m)
#else                           /* xmm0..15 go in and out through the FXSAVE image */
#define VECTORS(m)
#define KS(m)
#endif
#define REG(name, i) "mov " #name ", [rip + g + 8 * " #i "]\n"
#define PUT(name, i) "mov [rip + g + 8 * " #i "], " #name "\n"
#define GPRS(m) m(rax, 0) m(rcx, 1) m(rdx, 2) m(rbx, 3) m(rbp, 5) m(rsi, 6) m(rdi, 7) m(r8, 8) \
    m(r9, 9) m(r10, 10) m(r11, 11) m(r12, 12) m(r13, 13) m(r14, 14) m(r15, 15)

__asm__(
    ".intel_syntax noprefix\n"
    ".text\n"
    ".globl run_insn\n"
    "run_insn:\n"
    "push rbx\n push rbp\n push r12\n push r13\n push r14\n push r15\n"
    "mov [rip + saved_rsp], rsp\n"
    "fxrstor64 [rip + g + 0x200]\n"
    VECTORS(LOADV) KS(LOADK)
    "ldmxcsr [rip + g + 0x88]\n"
    "push qword ptr [rip + g + 0x80]\n"
    "popfq\n"
    GPRS(REG)
    "mov rsp, [rip + g + 8 * 4]\n"
    "jmp qword ptr [rip + insn_address]\n"
    ".globl run_after\n"
    "run_after:\n"
    GPRS(PUT)
    "mov [rip + g + 8 * 4], rsp\n"
    "mov rsp, [rip + saved_rsp]\n"
    "pushfq\n"
    "pop qword ptr [rip + g + 0x80]\n"
    VECTORS(SAVEV) KS(SAVEK)
    "fxsave64 [rip + g + 0x200]\n"
    "stmxcsr [rip + g + 0x88]\n"
    "xor eax, eax\n"
    "run_exit:\n"                        /* the ABI's state back: DF and AC clear, x87 and MXCSR */
    "push 0x202\n popfq\n"
    "fninit\n"
    "ldmxcsr [rip + abi_mxcsr]\n"
#if WIDTH >= 256
    "vzeroupper\n"
#endif
    "pop r15\n pop r14\n pop r13\n pop r12\n pop rbp\n pop rbx\n"
    "ret\n"
    ".globl run_fault\n"
    "run_fault:\n"                       /* the handler resumes here, on the C stack */
    "mov eax, 1\n"
    "jmp run_exit\n"
    ".att_syntax\n");

static volatile int running;

static void on_fault(int signo, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    if (!running)                       /* the runner's own bug: die of it */
        _exit(100 + signo);
    g.fault_signo = signo;
    g.fault_code = info->si_code;
    g.fault_addr = (uint64_t)info->si_addr;
    g.fault_rip = uc->uc_mcontext.gregs[REG_RIP];
    uc->uc_mcontext.gregs[REG_RIP] = (greg_t)run_fault;
    uc->uc_mcontext.gregs[REG_RSP] = (greg_t)saved_rsp;
    uc->uc_mcontext.gregs[REG_EFL] = 0x202;
}

static void *map_at(uint64_t address, size_t size, int prot, int flags, int fd, off_t offset) {
    void *got = mmap((void *)address, size, prot, flags | MAP_FIXED_NOREPLACE, fd, offset);
    if (got != (void *)address) {
        fprintf(stderr, "cpu_runner: cannot map %#lx (+%#zx)\n", (unsigned long)address, size);
        exit(2);
    }
    return got;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: cpu_runner SHADOW STACK STACK_SIZE CODE FD\n");
        return 2;
    }
    uint64_t shadow = strtoull(argv[1], 0, 0), stack = strtoull(argv[2], 0, 0);
    uint64_t stack_size = strtoull(argv[3], 0, 0), code = strtoull(argv[4], 0, 0);
    int fd = atoi(argv[5]);
    struct block *block = mmap(0, sizeof g, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (block == MAP_FAILED)
        return 2;
    map_at(shadow, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0x1000);
    map_at(stack, stack_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0x2000);
    uint64_t page = code & ~0xfffUL;
    uint8_t *slot = map_at(page, 0x2000, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    slot += code - page;
    insn_address = code;

    /* the instruction may leave rsp anywhere: the handler runs on its own stack */
    static char altstack[65536];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
    sigaltstack(&ss, 0);
    struct sigaction action = {.sa_sigaction = on_fault, .sa_flags = SA_SIGINFO | SA_ONSTACK};
    sigfillset(&action.sa_mask);
    int signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGALRM};
    for (unsigned i = 0; i < sizeof signals / sizeof *signals; i++)
        sigaction(signals[i], &action, 0);

    char request;
    while (read(0, &request, 1) == 1) {
        memcpy(&g, block, sizeof g);
        g.fault_signo = g.fault_code = 0;
        g.fault_addr = g.fault_rip = 0;
        /* the instruction, then jmp [rip+0] back to run_after */
        memcpy(slot, g.code, g.code_len);
        static const uint8_t jump[6] = {0xff, 0x25, 0, 0, 0, 0};
        memcpy(slot + g.code_len, jump, 6);
        uint64_t back = (uint64_t)run_after;
        memcpy(slot + g.code_len + 6, &back, 8);
        running = 1;
        alarm(2);                      /* a branch gone astray ends as SIGALRM */
        run_insn();
        alarm(0);
        running = 0;
        memcpy(block, &g, sizeof g);
        if (write(1, "x", 1) != 1)
            return 1;
    }
    return 0;
}
