#include <isa-l/igzip_lib.h>
/* xattr syscalls for the Archive extractor (not exported by the Glibc module) */
#include <sys/xattr.h>
