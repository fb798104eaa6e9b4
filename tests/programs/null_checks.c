/* NULL pointers at small offsets, for strict and permissive addressing (tests/test_addressing.py).
 *
 * walk: a linked-list walk whose last node's `next` is NULL reads `n->next->a` at [0 + 0x18],
 *       a NULL-pointer bug: natively SIGSEGV.
 * npe N: a model of a JVM's implicit null checks: its own SIGSEGV handler, installed first,
 *       turns a fault of the 3-byte load `mov eax, [rax+0xc]` into a caught "exception" and
 *       skips the load; natively it prints npe=N sum=0.
 * hole: a constant-address read of [0x98], a byte no register of the default layout is at:
 *       a window access that faults, as on the CPU.
 * far-jump: `jmp far [0x40]`, a window access in a form regmap does not emulate.
 * Built as a program (main) and as a shared library (the in-process runtime's tests).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

struct node { long pad[3]; long a; struct node *next; };

__attribute__((noinline)) long walk(struct node *n)
{
    long sum = 0;
    while (n) {
        struct node *volatile next = n->next;   /* volatile: gcc may not assume it non-NULL */
        sum += next->a;             /* the bug: the last node's next is NULL */
        n = next;
    }
    return sum;
}

long null_walk(void)
{
    static struct node last = {{0}, 2, NULL}, first = {{0}, 1, &last};
    return walk(&first);
}

static volatile sig_atomic_t caught;

static void on_segv(int signo, siginfo_t *info, void *context)
{
    ucontext_t *uc = context;
    (void)signo; (void)info;
    caught = 1;
    uc->uc_mcontext.gregs[REG_RIP] += 3;        /* past mov eax, [rax+0xc] */
}

void install_handler(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &action, NULL);
}

static long sum;

long implicit_null_checks(long n, void *object)
{
    long npe = 0;
    sum = 0;
    for (long i = 0; i < n; i++) {
        int value = 0;
        caught = 0;
        __asm__ volatile (".byte 0x8b, 0x40, 0x0c" : "=a"(value) : "a"(object) : "memory");
        if (caught)
            npe++;
        else
            sum += value;
    }
    return npe;
}

long last_sum(void) { return sum; }

__attribute__((noinline)) long read_hole(void)
{
    long value;
    __asm__ volatile ("movq 0x98, %0" : "=r"(value) :: "memory");
    return value;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "hole"))
        return (int)read_hole();
    if (argc > 1 && !strcmp(argv[1], "far-jump"))
        __asm__ volatile ("ljmpl *0x40");
    if (argc > 1 && !strcmp(argv[1], "walk")) {
        printf("sum=%ld\n", null_walk());
        return 0;
    }
    if (argc > 2 && !strcmp(argv[1], "npe")) {
        install_handler();
        long npe = implicit_null_checks(atol(argv[2]), NULL);
        printf("npe=%ld sum=%ld\n", npe, last_sum());
        return 0;
    }
    return 2;
}
