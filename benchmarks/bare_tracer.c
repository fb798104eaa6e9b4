/* The traced floor for benchmarks/form_cost.py and trace_cost.py: a bare ptrace tracer in C
 * that does for `add rax, [8]` what regmap exec does and nothing else -- wait for the stop,
 * PTRACE_GETREGS, rax += rcx (with the flags), rip += 8, PTRACE_SETREGS, PTRACE_CONT.
 * Usage: bare_tracer PROGRAM [ARGS...]; exits with the program's status. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#define STATUS 0x8d5UL

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    pid_t pid = fork();
    if (pid == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        execv(argv[1], argv + 1);
        _exit(127);
    }
    struct user_regs_struct regs;
    for (;;) {
        int status;
        pid_t tid = waitpid(-1, &status, __WALL);
        if (tid < 0)
            return 1;
        if (WIFEXITED(status) && tid == pid)
            return WEXITSTATUS(status);
        if (WIFSIGNALED(status) && tid == pid)
            return 128 + WTERMSIG(status);
        if (!WIFSTOPPED(status))
            continue;
        int sig = WSTOPSIG(status);
        if (sig == SIGSEGV) {
            uint64_t a, f;
            ptrace(PTRACE_GETREGS, tid, 0, &regs);
            a = regs.rax;
            __asm__("add %2, %0\n\tpushfq\n\tpop %1" : "+r"(a), "=r"(f) : "r"(regs.rcx) : "cc");
            regs.rax = a;
            regs.eflags = (regs.eflags & ~STATUS) | (f & STATUS);
            regs.rip += 8;
            ptrace(PTRACE_SETREGS, tid, 0, &regs);
            sig = 0;
        } else if (sig == SIGTRAP) {
            sig = 0;
        }
        ptrace(PTRACE_CONT, tid, 0, sig);
    }
}
