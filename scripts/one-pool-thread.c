// Preloaded by scripts/with-one-pool-thread (for scripts/test and scripts/test-tag). Swift's cooperative pool
// takes one thread per CPU that sysconf reports, so reporting one makes it a single thread, and a blocking call
// that slipped into async code stalls the run instead of passing on a lucky schedule
// (LIBDISPATCH_COOPERATIVE_POOL_STRICT only stops the pool growing past the CPU count). Only the test bundle
// (*.xctest) sees one CPU: SwiftPM and the compilers load this too and see the real count, and the test process
// drops LD_PRELOAD from its environment at once, so the programs the tests run (slipway, mksquashfs,
// registries) see every CPU as well.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// Whether this process is the test bundle. Asked lazily: libdispatch may count CPUs in a constructor that runs
// before this library's.
static int is_test_bundle(void) {
    static int known = -1;
    if (known >= 0) return known;
    char exe[4096];
    ssize_t length = readlink("/proc/self/exe", exe, sizeof exe - 1);
    size_t suffix = strlen(".xctest");
    known = length > 0 && (size_t)length >= suffix && memcmp(exe + length - suffix, ".xctest", suffix) == 0;
    return known;
}

__attribute__((constructor)) static void keep_children_out(void) {
    if (is_test_bundle()) unsetenv("LD_PRELOAD");
}

long sysconf(int name) {
    static long (*real)(int);
    if (!real) real = (long (*)(int))dlsym(RTLD_NEXT, "sysconf");
    if ((name == _SC_NPROCESSORS_ONLN || name == _SC_NPROCESSORS_CONF) && is_test_bundle()) return 1;
    return real(name);
}
