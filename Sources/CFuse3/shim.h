// libfuse 3 low-level API for Swift (module CFuse3).
//
// The API level must be chosen before <fuse_lowlevel.h> is included; 3.12 is the first level with the
// opaque `fuse_loop_config` (Debian 12 ships libfuse 3.14). The inline functions below cover what Swift
// cannot reach directly: macros (`fuse_session_loop_mt` is one on some builds) and bit-fields.
#ifndef SLIPWAY_CFUSE3_SHIM_H
#define SLIPWAY_CFUSE3_SHIM_H

#define FUSE_USE_VERSION 312 /* FUSE_MAKE_VERSION(3, 12) */
#include <fuse_lowlevel.h>

#include <errno.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mount.h>

/// Runs the multi-threaded session loop with at most `max_threads` worker threads (idle workers are kept,
/// libfuse's default). Returns what `fuse_session_loop_mt` returns: 0 after an unmount or an aborted
/// connection, a negative errno on failure, or -ENOMEM if the loop configuration cannot be allocated.
static inline int cfuse_session_loop_mt(struct fuse_session *se, unsigned int max_threads) {
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (config == NULL) {
        return -ENOMEM;
    }
    fuse_loop_cfg_set_clone_fd(config, 0);
    fuse_loop_cfg_set_max_threads(config, max_threads);
    int result = fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
    return result;
}

/// Sets what `open`/`opendir` reply with: the handle and the kernel cache flags (bit-fields in C).
static inline void cfuse_file_info_set(struct fuse_file_info *fi, uint64_t fh, int keep_cache, int cache_readdir) {
    fi->fh = fh;
    fi->direct_io = 0;
    fi->keep_cache = keep_cache ? 1 : 0;
    fi->cache_readdir = cache_readdir ? 1 : 0;
}

/// The handle the kernel passes back with a request, or 0 when there is no file info.
static inline uint64_t cfuse_file_info_fh(const struct fuse_file_info *fi) {
    return fi == NULL ? 0 : fi->fh;
}

/// The `open(2)` flags of a request, or 0 when there is no file info.
static inline int32_t cfuse_file_info_flags(const struct fuse_file_info *fi) {
    return fi == NULL ? 0 : fi->flags;
}

/// FUSE passthrough (Linux 6.9+), which libfuse 3.14 predates: the kernel reads an opened file straight from a
/// backing file the server registered, with no request to the server. The ioctls and flags are the kernel's
/// (include/uapi/linux/fuse.h).
struct cfuse_backing_map {
    uint32_t fd;
    uint32_t flags;
    uint64_t padding;
};

/// Registers `fd` as a backing file on the session's /dev/fuse descriptor: its id (> 0), or -1 with errno.
static inline int cfuse_backing_open(int device, int fd) {
    struct cfuse_backing_map map = {(uint32_t)fd, 0, 0};
    return ioctl(device, _IOW(229, 1, struct cfuse_backing_map), &map);
}

/// Drops the registration (an open file keeps its own reference to the backing file).
static inline int cfuse_backing_close(int device, int backing_id) {
    uint32_t id = (uint32_t)backing_id;
    return ioctl(device, _IOW(229, 2, uint32_t), &id);
}

#define CFUSE_OPCODE_OPEN 14
#define CFUSE_OPCODE_INIT 26
#define CFUSE_INIT_EXT (1u << 30)
/// FUSE_PASSTHROUGH is bit 37 of the 64-bit init flags: bit 5 of flags2.
#define CFUSE_INIT2_PASSTHROUGH (1u << 5)
#define CFUSE_FOPEN_KEEP_CACHE (1u << 1)
#define CFUSE_FOPEN_PASSTHROUGH (1u << 7)

/// umount2(2) without and with MNT_DETACH (the flag is an enum plus macro in glibc).
static inline int cfuse_umount(const char *path) { return umount2(path, 0); }
static inline int cfuse_umount_detach(const char *path) { return umount2(path, MNT_DETACH); }

#endif
