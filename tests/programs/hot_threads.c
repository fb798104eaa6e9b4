/* Four threads run window loops at the same time while `regmap exec --translate` rewrites their
 * sites: add rax, [8] (in place: add rax, rcx) and mov rax, [4] (a trampoline: rcx[31:0] .
 * rax[63:32]).  Argument 1: rounds per thread.  With "parked" as argument 2, two more threads sit
 * in blocking system calls while the sites are rewritten (the workers start once /proc says
 * they are in them): one in read() on a pipe that main writes after the workers end, one in a
 * 300 ms nanosleep, which must sleep it all and return 0; a third spins in user mode without a
 * system call until main is done (the tracer stops it on its CPU).  With "fork", once the
 * threads are done a forked child runs the loop once more (the sites are rewritten in its copy).
 * Prints one line per thread; exits 0 when every value is exact. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "task_syscall.h"

#define THREADS 4
static long rounds = 1000;
static pthread_barrier_t start;
static unsigned long sums[THREADS], wrong[THREADS];
static int pipe_fds[2];
static volatile pid_t reader_tid, napper_tid;
static char got[8];
static long read_result, read_errno, nap_result, nap_full;
static volatile int spinning, done;
static unsigned long spins;

static void loop(long id) {
    unsigned long sum = 0, bad = 0;
    for (long i = 0; i < rounds; i++) {
        unsigned long c = id + 1, x = 0x0123456789abcdefUL * (i + 1) + id,
                      y = 0xfedcba9876543210UL ^ (i << 20) ^ id, r;
        __asm__ volatile ("addq 8, %0" : "+a" (sum) : "c" (c) : "cc");
        __asm__ volatile ("movq 4, %0" : "=a" (r) : "0" (x), "c" (y));
        bad += r != ((x >> 32) | (y << 32));
    }
    sums[id] = sum;
    wrong[id] = bad;
}

static void *worker(void *arg) {
    pthread_barrier_wait(&start);
    loop((long)arg);
    return NULL;
}

static void *reader(void *arg) {
    (void)arg;
    reader_tid = (pid_t)syscall(SYS_gettid);
    read_result = read(pipe_fds[0], got, 5);
    read_errno = read_result < 0 ? errno : 0;
    return NULL;
}

static void *spinner(void *arg) {
    (void)arg;
    unsigned long n = 0;
    spinning = 1;
    while (!done)
        n++;
    spins = n;
    return NULL;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void *napper(void *arg) {
    (void)arg;
    struct timespec nap = {0, 300 * 1000 * 1000};
    napper_tid = (pid_t)syscall(SYS_gettid);
    double before = now();
    nap_result = syscall(SYS_nanosleep, &nap, NULL);     /* no libc retry on EINTR */
    nap_full = now() - before >= 0.3;
    return NULL;
}

/* Whether thread `tid` is blocked in system call `number` (/proc/self/task/TID/syscall). */
static int in_syscall(pid_t tid, long number) {
    char text[256] = "";
    return task_syscall(tid, text, sizeof text) && strtol(text, NULL, 10) == number;
}

int main(int argc, char **argv) {
    if (argc > 1)
        rounds = atol(argv[1]);
    int parked = argc > 2 && strcmp(argv[2], "parked") == 0;
    pthread_t threads[THREADS], read_thread, nap_thread, spin_thread;
    pthread_barrier_init(&start, NULL, THREADS);
    if (parked) {
        if (pipe(pipe_fds))
            return 2;
        pthread_create(&read_thread, NULL, reader, NULL);
        pthread_create(&nap_thread, NULL, napper, NULL);
        pthread_create(&spin_thread, NULL, spinner, NULL);
        while (!spinning || !reader_tid || !napper_tid || !in_syscall(reader_tid, SYS_read)
               || !in_syscall(napper_tid, SYS_nanosleep))
            sched_yield();
    }
    for (long i = 0; i < THREADS; i++)
        pthread_create(&threads[i], NULL, worker, (void *)i);
    int bad = 0;
    for (long i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        unsigned long want = rounds * (i + 1);
        printf("thread %ld sum %lu wrong %lu\n", i, sums[i], wrong[i]);
        bad += sums[i] != want || wrong[i] != 0;
    }
    if (argc > 2 && strcmp(argv[2], "fork") == 0) {
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
            loop(1);
            _exit(sums[1] != 2 * (unsigned long)rounds || wrong[1] != 0);
        }
        int status;
        waitpid(child, &status, 0);
        printf("child %s\n", WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "exact" : "wrong");
        bad += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    if (parked) {
        if (write(pipe_fds[1], "hello", 5) != 5)
            return 2;
        pthread_join(read_thread, NULL);
        pthread_join(nap_thread, NULL);
        done = 1;
        pthread_join(spin_thread, NULL);
        printf("read %ld errno %ld got %.5s\n", read_result, read_errno, got);
        printf("nanosleep %ld slept all %ld\n", nap_result, nap_full);
        printf("spinner %s\n", spins ? "spun" : "did not spin");
        bad += !spins || read_result != 5 || strcmp(got, "hello") != 0 || nap_result != 0 || !nap_full;
    }
    return bad;
}
