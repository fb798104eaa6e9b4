/* Faults that regmap must pass on unchanged.  argv[1] chooses:
 *   bad-pointer  store through a real bad pointer (dies of SIGSEGV)
 *   hole         read page 0 where the default layout has no register (dies of SIGSEGV)
 *   caught       a bad-pointer fault caught by a SIGSEGV handler, which prints the siginfo
 *   sent         SIGSEGV sent with raise(), caught by the handler (si_code SI_TKILL)
 * (those four use no window, so their output and status compare with a run without regmap)
 *   usr1         SIGUSR1 to itself, caught; then a window access
 *   divide       div by zero through the window with a SIGFPE handler (prints the siginfo)
 *   divide-dies  the same without a handler (dies of SIGFPE)
 *   stop         stops itself with SIGSTOP; a child sends SIGCONT; then a window access
 *   exit3        a window access, then exit(3) */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static sigjmp_buf back;
extern char divide_site[];

static void handler(int sig, siginfo_t *info, void *context) {
    (void)context;
    printf("caught %s code %d addr %#lx%s\n", sig == SIGSEGV ? "SIGSEGV" : sig == SIGFPE ? "SIGFPE" : "other",
           info->si_code, (unsigned long)info->si_addr,
           sig == SIGFPE && info->si_addr == (void *)divide_site ? " at divide_site" : "");
    fflush(stdout);
    siglongjmp(back, 1);
}

static void usr1(int sig) {
    (void)sig;
    printf("got SIGUSR1\n");
}

static void catch(int sig) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = handler;
    action.sa_flags = SA_SIGINFO;
    sigaction(sig, &action, NULL);
}

static unsigned long window_add(unsigned long a, unsigned long c) {
    __asm__ volatile ("addq 8, %0" : "+a" (a) : "c" (c) : "cc");
    return a;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    setvbuf(stdout, NULL, _IONBF, 0);
    if (strcmp(mode, "bad-pointer") == 0) {
        *(volatile int *)0xdead0000 = 1;
    } else if (strcmp(mode, "hole") == 0) {
        unsigned long value;
        __asm__ volatile ("movq 0x800, %0" : "=r" (value));
        printf("read %lu\n", value);
    } else if (strcmp(mode, "caught") == 0) {
        catch(SIGSEGV);
        if (sigsetjmp(back, 1) == 0)
            *(volatile int *)0xdead0000 = 1;
        printf("after\n");
        return 0;
    } else if (strcmp(mode, "sent") == 0) {
        catch(SIGSEGV);
        if (sigsetjmp(back, 1) == 0)
            raise(SIGSEGV);
        printf("after\n");
        return 0;
    } else if (strcmp(mode, "usr1") == 0) {
        signal(SIGUSR1, usr1);
        raise(SIGUSR1);
        printf("after %lu\n", window_add(1, 2));
        return 0;
    } else if (strcmp(mode, "divide") == 0 || strcmp(mode, "divide-dies") == 0) {
        if (strcmp(mode, "divide") == 0)
            catch(SIGFPE);
        if (sigsetjmp(back, 1) == 0) {
            unsigned long rax = 1, rdx = 0;
            __asm__ volatile ("xorl %%ecx, %%ecx\n"
                              "divide_site:\n\t"
                              "divq 8" : "+a" (rax), "+d" (rdx) :: "rcx", "cc");
            printf("no fault %lu\n", rax);
        }
        return 0;
    } else if (strcmp(mode, "stop") == 0) {
        pid_t parent = getpid();
        if (fork() == 0) {
            usleep(200000);
            kill(parent, SIGCONT);
            _exit(0);
        }
        raise(SIGSTOP);
        printf("continued %lu\n", window_add(20, 22));
        return 0;
    } else if (strcmp(mode, "exit3") == 0) {
        exit((int)window_add(1, 2));
    }
    printf("unknown mode\n");
    return 100;
}
