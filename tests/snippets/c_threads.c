/* Threads that C creates (pthread_create), each running one window loop: the in-process
 * runtime's faults on threads Python never saw (tests/test_runtime_c_threads.py,
 * benchmarks/c_threads.py).  Built at test time with -masm=intel.
 *
 * A loop is `long loop(long n, long rcx)`, one window fault per iteration (n >= 1), with a
 * register twin that does the same on registers only: what the window loop must return.
 */
#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* add rax, [8]: rax += rcx (a form with Python semantics). */
long add_window(long n, long rcx)
{
    long rax = 0;
    __asm__ volatile("1: add rax, qword ptr [8]\n\tdec %1\n\tjnz 1b"
                     : "+a"(rax), "+r"(n) : "c"(rcx) : "cc", "memory");
    return rax;
}

long add_register(long n, long rcx)
{
    long rax = 0;
    __asm__ volatile("1: add rax, rcx\n\tdec %1\n\tjnz 1b" : "+a"(rax), "+r"(n) : "c"(rcx) : "cc");
    return rax;
}

/* addsd xmm0, [8]: xmm0 += rcx's bits as a double (the native engine runs it). */
long addsd_window(long n, long rcx)
{
    long rax;
    __asm__ volatile("pxor xmm0, xmm0\n1: addsd xmm0, qword ptr [8]\n\tdec %1\n\tjnz 1b\n\t"
                     "movq rax, xmm0" : "=a"(rax), "+r"(n) : "c"(rcx) : "cc", "memory", "xmm0");
    return rax;
}

long addsd_register(long n, long rcx)
{
    long rax;
    __asm__ volatile("pxor xmm0, xmm0\n\tmovq xmm1, rcx\n1: addsd xmm0, xmm1\n\tdec %1\n\tjnz 1b\n\t"
                     "movq rax, xmm0" : "=a"(rax), "+r"(n) : "c"(rcx) : "cc", "xmm0", "xmm1");
    return rax;
}

/* add rax, [rdi] with rdi 8 and 0x10 in turn (rcx, then rdx = 3): a register-addressed site
 * seen with two window addresses. */
long indexed_window(long n, long rcx)
{
    long rax = 0;
    __asm__ volatile("mov edx, 3\n1: mov rdi, %1\n\tand edi, 1\n\tlea rdi, [8 + rdi*8]\n\t"
                     "add rax, qword ptr [rdi]\n\tdec %1\n\tjnz 1b"
                     : "+a"(rax), "+r"(n) : "c"(rcx) : "rdx", "rdi", "cc", "memory");
    return rax;
}

long indexed_register(long n, long rcx)
{
    long rax = 0;
    for (; n; n--)
        rax += n & 1 ? 3 : rcx;
    __asm__ volatile("" : "+r"(rax));
    return rax;
}

/* add rax, [rdi] with rdi = address and rcx = 5, n times: a window address, real memory or a hole. */
long add_at(long n, long address)
{
    long rax = 0;
    __asm__ volatile("1: add rax, qword ptr [rdi]\n\tdec %1\n\tjnz 1b"
                     : "+a"(rax), "+r"(n) : "D"(address), "c"(5L) : "cc", "memory");
    return rax;
}

/* div qword [8]: rdx:rax / rcx, n times (a #DE when rcx is 0). */
long div_window(long n, long rcx)
{
    long rax = 0;
    __asm__ volatile("1: mov eax, 1000\n\txor edx, edx\n\tdiv qword ptr [8]\n\tdec %1\n\tjnz 1b"
                     : "+a"(rax), "+r"(n) : "c"(rcx) : "rdx", "cc", "memory");
    return rax;
}

long div_register(long n, long rcx)
{
    long rax = 0;
    __asm__ volatile("1: mov eax, 1000\n\txor edx, edx\n\tdiv rcx\n\tdec %1\n\tjnz 1b"
                     : "+a"(rax), "+r"(n) : "c"(rcx) : "rdx", "cc");
    return rax;
}

/* A hole of the default layout (0x98: no register there): a genuine fault, as on the CPU. */
long hole_store(long n, long rcx)
{
    (void)n;
    __asm__ volatile("mov qword ptr [0x98], rcx" : : "c"(rcx) : "memory");
    return rcx;
}

/* A genuine fault: a load from an address nothing maps (page 0 is only 0x300 bytes of window). */
long wild_load(long n, long rcx)
{
    (void)n;
    return *(volatile long *)(uintptr_t)(0x7000 + rcx);
}

typedef long (*loop_t)(long, long);

struct job {
    loop_t loop;
    long n, rcx, repeat, result;
    double seconds;       /* the thread's CPU time in the loop */
};

static double thread_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *run(void *argument)
{
    struct job *job = argument;
    double start = thread_seconds();
    job->result = 0;
    for (long i = 0; i < job->repeat; i++)    /* a long-lived thread: bursts of faults */
        job->result += job->loop(job->n, job->rcx);
    job->seconds = thread_seconds() - start;
    return 0;
}

/* `count` threads at once, each running `loop` `repeat` times; results[i], seconds[i] its own.
 * 0, or the pthread error. */
int at_once(int count, loop_t loop, long n, long rcx, long repeat, long *results, double *seconds)
{
    pthread_t threads[64];
    struct job jobs[64];
    if (count > 64)
        return 22;
    for (int i = 0; i < count; i++) {
        jobs[i] = (struct job){loop, n, rcx + i, repeat, 0, 0};
        int error = pthread_create(&threads[i], 0, run, &jobs[i]);
        if (error)
            return error;
    }
    for (int i = 0; i < count; i++) {
        pthread_join(threads[i], 0);
        results[i] = jobs[i].result;
        if (seconds)
            seconds[i] = jobs[i].seconds;
    }
    return 0;
}

/* `count` short-lived threads, `width` at a time, each running `loop` once with rcx = its
 * number; the number of threads whose result differs from `twin`'s on the same thread's
 * arguments, or -1 if a thread could not be made. */
long short_lived(long count, int width, loop_t loop, loop_t twin, long n)
{
    long wrong = 0;
    for (long done = 0; done < count; done += width) {
        long results[64];
        int batch = count - done < width ? (int)(count - done) : width;
        if (at_once(batch, loop, n, done, 1, results, 0))
            return -1;
        for (int i = 0; i < batch; i++)
            wrong += results[i] != twin(n, done + i);
    }
    return wrong;
}

/* add_window, then wait until `release_waiters`: a thread that has faulted and lives on. */
static volatile int released;
static volatile long waiting;

long add_then_wait(long n, long rcx)
{
    long result = add_window(n, rcx);
    __atomic_add_fetch(&waiting, 1, __ATOMIC_SEQ_CST);
    while (!released) {
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, 0);
    }
    return result;
}

long waiters(void) { return waiting; }
void release_waiters(void) { released = 1; }
