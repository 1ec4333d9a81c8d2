// Linux headers Swift's Glibc module leaves out.
#include <sys/xattr.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>

/* glibc declares syncfs only under _GNU_SOURCE, which Swift's Glibc module is not built with. */
int syncfs(int fd);
