/* A child made by clone(CLONE_VM | SIGCHLD): a second process in the same memory, which ptrace
 * reports as a fork.  The parent runs its window site while the child is alive. */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static int pipefd[2];

static int child_main(void *arg) {
    char c;
    (void)arg;
    return read(pipefd[0], &c, 1) == 1 ? 0 : 1;     /* alive until the parent is done */
}

int main(void) {
    static char stack[65536] __attribute__((aligned(16)));
    if (pipe(pipefd) != 0)
        return 2;
    pid_t child = clone(child_main, stack + sizeof stack, CLONE_VM | SIGCHLD, NULL);
    if (child < 0)
        return 3;
    unsigned long rax = 0, rcx = 3;
    for (int i = 0; i < 10; i++)
        __asm__ volatile ("add 8, %0" : "+a" (rax) : "c" (rcx) : "cc");
    if (write(pipefd[1], "x", 1) != 1)
        return 4;
    int status;
    waitpid(child, &status, 0);
    printf("%lu %d\n", rax, WEXITSTATUS(status));
    return 0;
}
