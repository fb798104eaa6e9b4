/* The kernel's floor for benchmarks/fault_cost.py: a bare C SIGSEGV handler doing the same
 * work as regmap for `add rax, [8]` (rax += rcx; rip += 8 in the ucontext).
 * Usage: fault_cost_floor N REPEATS -- prints one line per repeat: nanoseconds of the thread's
 * CPU time per fault (user + system: the kernel's signal delivery is system time). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <ucontext.h>

long fault_loop(long n, long rcx);

static void on_segv(int signo, siginfo_t *info, void *context)
{
    ucontext_t *uc = context;
    (void)signo;
    (void)info;
    uc->uc_mcontext.gregs[REG_RAX] += uc->uc_mcontext.gregs[REG_RCX];
    uc->uc_mcontext.gregs[REG_RIP] += 8;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 20000;
    int repeats = argc > 2 ? atoi(argv[2]) : 1;
    struct sigaction sa = {0};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    if (sigaction(SIGSEGV, &sa, NULL))
        return 2;
    for (int i = 0; i < repeats; i++) {
        double t = now();
        long r = fault_loop(n, 3);
        t = now() - t;
        if (r != 3 * n)
            return 1;
        printf("%.1f\n", t / n * 1e9);
    }
    return 0;
}
