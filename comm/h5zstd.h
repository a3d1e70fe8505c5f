/* h5zstd: Zstandard as HDF5 filter 32015 (the registered id; hdf5plugin's Zstd and
 * h5py read what we write and we read what they write). cd_values[0], when present,
 * is the compression level. The same filter is built as an HDF5 plugin
 * (libh5zstd.so) so `HDF5_PLUGIN_PATH=<build>/lib h5dump file.h5` works. */
#ifndef CMDS_H5ZSTD_H
#define CMDS_H5ZSTD_H

#include <hdf5.h>

#define CMDS_H5Z_ZSTD_ID 32015
#define CMDS_ZSTD_DEFAULT_LEVEL 3

extern const H5Z_class2_t cmds_h5z_zstd_class[1];

/* Registers the filter with the HDF5 library (idempotent). Returns 0 or -1. */
int cmds_h5z_zstd_register(void);

#endif
