/* h5zstd: see h5zstd.h. Buffers are owned by HDF5, so they are allocated and freed
 * with H5allocate_memory / H5free_memory (a plugin may sit on another allocator). */
#include "h5zstd.h"

#include <zstd.h>

static size_t zstd_filter(unsigned int flags, size_t cd_nelmts, const unsigned int cd_values[],
                          size_t nbytes, size_t *buf_size, void **buf) {
  if (flags & H5Z_FLAG_REVERSE) {
    unsigned long long want = ZSTD_getFrameContentSize(*buf, nbytes);
    if (want == ZSTD_CONTENTSIZE_ERROR) return 0;
    if (want != ZSTD_CONTENTSIZE_UNKNOWN) {
      void *out = H5allocate_memory((size_t)want ? (size_t)want : 1, 0);
      if (!out) return 0;
      size_t got = ZSTD_decompress(out, (size_t)want, *buf, nbytes);
      if (ZSTD_isError(got) || got != want) {
        H5free_memory(out);
        return 0;
      }
      H5free_memory(*buf);
      *buf = out;
      *buf_size = (size_t)want;
      return got;
    }
    /* Frame without a recorded size (streaming writers): decompress growing the output. */
    ZSTD_DStream *ds = ZSTD_createDStream();
    if (!ds) return 0;
    size_t cap = nbytes * 4 + 1024, used = 0;
    unsigned char *out = H5allocate_memory(cap, 0);
    ZSTD_inBuffer in = {*buf, nbytes, 0};
    size_t rc = 1;
    while (out && rc != 0) {
      if (used == cap) {
        size_t ncap = cap * 2;
        unsigned char *grown = H5resize_memory(out, ncap);
        if (!grown) break;
        out = grown;
        cap = ncap;
      }
      ZSTD_outBuffer ob = {out, cap, used};
      rc = ZSTD_decompressStream(ds, &ob, &in);
      used = ob.pos;
      if (ZSTD_isError(rc)) break;
      if (rc != 0 && in.pos == in.size && ob.pos < ob.size) break; /* truncated frame */
    }
    ZSTD_freeDStream(ds);
    if (!out || rc != 0) {
      if (out) H5free_memory(out);
      return 0;
    }
    H5free_memory(*buf);
    *buf = out;
    *buf_size = cap;
    return used;
  }
  int level = cd_nelmts > 0 ? (int)cd_values[0] : CMDS_ZSTD_DEFAULT_LEVEL;
  size_t cap = ZSTD_compressBound(nbytes);
  void *out = H5allocate_memory(cap, 0);
  if (!out) return 0;
  size_t got = ZSTD_compress(out, cap, *buf, nbytes, level);
  if (ZSTD_isError(got)) {
    H5free_memory(out);
    return 0;
  }
  H5free_memory(*buf);
  *buf = out;
  *buf_size = cap;
  return got;
}

const H5Z_class2_t cmds_h5z_zstd_class[1] = {{
    H5Z_CLASS_T_VERS, (H5Z_filter_t)CMDS_H5Z_ZSTD_ID, 1, 1, "zstd (cmds)", NULL, NULL, zstd_filter,
}};

int cmds_h5z_zstd_register(void) {
  htri_t have = H5Zfilter_avail(CMDS_H5Z_ZSTD_ID);
  if (have > 0) return 0;
  return H5Zregister(cmds_h5z_zstd_class) < 0 ? -1 : 0;
}
