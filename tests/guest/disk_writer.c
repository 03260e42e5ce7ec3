/*
 * disk_writer: the tiny test guest's workload (PID 1's child in its initramfs).
 *
 * Promises:
 *   - Waits until /dev/vda exists, then writes record n (4096 bytes) at byte
 *     offset n * 4096 of /dev/vda, n = 0, 1, 2, ..., opened with
 *     O_DIRECT | O_DSYNC, and prints "ACK n" on stdout (the serial console)
 *     only after the write of record n returned in full. Then it sleeps
 *     writer.interval_ms milliseconds (kernel command line, default 5).
 *   - A record is: "VMSTREC1" (8 bytes), n (u64 little-endian), the writer's
 *     CLOCK_MONOTONIC time in ns (u64 LE, informative), a payload derived from
 *     n, and the CRC-32 (IEEE, as zlib.crc32) of the first 4092 bytes in the
 *     last 4 bytes (u32 LE). tests/guest/tiny_guest.py checks them.
 *   - With writer.dirty_mib_per_s=R and writer.dirty_mib=M (both > 0), a forked
 *     child dirties an M MiB buffer at R MiB/s, page by page, forever (for
 *     migration non-convergence tests).
 *   - Never exits on its own. A failed write is reported ("WRITE_ERROR n errno")
 *     and retried after the interval; a full disk is reported ("DISK_FULL n")
 *     and the writer then idles.
 *
 * Caveats: the records are not wrapped around; size the disk for the run.
 * Built with `gcc -static -O2` by tiny_guest.py; needs only libc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RECORD_BYTES 4096
#define CRC_OFFSET (RECORD_BYTES - 4)
#define DEVICE "/dev/vda"
#define PAGE_BYTES 4096
#define DIRTY_TICK_MS 10
#define DEVICE_WAIT_REPORT_S 5

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc32_ieee(const unsigned char *data, size_t length) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < length; i++) c = crc_table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static void put_u64(unsigned char *at, uint64_t value) {
    for (int i = 0; i < 8; i++) at[i] = (unsigned char)(value >> (8 * i));
}

static void put_u32(unsigned char *at, uint32_t value) {
    for (int i = 0; i < 4; i++) at[i] = (unsigned char)(value >> (8 * i));
}

static uint64_t monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static void sleep_ms(long milliseconds) {
    struct timespec pause = {milliseconds / 1000, (milliseconds % 1000) * 1000000L};
    while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
    }
}

/* One line to the console in one write(2), so lines never interleave. */
__attribute__((format(printf, 1, 2))) static void say(const char *format, ...) {
    char line[160];
    va_list arguments;
    va_start(arguments, format);
    int length = vsnprintf(line, sizeof line, format, arguments);
    va_end(arguments);
    if (length > (int)sizeof line - 1) length = (int)sizeof line - 1;
    if (length > 0) (void)!write(STDOUT_FILENO, line, (size_t)length);
}

/* writer.NAME=VALUE from /proc/cmdline, or fallback. */
static long cmdline_option(const char *name, long fallback) {
    char text[4096];
    FILE *file = fopen("/proc/cmdline", "r");
    if (file == NULL) return fallback;
    size_t length = fread(text, 1, sizeof text - 1, file);
    fclose(file);
    text[length] = '\0';
    char key[64];
    snprintf(key, sizeof key, "writer.%s=", name);
    for (char *word = strtok(text, " \n"); word != NULL; word = strtok(NULL, " \n")) {
        if (strncmp(word, key, strlen(key)) == 0) return strtol(word + strlen(key), NULL, 10);
    }
    return fallback;
}

static void fill_record(unsigned char *record, uint64_t n) {
    memcpy(record, "VMSTREC1", 8);
    put_u64(record + 8, n);
    put_u64(record + 16, monotonic_ns());
    uint64_t state = n * 0x9E3779B97F4A7C15u + 1; /* xorshift64: never 0 */
    for (size_t at = 24; at < CRC_OFFSET; at++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        record[at] = (unsigned char)state;
    }
    put_u32(record + CRC_OFFSET, crc32_ieee(record, CRC_OFFSET));
}

static void dirty_forever(long mib_per_s, long buffer_mib) {
    size_t buffer_bytes = (size_t)buffer_mib << 20;
    unsigned char *buffer = malloc(buffer_bytes);
    if (buffer == NULL) {
        say("DIRTY_ERROR cannot allocate %ld MiB\n", buffer_mib);
        return;
    }
    size_t pages = buffer_bytes / PAGE_BYTES;
    size_t pages_per_tick = ((size_t)mib_per_s << 20) / PAGE_BYTES * DIRTY_TICK_MS / 1000;
    if (pages_per_tick == 0) pages_per_tick = 1;
    say("DIRTY %ld MiB/s over %ld MiB\n", mib_per_s, buffer_mib);
    size_t page = 0;
    for (unsigned char generation = 1;; generation++) {
        uint64_t tick_start_ns = monotonic_ns();
        for (size_t i = 0; i < pages_per_tick; i++) {
            buffer[page * PAGE_BYTES] = generation;
            page = (page + 1) % pages;
        }
        uint64_t spent_ms = (monotonic_ns() - tick_start_ns) / 1000000u;
        if (spent_ms < DIRTY_TICK_MS) sleep_ms(DIRTY_TICK_MS - (long)spent_ms);
    }
}

static int open_device(void) {
    struct stat info;
    for (long waited_s = 0; stat(DEVICE, &info) != 0; waited_s++) {
        if (waited_s % DEVICE_WAIT_REPORT_S == 0) say("WAITING for " DEVICE " %ld s\n", waited_s);
        sleep_ms(1000);
    }
    int fd;
    while ((fd = open(DEVICE, O_RDWR | O_DIRECT | O_DSYNC)) < 0) {
        say("OPEN_ERROR errno %d\n", errno);
        sleep_ms(1000);
    }
    return fd;
}

int main(void) {
    crc_init();
    long interval_ms = cmdline_option("interval_ms", 5);
    long dirty_mib_per_s = cmdline_option("dirty_mib_per_s", 0);
    long dirty_mib = cmdline_option("dirty_mib", 0);
    if (dirty_mib_per_s > 0 && dirty_mib > 0 && fork() == 0) {
        dirty_forever(dirty_mib_per_s, dirty_mib);
        for (;;) sleep_ms(3600 * 1000);
    }
    int fd = open_device();
    off_t disk_bytes = lseek(fd, 0, SEEK_END);
    unsigned char *record;
    if (posix_memalign((void **)&record, RECORD_BYTES, RECORD_BYTES) != 0) return 1;
    say("WRITER interval %ld ms, disk %lld bytes\n", interval_ms, (long long)disk_bytes);
    for (uint64_t n = 0;; n++) {
        if ((off_t)((n + 1) * RECORD_BYTES) > disk_bytes) {
            say("DISK_FULL %llu\n", (unsigned long long)n);
            for (;;) sleep_ms(3600 * 1000);
        }
        fill_record(record, n);
        for (;;) {
            ssize_t written = pwrite(fd, record, RECORD_BYTES, (off_t)(n * RECORD_BYTES));
            if (written == RECORD_BYTES) break;
            say("WRITE_ERROR %llu errno %d\n", (unsigned long long)n, written < 0 ? errno : -1);
            sleep_ms(interval_ms > 0 ? interval_ms : 1);
        }
        say("ACK %llu\n", (unsigned long long)n);
        if (interval_ms > 0) sleep_ms(interval_ms);
    }
}
