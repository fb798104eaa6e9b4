/* What a thread of this process is doing in the kernel, for the test programs that wait until a
 * thread is blocked in a system call before they go on. */
#include <stdio.h>
#include <sys/types.h>

/* The first line of /proc/self/task/TID/syscall (the number of the system call thread `tid` is
 * blocked in, its arguments, sp and pc, in decimal then hex) in `text`; 0 if it cannot be read. */
static int task_syscall(pid_t tid, char *text, int size) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    FILE *file = fopen(path, "r");
    if (!file)
        return 0;
    int ok = fgets(text, size, file) != NULL;
    fclose(file);
    return ok;
}
