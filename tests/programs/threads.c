/* Four threads, each doing many window accesses on its own registers at the same time.
 * Thread i: rcx = i + 1, ROUNDS times rax += [8] (rcx) and rdi = [0] (rax) through the window.
 * Prints "thread I rax R rdi D" per thread; exits 0 when every value is exact. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define THREADS 4
static long rounds = 500;
static pthread_barrier_t start;
static unsigned long rax_out[THREADS], rdi_out[THREADS];

static void *worker(void *arg) {
    long id = (long)arg;
    unsigned long rax = 0, rcx = id + 1, rdi = 0;
    pthread_barrier_wait(&start);
    for (long i = 0; i < rounds; i++) {
        __asm__ volatile ("addq 8, %0" : "+a" (rax) : "c" (rcx) : "cc");
        __asm__ volatile ("movq 0, %%rdi" : "=D" (rdi) : "a" (rax));
        if (rdi != rax)
            break;
    }
    rax_out[id] = rax;
    rdi_out[id] = rdi;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1)
        rounds = atol(argv[1]);
    pthread_t threads[THREADS];
    pthread_barrier_init(&start, NULL, THREADS);
    for (long i = 0; i < THREADS; i++)
        pthread_create(&threads[i], NULL, worker, (void *)i);
    int bad = 0;
    for (long i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        unsigned long want = rounds * (i + 1);
        printf("thread %ld rax %lu rdi %lu\n", i, rax_out[i], rdi_out[i]);
        bad += rax_out[i] != want || rdi_out[i] != want;
    }
    return bad;
}
