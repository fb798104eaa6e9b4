/* The tracer's site cache against code that changes and signals that are not faults.
 * argv[1] chooses:
 *   rewrite  a window instruction on a writable code page is rewritten between faults (same
 *            length, shorter, longer), and in a forked child to another one at the same
 *            address; each result is compared with the register form the CPU runs natively
 *   kill     a window site faults a few times, then SIGSEGV sent with kill() arrives while the
 *            thread is at that site (the syscall right before it): the handler must see it
 *            (si_code SI_USER), and the access then still runs
 * Prints one "NAME: ... ok|FAIL" line per check; exits 0 when every check is ok. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;

static void check(const char *name, int ok, const char *detail) {
    printf("%s: %s %s\n", name, detail, ok ? "ok" : "FAIL");
    failures += !ok;
}

/* code page layout: xor edx,edx (known flags); the instruction; pushfq; pop rdx; ret */
static unsigned char *emit(unsigned char *page, const unsigned char *insn, size_t length) {
    static const unsigned char tail[] = {0x9c, 0x5a, 0xc3};
    page[0] = 0x31, page[1] = 0xd2;
    memcpy(page + 2, insn, length);
    memcpy(page + 2 + length, tail, sizeof tail);
    return page;
}

struct result { unsigned long rax, flags; };

static struct result call(unsigned char *code, unsigned long rax, unsigned long rcx) {
    struct result r;
    __asm__ volatile ("sub $128, %%rsp\n\tcall *%[code]\n\tadd $128, %%rsp"   /* past the red zone */
                      : "+a" (rax), "=d" (r.flags), "+c" (rcx)
                      : [code] "r" (code) : "rsi", "rdi", "r8", "r9", "r10", "r11", "cc", "memory");
    r.rax = rax;
    r.flags = r.flags & 0x8d5;          /* the status flags */
    return r;
}

struct form { const char *name; unsigned char window[9], native[4]; size_t window_length, native_length; };

static const struct form FORMS[] = {
    {"add rax,[8]", {0x48, 0x03, 0x04, 0x25, 8, 0, 0, 0}, {0x48, 0x01, 0xc8}, 8, 3},
    {"sub rax,[8]", {0x48, 0x2b, 0x04, 0x25, 8, 0, 0, 0}, {0x48, 0x29, 0xc8}, 8, 3},
    {"mov eax,[8]", {0x8b, 0x04, 0x25, 8, 0, 0, 0}, {0x89, 0xc8}, 7, 2},
    {"imul rax,[8]", {0x48, 0x0f, 0xaf, 0x04, 0x25, 8, 0, 0, 0}, {0x48, 0x0f, 0xaf, 0xc1}, 9, 4},
};

static void run_form(unsigned char *site_page, unsigned char *native_page, const struct form *f,
                     const char *where) {
    char name[96], detail[128];
    emit(native_page, f->native, f->native_length);
    emit(site_page, f->window, f->window_length);
    for (int i = 0; i < 3; i++) {       /* the first fault decodes, the next ones may be cached */
        unsigned long a = 0x7000000000000000UL + 977 * i, c = 0x9000000000000000UL + 31 * i;
        struct result got = call(site_page, a, c), want = call(native_page, a, c);
        snprintf(name, sizeof name, "%s %s %d", where, f->name, i);
        snprintf(detail, sizeof detail, "rax %#lx flags %#lx (CPU: %#lx %#lx)", got.rax, got.flags,
                 want.rax, want.flags);
        check(name, got.rax == want.rax && got.flags == want.flags, detail);
    }
}

static int rewrite(void) {
    unsigned char *site = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *native = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (site == MAP_FAILED || native == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    for (size_t i = 0; i < sizeof FORMS / sizeof FORMS[0]; i++)
        run_form(site, native, &FORMS[i], "rewritten");
    run_form(site, native, &FORMS[0], "again");
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {                   /* the same address, other code, in another process */
        run_form(site, native, &FORMS[1], "child");
        fflush(stdout);
        _exit(failures != 0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    check("child exit", WIFEXITED(status) && WEXITSTATUS(status) == 0, "status");
    run_form(site, native, &FORMS[0], "parent after fork");
    return failures != 0;
}

static volatile sig_atomic_t caught, caught_code;

static void on_segv(int sig, siginfo_t *info, void *context) {
    (void)sig, (void)context;
    caught++;
    caught_code = info->si_code;
}

/* window_site(rcx, pid): rax = 0 + [8] (rcx); with pid != 0, kill(pid, SIGSEGV) first, by a
 * syscall right before the site, so the signal arrives with rip on it (the syscall leaves
 * rax = 0 and rcx = the address of the site) */
extern unsigned long window_site(unsigned long rcx, long pid);
extern char site[];
__asm__(".text\n"
        ".globl window_site\n"
        "window_site:\n"
        "  mov %rdi, %rcx\n"
        "  xor %eax, %eax\n"
        "  test %rsi, %rsi\n"
        "  jz site\n"
        "  mov $62, %eax\n"            /* SYS_kill */
        "  mov %rsi, %rdi\n"
        "  mov $11, %esi\n"            /* SIGSEGV */
        "  syscall\n"
        ".globl site\n"
        "site:\n"
        "  addq 8, %rax\n"
        "  ret\n");

static int kill_at_site(void) {
    char detail[128];
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &action, NULL);
    for (unsigned long i = 1; i <= 3; i++) {
        unsigned long got = window_site(i * 1000, 0);
        snprintf(detail, sizeof detail, "rax %lu", got);
        check("warm site", got == i * 1000 && caught == 0, detail);
    }
    unsigned long got = window_site(0, getpid());
    snprintf(detail, sizeof detail, "handler ran %d time(s), si_code %d, rax %#lx (site %#lx)",
             (int)caught, (int)caught_code, got, (unsigned long)site);
    check("kill at site", caught == 1 && caught_code == SI_USER && got == (unsigned long)site,
          detail);
    got = window_site(5, 0);
    snprintf(detail, sizeof detail, "rax %lu", got);
    check("site after kill", got == 5 && caught == 1, detail);
    return failures != 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc > 1 && strcmp(argv[1], "rewrite") == 0)
        return rewrite();
    if (argc > 1 && strcmp(argv[1], "kill") == 0)
        return kill_at_site();
    fprintf(stderr, "usage: sites rewrite|kill\n");
    return 2;
}
