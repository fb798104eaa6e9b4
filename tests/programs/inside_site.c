/* A thread parked in a system call whose rip lies inside a window instruction's bytes.
 * `site` is `mov qword ptr [8], 0x00eb050f` (48 c7 04 25 08000000 0f05eb00): its immediate's
 * bytes are `syscall; jmp +0`.  parked_read() jumps to site + 8, so the thread blocks in read()
 * with rip = site + 10, then runs `jmp +0` and the `ret` after the site.  Main calls the site ten
 * times meanwhile (rcx = 0xeb050f through the window), then writes the byte the thread reads.
 * With "alone", no thread is parked: main only calls the site ten times.
 * Prints "rcx R" and, parked, "read N byte C at_inside I"; exits 0 when all is as expected. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "task_syscall.h"

__asm__(".text\n"
        ".globl window_store\n"
        "window_store:\n"               /* returns the rcx the site wrote */
        "    call store\n"
        "    mov %rcx, %rax\n"
        "    ret\n"
        "store:\n"
        ".globl site\n"
        "site: movq $0x00eb050f, 8\n"
        "    ret\n"
        ".globl parked_read\n"
        "parked_read:\n"                 /* (fd, buf): read(fd, buf, 1) at site + 8 */
        "    mov $1, %edx\n"
        "    xor %eax, %eax\n"
        "    jmp site + 8\n");
long window_store(void);
long parked_read(int fd, char *buf);
extern char site[];

static int fds[2];
static char byte;
static long result;
static volatile pid_t reader;

static void *park(void *arg) {
    (void)arg;
    reader = (pid_t)syscall(SYS_gettid);
    result = parked_read(fds[0], &byte);
    return NULL;
}

/* Whether thread `tid` is blocked in read() at rip site + 10 (/proc/self/task/TID/syscall). */
static int parked_inside(pid_t tid) {
    char text[256] = "";
    int ok = task_syscall(tid, text, sizeof text);
    char *last = strrchr(text, ' ');
    return ok && strtol(text, NULL, 10) == SYS_read && last
           && strtoul(last + 1, NULL, 16) == (unsigned long)(site + 10);
}

int main(int argc, char **argv) {
    int alone = argc > 1 && strcmp(argv[1], "alone") == 0;
    pthread_t thread;
    if (!alone) {
        if (pipe(fds))
            return 2;
        pthread_create(&thread, NULL, park, NULL);
        while (!reader || !parked_inside(reader))
            sched_yield();
    }
    long rcx = 0;
    for (int i = 0; i < 10; i++)
        rcx = window_store();
    printf("rcx %#lx\n", rcx);
    if (alone)
        return rcx != 0xeb050f;
    if (write(fds[1], "x", 1) != 1)
        return 2;
    pthread_join(thread, NULL);
    printf("read %ld byte %c\n", result, byte);
    return rcx != 0xeb050f || result != 1 || byte != 'x';
}
