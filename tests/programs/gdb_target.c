/* A program for tests/test_gdb.py to debug through regmap's gdb stub.
 * Labels (global symbols) mark the instructions the tests break, step or watch at:
 *   store_site   movq %rsi, 0x38     (rdi = rsi through page 0), after_store right after it
 *   see_site     movq 0x38, %rax     (reads rdi through page 0; the value is printed)
 * A second thread runs worker(); with the argument "segv" the program then makes a genuine
 * NULL-free segmentation fault; with "usr1" it raises SIGUSR1, which its handler counts, and
 * says "SIGUSR1 handled N times".  Exits with status 3. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static volatile sig_atomic_t handled;

static void on_usr1(int signo) {
    (void)signo;
    handled++;
}

__attribute__((noinline)) static long store(long value) {
    long rdi;
    __asm__ volatile ("movq %%rax, %%xmm0\n\t"
                      ".globl store_site\nstore_site:\n\t"
                      "movq %%rsi, 0x38\n\t"
                      ".globl after_store\nafter_store:\n\t"
                      : "=D" (rdi) : "S" (value), "a" (0x1122334455667788L) : "xmm0", "memory");
    return rdi;
}

__attribute__((noinline)) static long see(void) {
    long seen;
    __asm__ volatile (".globl see_site\nsee_site:\n\t"
                      "movq 0x38, %%rax\n\t" : "=a" (seen) : "D" (1L) : "memory");
    return seen;
}

void *worker(void *arg) {
    long value = (long)arg;
    __asm__ volatile ("movq %0, 0x10" : : "r" (value) : "rdx");     /* rdx = value */
    return arg;
}

int main(int argc, char **argv) {
    printf("stored %ld\n", store(42));
    printf("seen %ld\n", see());
    pthread_t thread;
    pthread_create(&thread, NULL, worker, (void *)7L);
    pthread_join(thread, NULL);
    if (argc > 1 && strcmp(argv[1], "segv") == 0)
        *(volatile long *)0xdead0000L = 1;      /* nothing is mapped there */
    if (argc > 1 && strcmp(argv[1], "usr1") == 0) {
        signal(SIGUSR1, on_usr1);
        raise(SIGUSR1);
        printf("SIGUSR1 handled %d times\n", (int)handled);
    }
    fflush(stdout);
    return 3;
}
