/* The HDF5 dynamic-plugin entry points for filter 32015 (see h5zstd.h). */
#include <H5PLextern.h>

#include "h5zstd.h"

H5PL_type_t H5PLget_plugin_type(void) { return H5PL_TYPE_FILTER; }
const void *H5PLget_plugin_info(void) { return cmds_h5z_zstd_class; }
