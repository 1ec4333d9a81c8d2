#include <zlib.h>

/* inflateInit2 is a macro over inflateInit2_; Swift imports functions, not macros. */
static inline int slipway_inflate_init2(z_stream *stream, int window_bits) {
    return inflateInit2(stream, window_bits);
}

static inline int slipway_deflate_init2(z_stream *stream, int level, int window_bits) {
    return deflateInit2(stream, level, Z_DEFLATED, window_bits, 9, Z_DEFAULT_STRATEGY);
}
