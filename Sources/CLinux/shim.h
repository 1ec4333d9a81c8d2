// Linux headers Swift's Glibc module leaves out.
#include <sys/xattr.h>
#include <sys/sysmacros.h>
