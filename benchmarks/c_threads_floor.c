/* The C floor for `addsd xmm0, [8]` in benchmarks/c_threads.py (form_cost_floor.c has the one
 * for `add rax, [8]`): a bare SIGSEGV handler doing the form's work on the ucontext, xmm0's low
 * double += rcx's bits as a double, rip past the 9-byte instruction.  SA_ONSTACK, as regmap's. */
#define _GNU_SOURCE
#include <signal.h>
#include <string.h>
#include <ucontext.h>

static void on_addsd(int s, siginfo_t *i, void *c)
{
    ucontext_t *uc = c;
    double x, y;
    long rcx = uc->uc_mcontext.gregs[REG_RCX];
    (void)s;
    (void)i;
    memcpy(&x, &uc->uc_mcontext.fpregs->_xmm[0], 8);
    memcpy(&y, &rcx, 8);
    x += y;
    memcpy(&uc->uc_mcontext.fpregs->_xmm[0], &x, 8);
    uc->uc_mcontext.gregs[REG_RIP] += 9;
}

static struct sigaction saved;

int addsd_floor_install(void)
{
    struct sigaction sa = {0};
    sa.sa_sigaction = on_addsd;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    return sigaction(SIGSEGV, &sa, &saved);
}

int addsd_floor_restore(void)
{
    return sigaction(SIGSEGV, &saved, NULL);
}
