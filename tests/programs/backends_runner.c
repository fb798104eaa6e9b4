/* The state runner of tests/test_backends_agree.py, around regmap_run_case (backends_runner.s).
 *
 * regmap_run_file(in, out) reads a batch of cases and writes, for each, the state after its
 * instruction.  The input: a 16-byte header (the number of cases, then 0), the code region
 * (CODE_SIZE bytes, every case's instruction followed by `jmp [IN + 0xa0]`), then per case the
 * state in (one page) and the three data pages (stack, buffer, image).  The output: per case the
 * state out and the three data pages as they were after the instruction.
 * Built as an executable (`runner IN OUT`, run plain or under `regmap exec`) and as a shared
 * library (called through ctypes after map_registers()).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define STATE 0x30000000UL      /* IN and OUT, one page each */
#define DATA 0x30020000UL
#define DATA_SIZE 0x30000UL
#define STACK_PAGE 0x3002f000UL
#define BUFFER_PAGE 0x30038000UL
#define IMAGE_PAGE 0x30040000UL
#define CODE 0x30100000UL
#define CODE_SIZE 0x10000UL
#define PAGE 0x1000UL

void regmap_run_case(void);

static int map_at(unsigned long address, unsigned long size, int prot) {
    void *p = mmap((void *)address, size, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED || p != (void *)address) {
        perror("runner: mmap");
        return -1;
    }
    return 0;
}

static int mapped;

static int setup(void) {
    if (mapped)
        return 0;
    if (map_at(STATE, 2 * PAGE, PROT_READ | PROT_WRITE) || map_at(DATA, DATA_SIZE, PROT_READ | PROT_WRITE)
        || map_at(CODE, CODE_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC))
        return -1;
    mapped = 1;
    return 0;
}

static const unsigned long pages[] = {STACK_PAGE, BUFFER_PAGE, IMAGE_PAGE};

int regmap_run_file(const char *in_path, const char *out_path) {
    uint64_t header[2];
    FILE *in = fopen(in_path, "rb"), *out = fopen(out_path, "wb");
    if (!in || !out || setup() || fread(header, sizeof header, 1, in) != 1
        || fread((void *)CODE, CODE_SIZE, 1, in) != 1)
        return 2;
    for (uint64_t i = 0; i < header[0]; i++) {
        if (fread((void *)STATE, PAGE, 1, in) != 1)
            return 3;
        for (int p = 0; p < 3; p++)
            if (fread((void *)pages[p], PAGE, 1, in) != 1)
                return 3;
        memset((void *)(STATE + PAGE), 0, PAGE);
        regmap_run_case();
        fwrite((void *)(STATE + PAGE), PAGE, 1, out);
        for (int p = 0; p < 3; p++)
            fwrite((void *)pages[p], PAGE, 1, out);
    }
    fclose(in);
    return fclose(out) ? 4 : 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: runner IN OUT\n");
        return 2;
    }
    return regmap_run_file(argv[1], argv[2]);
}
