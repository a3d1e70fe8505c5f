/* dataset: lists a category's samples from the real on-disk layouts.
 *   MVTec 3D-AD: <root>/<cat>/train/good/{rgb,xyz,gt}/NNN.{png,tiff,png},
 *                <root>/<cat>/test/<defect>/{rgb,xyz,gt}/NNN.*
 *   EyeCandies:  <root>/<Cat>/train/data/NNN_{image_4.png,depth.png,info_depth.yaml,pose.txt},
 *                <root>/<Cat>/test_public/data/NN_{..., mask.png}
 * The support set is the first K training samples in sorted file-name order (METHOD.md
 * section 1). Listing is cheap and done by rank 0; the list is broadcast as bytes. */
#ifndef CMDS_PREP_DATASET_H
#define CMDS_PREP_DATASET_H

#include "cmds_error.h"
#include "sample_cache.h"

typedef enum { PREP_MVTEC3D = 0, PREP_EYECANDIES = 1 } prep_format;

typedef struct prep_sample {
  char split[24];                  /* train / test / test_public */
  char folder[CMDS_SC_DEFECT_LEN]; /* MVTec defect folder (good, crack, ...); EyeCandies: data */
  char name[32];                   /* file stem: 000 (MVTec) or the EyeCandies id prefix */
  int group;                       /* 0 support, 1 test */
} prep_sample;

typedef struct prep_list {
  prep_sample *v;
  int n_support, n_test; /* v holds support rows first, then test rows */
} prep_list;

int prep_format_parse(const char *s, prep_format *f);
const char *prep_format_name(prep_format f);

/* The categories: the comma list `given` (--category), else the sorted category folders
 * under root (hidden entries skipped; comm/tasks_file.h cmds_categories). Returns the count
 * (> 0) or -1. */
int prep_list_categories(const char *given, const char *root, char ***names, cmds_error *err);

/* Lists the support (first `shots`) and test samples of one category. Errors name the
 * missing folder/file and the layout that was expected. */
int prep_list_samples(prep_format f, const char *root, const char *category, int shots,
                      prep_list *out, cmds_error *err);
void prep_list_free(prep_list *l);

/* Relative id written to the cache: "test/crack/003", "test_public/data/07". */
void prep_sample_id(prep_format f, const prep_sample *s, char *out, size_t cap);

#endif
