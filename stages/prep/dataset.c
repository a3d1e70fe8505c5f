/* dataset: see dataset.h. */
#include "dataset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"
#include "tasks_file.h"

int prep_format_parse(const char *s, prep_format *f) {
  if (!strcmp(s, "mvtec3d")) *f = PREP_MVTEC3D;
  else if (!strcmp(s, "eyecandies")) *f = PREP_EYECANDIES;
  else return -1;
  return 0;
}

const char *prep_format_name(prep_format f) { return f == PREP_MVTEC3D ? "mvtec3d" : "eyecandies"; }

int prep_list_categories(const char *given, const char *root, char ***names, cmds_error *err) {
  *names = NULL;
  if (!given && !cmds_is_dir(root)) {
    CMDS_FAIL(err, CMDS_EINPUT, "%s: dataset root is not a folder", root);
    return -1;
  }
  return cmds_categories(given, root, NULL, NULL, "category folders in the dataset root", names, err);
}

static void push(prep_list *l, int *cap, const char *split, const char *folder, const char *name,
                 int group) {
  int n = l->n_support + l->n_test;
  if (n == *cap) {
    *cap = *cap ? *cap * 2 : 64;
    l->v = cmds_xrealloc(l->v, (size_t)*cap * sizeof *l->v);
  }
  prep_sample *s = &l->v[n];
  memset(s, 0, sizeof *s);
  snprintf(s->split, sizeof s->split, "%s", split);
  snprintf(s->folder, sizeof s->folder, "%s", folder);
  snprintf(s->name, sizeof s->name, "%s", name);
  s->group = group;
  if (group == 0) l->n_support++;
  else l->n_test++;
}

/* Strips `suffix` from every name in place (names all end with it). */
static void strip_suffix(char **names, int n, const char *suffix) {
  size_t sl = strlen(suffix);
  for (int i = 0; i < n; i++) names[i][strlen(names[i]) - sl] = 0;
}

static int check_name(const char *dir, const char *name, size_t cap, cmds_error *err) {
  if (strlen(name) >= cap)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s/%s: file name too long for the cache (max %zu)", dir,
                     name, cap - 1);
  return CMDS_OK;
}

static int list_mvtec(const char *root, const char *cat, int shots, prep_list *l, int *cap,
                      cmds_error *err) {
  char dir[4096];
  char **names = NULL;
  cmds_path_join(dir, sizeof dir, root, cat, "train/good", "rgb");
  if (!cmds_is_dir(dir))
    return CMDS_FAIL(err, CMDS_EINPUT,
                     "%s: missing folder (MVTec 3D-AD layout: <category>/train/good/{rgb,xyz})", dir);
  int n = cmds_list_dir(dir, ".png", 1, &names, err);
  if (n < 0) return err->code;
  if (n < shots) {
    cmds_free_list(names, n);
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %d training images, the support set needs %d", dir, n,
                     shots);
  }
  strip_suffix(names, n, ".png");
  int rc = CMDS_OK;
  for (int i = 0; i < shots && !rc; i++) {
    rc = check_name(dir, names[i], sizeof l->v->name, err);
    if (!rc) push(l, cap, "train", "good", names[i], 0);
  }
  cmds_free_list(names, n);
  if (rc) return rc;

  cmds_path_join(dir, sizeof dir, root, cat, "test", NULL);
  if (!cmds_is_dir(dir))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: missing folder (MVTec 3D-AD layout: <category>/test/<defect>/{rgb,xyz,gt})", dir);
  char **types = NULL;
  int nt = cmds_list_dir(dir, NULL, 2, &types, err);
  if (nt < 0) return err->code;
  for (int t = 0; t < nt && !rc; t++) {
    char sub[4096];
    cmds_path_join(sub, sizeof sub, dir, types[t], "rgb", NULL);
    if (!cmds_is_dir(sub)) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: missing folder (each test/<defect> holds rgb, xyz, gt)", sub);
      break;
    }
    if (strlen(types[t]) >= CMDS_SC_DEFECT_LEN) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: defect folder name longer than %d characters", sub,
                     CMDS_SC_DEFECT_LEN - 1);
      break;
    }
    int m = cmds_list_dir(sub, ".png", 1, &names, err);
    if (m < 0) {
      rc = err->code;
      break;
    }
    strip_suffix(names, m, ".png");
    for (int i = 0; i < m && !rc; i++) {
      rc = check_name(sub, names[i], sizeof l->v->name, err);
      if (!rc) push(l, cap, "test", types[t], names[i], 1);
    }
    cmds_free_list(names, m);
  }
  cmds_free_list(types, nt);
  return rc;
}

static int list_eyecandies(const char *root, const char *cat, int shots, prep_list *l, int *cap,
                           cmds_error *err) {
  static const char *const splits[2] = {"train", "test_public"};
  for (int g = 0; g < 2; g++) {
    char dir[4096];
    char **names = NULL;
    cmds_path_join(dir, sizeof dir, root, cat, splits[g], "data");
    if (!cmds_is_dir(dir))
      return CMDS_FAIL(err, CMDS_EINPUT,
                       "%s: missing folder (EyeCandies layout: <Category>/{train,test_public}/data)", dir);
    int n = cmds_list_dir(dir, "_depth.png", 1, &names, err);
    if (n < 0) return err->code;
    strip_suffix(names, n, "_depth.png");
    int take = g == 0 ? shots : n;
    int rc = CMDS_OK;
    if (n < take)
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: %d training samples (*_depth.png), the support set needs %d",
                     dir, n, shots);
    for (int i = 0; i < take && !rc; i++) {
      rc = check_name(dir, names[i], sizeof l->v->name, err);
      if (!rc) push(l, cap, splits[g], "data", names[i], g);
    }
    cmds_free_list(names, n);
    if (rc) return rc;
  }
  return CMDS_OK;
}

int prep_list_samples(prep_format f, const char *root, const char *category, int shots,
                      prep_list *out, cmds_error *err) {
  memset(out, 0, sizeof *out);
  char dir[4096];
  cmds_path_join(dir, sizeof dir, root, category, NULL, NULL);
  if (!cmds_is_dir(dir)) return CMDS_FAIL(err, CMDS_EINPUT, "%s: category folder not found", dir);
  int cap = 0;
  int rc = f == PREP_MVTEC3D ? list_mvtec(root, category, shots, out, &cap, err)
                             : list_eyecandies(root, category, shots, out, &cap, err);
  if (!rc && out->n_test == 0)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: empty category: no test samples found (%s layout)", dir,
                   prep_format_name(f));
  if (rc) prep_list_free(out);
  return rc;
}

void prep_list_free(prep_list *l) {
  free(l->v);
  memset(l, 0, sizeof *l);
}

void prep_sample_id(prep_format f, const prep_sample *s, char *out, size_t cap) {
  snprintf(out, cap, "%s/%s/%s", s->split, s->folder, s->name);
  (void)f;
}
