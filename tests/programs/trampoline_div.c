#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <unistd.h>
#include <pthread.h>

extern char divsite[];
static sigjmp_buf back;
static volatile unsigned long r11_before;

__attribute__((noinline)) static unsigned long divide(unsigned long a, unsigned long c) {
    unsigned long d = 0;
#ifdef REGISTER_ADDRESSED      /* [rsi + disp32 12], rsi = 0: a stub and its window trampoline */
    __asm__ volatile ("mov %3, %%r11\n.globl divsite\ndivsite: .byte 0x48, 0xf7, 0xb6, 12, 0, 0, 0"  /* divq 12(%%rsi), disp32 */
                      : "+a" (a), "+d" (d) : "c" (c << 32), "r" (r11_before), "S" (0L) : "cc", "r11");
#else
    __asm__ volatile ("mov %3, %%r11\n.globl divsite\ndivsite: divq 12"
                      : "+a" (a), "+d" (d) : "c" (c << 32), "r" (r11_before) : "cc", "r11");
#endif
    return a;
}

static void on_fpe(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    printf("signal %d code %d addr_is_site %d rip_is_site %d r11_kept %d rcx %lld\n", sig,
           info->si_code, info->si_addr == (void *)divsite,
           uc->uc_mcontext.gregs[REG_RIP] == (long long)divsite,
           uc->uc_mcontext.gregs[REG_R11] == (long long)r11_before,
           uc->uc_mcontext.gregs[REG_RCX]);
    fflush(stdout);
    siglongjmp(back, 1);
}

static unsigned long run(long n, unsigned long c) {
    unsigned long s = 0;
    for (long i = 0; i < n; i++)
        s += divide(1000 + i, c);
    return s;
}

static void *worker(void *arg) {
    return (void *)run(1000, (unsigned long)arg);
}

static void divide_by_zero(void) {
    if (sigsetjmp(back, 1) == 0)
        divide(5, 0);
}

int main(int argc, char **argv) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fpe;
    action.sa_flags = SA_SIGINFO;
    sigaction(SIGFPE, &action, NULL);
    r11_before = 0x1234567890abcdefUL;
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "exec") == 0) {
        printf("exec %lu\n", run(10, 1));
        divide_by_zero();
        return 0;
    }
    if (strcmp(mode, "busy") == 0) {          /* threads dividing while the site is rewritten */
        pthread_t t[4];
        for (long i = 0; i < 4; i++)
            pthread_create(&t[i], NULL, worker, (void *)(i + 1));
        printf("hot %lu\n", run(10, 2));
        divide_by_zero();
        for (long i = 0; i < 4; i++) {
            void *r;
            pthread_join(t[i], &r);
            printf("thread %ld %lu\n", i, (unsigned long)r);
        }
        printf("parent %lu\n", run(10, 5));
        return 0;
    }
    printf("hot %lu\n", run(10, 2));                 /* the site is now hot */
    divide_by_zero();
    if (strcmp(mode, "vfork") == 0) {         /* a child in the parent's memory faults there */
        fflush(stdout);
        pid_t child = vfork();
        if (child == 0) {
            divide_by_zero();
            _exit(0);
        }
        int status;
        waitpid(child, &status, 0);
    } else if (strcmp(mode, "threads") == 0) {
        pthread_t t[4];
        for (long i = 0; i < 4; i++)
            pthread_create(&t[i], NULL, worker, (void *)(i + 1));
        for (long i = 0; i < 4; i++) {
            void *r;
            pthread_join(t[i], &r);
            printf("thread %ld %lu\n", i, (unsigned long)r);
        }
    } else if (strcmp(mode, "fork") == 0) {
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
            printf("child %lu\n", run(10, 3));
            divide_by_zero();
            _exit(0);
        }
        int status;
        waitpid(child, &status, 0);
        pid_t other = fork();
        if (other == 0) {
            execl("/proc/self/exe", argv[0], "exec", (char *)NULL);
            _exit(99);
        }
        waitpid(other, &status, 0);
    }
    printf("parent %lu\n", run(10, 5));
    return 0;
}
