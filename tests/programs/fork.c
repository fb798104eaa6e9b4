/* A forking program: parent and child both use the window; a vfork'd child execs the
 * program again and uses the window in the new image.
 * Prints "parent 12", "child 42" (the fork child's exit status), "exec 7"; exits 0 when all
 * are right. */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static unsigned long add_through_window(unsigned long a, unsigned long c) {
    __asm__ volatile ("addq 8, %0" : "+a" (a) : "c" (c) : "cc");
    return a;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "exec") == 0)
        return (int)add_through_window(3, 4);           /* 7 */
    fflush(stdout);
    pid_t child = fork();
    if (child == 0)
        _exit((int)add_through_window(40, 2));          /* 42 */
    unsigned long mine = add_through_window(5, 7);
    printf("parent %lu\n", mine);
    int status;
    waitpid(child, &status, 0);
    printf("child %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);

    pid_t execed = vfork();
    if (execed == 0) {
        execl("/proc/self/exe", argv[0], "exec", (char *)NULL);
        _exit(99);
    }
    waitpid(execed, &status, 0);
    printf("exec %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return !(mine == 12 && WIFEXITED(status) && WEXITSTATUS(status) == 7);
}
