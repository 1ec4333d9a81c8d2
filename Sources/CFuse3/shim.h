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

/// umount2(2) without and with MNT_DETACH (the flag is an enum plus macro in glibc).
static inline int cfuse_umount(const char *path) { return umount2(path, 0); }
static inline int cfuse_umount_detach(const char *path) { return umount2(path, MNT_DETACH); }

#endif
