/* The floors for benchmarks/form_cost.py: for each form, a C SIGSEGV handler doing that form's
 * work on the ucontext (registers, flags, XSAVE image, memory) and nothing else: no decoding,
 * no checks.  Built into one shared library with the loops; `floor_install(form)` swaps the
 * process's SIGSEGV disposition for the form's handler (SA_ONSTACK: the same alternate stack
 * regmap's handler runs on), `floor_restore()` puts back what was there (regmap's). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>

#define G(uc, r) ((uc)->uc_mcontext.gregs[REG_##r])
#define STATUS 0x8d5UL      /* CF PF AF ZF SF OF */

static uint64_t add_flags(uint64_t *a, uint64_t b)
{
    uint64_t f, x = *a;
    __asm__("add %2, %0\n\tpushfq\n\tpop %1" : "+r"(x), "=r"(f) : "r"(b) : "cc");
    *a = x;
    return f & STATUS;
}

static void set_status(ucontext_t *uc, uint64_t f)
{
    G(uc, EFL) = (G(uc, EFL) & ~STATUS) | f;
}

static void on_add_const(int s, siginfo_t *i, void *c)       /* add rax, [8] */
{
    ucontext_t *uc = c;
    uint64_t a = G(uc, RAX);
    set_status(uc, add_flags(&a, G(uc, RCX)));
    G(uc, RAX) = a;
    G(uc, RIP) += 8;
}

static void on_add_reg(int s, siginfo_t *i, void *c)         /* add rax, [rdi], rdi = 8 */
{
    ucontext_t *uc = c;
    uint64_t a = G(uc, RAX);
    set_status(uc, add_flags(&a, G(uc, RCX)));
    G(uc, RAX) = a;
    G(uc, RIP) += 3;
}

static void on_xadd(int s, siginfo_t *i, void *c)            /* xadd [8], rax */
{
    ucontext_t *uc = c;
    uint64_t sum = G(uc, RCX);
    set_status(uc, add_flags(&sum, G(uc, RAX)));
    G(uc, RAX) = G(uc, RCX);
    G(uc, RCX) = sum;
    G(uc, RIP) += 9;
}

static void on_movdqu(int s, siginfo_t *i, void *c)          /* movdqu xmm0, [0x100] */
{
    ucontext_t *uc = c;
    uint32_t v[4];
    memcpy(v, uc->uc_mcontext.fpregs->_xmm[0].element, 16);
    memcpy(uc->uc_mcontext.fpregs->_xmm[0].element, v, 16);
    G(uc, RIP) += 9;
}

static void on_paddd(int s, siginfo_t *i, void *c)           /* paddd xmm1, [0] */
{
    ucontext_t *uc = c;
    uint32_t m[4], *x = uc->uc_mcontext.fpregs->_xmm[1].element;
    memcpy(m, &G(uc, RAX), 8);
    memcpy(m + 2, &G(uc, RCX), 8);
    for (int k = 0; k < 4; k++)
        x[k] += m[k];
    G(uc, RIP) += 9;
}

static void on_push_pop(int s, siginfo_t *i, void *c)        /* push qword [8] / pop qword [0x10] */
{
    ucontext_t *uc = c;
    if (*(unsigned char *)G(uc, RIP) == 0xff) {
        G(uc, RSP) -= 8;
        *(uint64_t *)G(uc, RSP) = G(uc, RCX);
    } else {
        G(uc, RDX) = *(uint64_t *)G(uc, RSP);
        G(uc, RSP) += 8;
    }
    G(uc, RIP) += 7;
}

static void on_rep_movsb(int s, siginfo_t *i, void *c)       /* rep movsb from [0x40], rcx = 64 */
{
    ucontext_t *uc = c;
    uint64_t n = G(uc, RCX);
    memcpy((void *)G(uc, RDI), (char *)&G(uc, R8) + G(uc, RSI) - 0x40, n);
    G(uc, RSI) += n;
    G(uc, RDI) += n;
    G(uc, RCX) = 0;
    G(uc, RIP) += 2;
}

/* An empty C handler calling an empty Python callback: the ctypes entry and exit alone. */
static void (*callback)(int, void *, void *);
static void on_callback(int s, siginfo_t *i, void *c)
{
    ucontext_t *uc = c;
    callback(s, i, c);
    G(uc, RIP) += 8;
    G(uc, RAX) += G(uc, RCX);
}

static void (*const handlers[])(int, siginfo_t *, void *) = {
    on_add_const, on_add_reg, on_xadd, on_movdqu, on_paddd, on_push_pop, on_rep_movsb,
    on_callback,
};
static struct sigaction saved;

int floor_install(int form)
{
    struct sigaction sa = {0};
    if (form < 0 || form >= (int)(sizeof handlers / sizeof *handlers))
        return -1;
    sa.sa_sigaction = handlers[form];
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    return sigaction(SIGSEGV, &sa, &saved);
}

int floor_restore(void)
{
    return sigaction(SIGSEGV, &saved, NULL);
}

void floor_set_callback(void (*f)(int, void *, void *))
{
    callback = f;
}
