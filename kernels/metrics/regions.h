/* regions: 8-connected components of a binary ground-truth mask (METHOD.md section 1:
 * PRO averages over the 8-connected regions of all test images, as MVTec's evaluation
 * does with scipy.ndimage.label and a 3 x 3 structure of ones).
 * Two-pass labelling with union-find: the first pass gives each foreground pixel the
 * smallest provisional label of its already-visited neighbours (W, NW, N, NE) and unions
 * the others; the second pass resolves to final labels 1..n numbered in raster order of
 * each region's first pixel (scipy's numbering). */
#ifndef CMDS_KERNELS_REGIONS_H
#define CMDS_KERNELS_REGIONS_H

#include <stdint.h>

/* mask: (h, w) bytes, non-zero = foreground. labels: (h, w) out, 0 = background.
 * sizes: if not NULL, receives a malloc'd array of n + 1 entries (sizes[0] unused) with
 * each region's pixel count; the caller frees it. Returns n, the number of regions. */
int32_t cmds_regions_label8(const uint8_t *mask, int h, int w, int32_t *labels,
                            int64_t **sizes);

#endif
