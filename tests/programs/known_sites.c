/* Sites that keep faulting under regmap exec: with fast faults on, the tracer sends them to
 * trampolines it placed in this program (tests/test_trace_known.py).  Built with -masm=intel.
 *
 *   known_sites loops N      addsd xmm0, [8] (the native engine's) and add rax, [rdi] with rdi
 *                            8 and 0x10 in turn (register-addressed), N times each; prints both
 *   known_sites fork N       the loops, then a fork: parent and child run them again
 *   known_sites exec N       the loops, then exec of "known_sites loops N"
 *   known_sites divide N     div qword [8] N times with rcx = 7, then once with rcx = 0: SIGFPE
 *   known_sites usr1 N       the addsd loop, then how many SIGUSR1 it was sent meanwhile
 *   known_sites stack N      add rax, [8] N times with rsp in the window (0x200)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static long addsd_loop(long n)
{
    long rax;
    __asm__ volatile("pxor xmm0, xmm0\n1: addsd xmm0, qword ptr [8]\n\tdec %1\n\tjnz 1b\n\t"
                     "movq rax, xmm0" : "=a"(rax), "+r"(n) : "c"(0x3ff8000000000000L)
                     : "cc", "memory", "xmm0");
    return rax;
}

static long indexed_loop(long n)
{
    long rax = 0;
    __asm__ volatile("mov edx, 3\n1: mov rdi, %1\n\tand edi, 1\n\tlea rdi, [8 + rdi*8]\n\t"
                     "add rax, qword ptr [rdi]\n\tdec %1\n\tjnz 1b"
                     : "+a"(rax), "+r"(n) : "c"(5L) : "rdx", "rdi", "cc", "memory");
    return rax;
}

static long divide(long n, long rcx)
{
    long rax = 0;
    __asm__ volatile("1: mov eax, 1000\n\txor edx, edx\n\tdiv qword ptr [8]\n\tdec %1\n\tjnz 1b"
                     : "+a"(rax), "+r"(n) : "c"(rcx) : "rdx", "cc", "memory");
    return rax;
}

static long stack_in_window(long n)
{
    long rax = 0;
    __asm__ volatile("mov r11, rsp\n\tmov rsp, 0x200\n1: add rax, qword ptr [8]\n\tdec %1\n\t"
                     "jnz 1b\n\tmov rsp, r11" : "+a"(rax), "+r"(n) : "c"(5L) : "r11", "cc", "memory");
    return rax;
}

static volatile sig_atomic_t usr1;

static void on_usr1(int signo)
{
    (void)signo;
    usr1++;
}

static void loops(const char *who, long n)
{
    printf("%s: addsd %lx indexed %ld\n", who, addsd_loop(n), indexed_loop(n));
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    long n = atol(argv[2]);
    if (!strcmp(argv[1], "loops")) {
        loops("loops", n);
    } else if (!strcmp(argv[1], "fork")) {
        loops("before", n);
        pid_t child = fork();
        loops(child ? "parent" : "child", n);
        if (child) {
            int status;
            waitpid(child, &status, 0);
            return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
        }
    } else if (!strcmp(argv[1], "exec")) {
        loops("before exec", n);
        execl("/proc/self/exe", argv[0], "loops", argv[2], (char *)0);
        return 3;
    } else if (!strcmp(argv[1], "stack")) {
        printf("stack %ld\n", stack_in_window(n));
    } else if (!strcmp(argv[1], "usr1")) {
        signal(SIGUSR1, on_usr1);
        long x = addsd_loop(n);
        printf("addsd %lx usr1 %d\n", x, (int)usr1);
    } else if (!strcmp(argv[1], "divide")) {
        printf("%ld\n", divide(n, 7));
        fflush(stdout);
        divide(1, 0);
        printf("survived\n");
    }
    return 0;
}
