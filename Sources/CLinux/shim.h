// Linux headers Swift's Glibc module leaves out.
#include <sys/xattr.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>

/* glibc declares syncfs only under _GNU_SOURCE, which Swift's Glibc module is not built with. */
int syncfs(int fd);

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Lowers the calling thread's scheduling priority (Linux applies setpriority to one thread given its tid);
   0 on success. For background work that must not slow what clients wait for. */
static inline int slipway_lower_thread_priority(int niceness) {
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), niceness);
}

/* glibc declares copy_file_range only under _GNU_SOURCE too. */
ssize_t copy_file_range(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t len, unsigned int flags);

/* And sync_file_range, to start writing back a file's dirty pages without waiting. */
#define SLIPWAY_SYNC_FILE_RANGE_WRITE 2
int sync_file_range(int fd, off_t offset, off_t nbytes, unsigned int flags);
