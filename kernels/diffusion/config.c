/* config: see config.h. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static char *joinf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *joinf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = cmds_xmalloc((size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

void dfs_component_close(dfs_component *c) {
  if (!c) return;
  if (c->weights_path) cmds_st_close(&c->st);
  cmds_jv_free(&c->config);
  free(c->dir);
  free(c->config_path);
  free(c->weights_path);
  free(c->used);
  memset(c, 0, sizeof *c);
}

int dfs_component_open(dfs_component *c, const char *root, const char *name, const char *variant, int need_weights,
                       cmds_error *err) {
  memset(c, 0, sizeof *c);
  struct stat st;
  c->dir = joinf("%s/%s", root, name);
  if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
    int rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: no such checkpoint folder (a diffusers checkpoint root expected)", root);
    dfs_component_close(c);
    return rc;
  }
  if (stat(c->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    int rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: the checkpoint has no '%s' folder (diffusers layout: %s/%s/config.json)",
                       root, name, root, name);
    dfs_component_close(c);
    return rc;
  }
  c->config_path = joinf("%s/config.json", c->dir);
  if (!file_exists(c->config_path)) {
    free(c->config_path);
    c->config_path = joinf("%s/scheduler_config.json", c->dir);
  }
  if (!file_exists(c->config_path)) {
    int rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: neither config.json nor scheduler_config.json found", c->dir);
    dfs_component_close(c);
    return rc;
  }
  int rc = cmds_jv_read_file(c->config_path, &c->config, err);
  if (!rc && c->config.type != CMDS_JV_OBJ)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: a JSON object expected, got %s", c->config_path,
                   cmds_jv_type_name(c->config.type));
  if (rc) {
    dfs_component_close(c);
    return rc;
  }
  if (!need_weights) return 0;
  static const char *stems[] = {"diffusion_pytorch_model", "model"};
  char tried[1024];
  size_t tl = 0;
  tried[0] = 0;
  for (int pass = 0; pass < 2 && !c->weights_path; pass++) {
    /* pass 0: the variant asked for (or the plain file); pass 1: with no variant asked for, fp16 */
    const char *v = pass == 0 ? variant : (variant ? NULL : "fp16");
    if (pass == 1 && !v) break;
    for (int s = 0; s < 2 && !c->weights_path; s++) {
      char *p = v ? joinf("%s/%s.%s.safetensors", c->dir, stems[s], v) : joinf("%s/%s.safetensors", c->dir, stems[s]);
      if (file_exists(p)) {
        c->weights_path = p;
      } else {
        if (tl < sizeof tried)
          tl += (size_t)snprintf(tried + tl, sizeof tried - tl, "%s%s", tl ? ", " : "", strrchr(p, '/') + 1);
        free(p);
      }
    }
  }
  if (!c->weights_path) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: no weight file (looked for %s; sharded or .bin checkpoints are not read: "
                   "convert them to one safetensors file)", c->dir, tried);
    dfs_component_close(c);
    return rc;
  }
  rc = cmds_st_open(&c->st, c->weights_path, err);
  if (rc) {
    free(c->weights_path);
    c->weights_path = NULL;
    dfs_component_close(c);
    return rc;
  }
  c->used = cmds_xcalloc((size_t)(c->st.n_tensors ? c->st.n_tensors : 1), 1);
  return 0;
}

size_t dfs_component_param_bytes(const dfs_component *c) {
  if (!c->weights_path) return 0;
  size_t total = 0;
  for (int k = 0; k < c->st.n_tensors; k++) {
    const cmds_st_tensor *t = &c->st.tensors[k];
    size_t numel = 1;
    for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
    total += numel * sizeof(float) + 256;
  }
  return total + 4096;
}

int dfs_model_index(const char *root, cmds_jv *out, cmds_error *err) {
  char *p = joinf("%s/model_index.json", root);
  int rc;
  if (!file_exists(p)) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: missing (a diffusers pipeline checkpoint has a model_index.json at its root)", p);
    memset(out, 0, sizeof *out);
  } else {
    rc = cmds_jv_read_file(p, out, err);
    if (!rc && out->type != CMDS_JV_OBJ) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: a JSON object expected", p);
      cmds_jv_free(out);
    }
  }
  free(p);
  return rc;
}

void dfs_loader_init(dfs_loader *L, dfs_component *c, nn_arena *arena) {
  memset(L, 0, sizeof *L);
  L->c = c;
  L->arena = arena;
  if (c->used) memset(c->used, 0, (size_t)(c->st.n_tensors ? c->st.n_tensors : 1));
}

static void note(dfs_loader *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(dfs_loader *L, const char *fmt, ...) {
  char item[384];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(item, sizeof item, fmt, ap);
  va_end(ap);
  size_t need = strlen(item) + 2;
  if (L->report_len + need + 48 >= sizeof L->report) {
    L->n_unreported++;
    return;
  }
  L->report_len += (size_t)snprintf(L->report + L->report_len, sizeof L->report - L->report_len, "%s%s",
                                    L->report_len ? "; " : "", item);
}

static const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
  size_t l = (size_t)snprintf(buf, n, "(");
  for (int d = 0; d < ndim && l < n; d++) l += (size_t)snprintf(buf + l, n - l, d ? ", %lld" : "%lld", (long long)shape[d]);
  if (l < n) snprintf(buf + l, n - l, ")");
  return buf;
}

/* fp32 copy of a stored tensor into dst (host memory). */
static void convert(float *dst, const cmds_st_tensor *t, size_t numel) {
  const unsigned char *src = t->data;
  switch (t->dtype) {
    case CMDS_ST_F32: memcpy(dst, src, numel * 4); break;
    case CMDS_ST_F16: nn_half_to_f32_n(dst, src, (int64_t)numel, NN_F16); break;
    case CMDS_ST_BF16: nn_half_to_f32_n(dst, src, (int64_t)numel, NN_BF16); break;
    case CMDS_ST_F64:
      for (size_t i = 0; i < numel; i++) {
        double d;
        memcpy(&d, src + 8 * i, 8);
        dst[i] = (float)d;
      }
      break;
    default: break;
  }
}

static int zero_fill(nn_tensor *out, cmds_error *err) {
  size_t bytes = nn_tensor_bytes(out);
  if (out->device == NN_CPU) {
    memset(out->data, 0, bytes);
    return 0;
  }
  float *z = cmds_xcalloc(bytes ? bytes : 1, 1);
  nn_tensor h = *out;
  h.device = NN_CPU;
  h.data = z;
  int rc = nn_tensor_copy(out, &h, err);
  free(z);
  return rc;
}

int dfs_load(dfs_loader *L, nn_tensor *out, int ndim, const int64_t *shape, const char *fmt, ...) {
  char name[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  memset(out, 0, sizeof *out);
  if (L->first_code) return L->first_code;
  if (nn_tensor_alloc(out, L->arena, NN_F32, ndim, shape, &L->first)) {
    L->first_code = L->first.code ? L->first.code : CMDS_ENOMEM;
    cmds_error_wrap(&L->first, "%s: loading '%s'", L->c->weights_path ? L->c->weights_path : L->c->dir, name);
    return L->first_code;
  }
  const cmds_st_tensor *t = L->c->weights_path ? cmds_st_find(&L->c->st, name) : NULL;
  char want[128], got[128];
  int ok = 0;
  if (!t) {
    note(L, "missing %s %s", name, shape_str(ndim, shape, want, sizeof want));
  } else {
    L->c->used[t - L->c->st.tensors] = 1;
    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) {
      note(L, "%s has shape %s, %s expected", name, shape_str(t->ndim, t->shape, got, sizeof got),
           shape_str(ndim, shape, want, sizeof want));
    } else if (t->dtype != CMDS_ST_F32 && t->dtype != CMDS_ST_F16 && t->dtype != CMDS_ST_BF16 &&
               t->dtype != CMDS_ST_F64) {
      note(L, "%s has dtype %s, a float type (F32, F16, BF16, F64) expected", name, cmds_st_dtype_name(t->dtype));
    } else {
      ok = 1;
    }
  }
  if (!ok) {
    L->n_bad++;
    if (zero_fill(out, &L->first)) L->first_code = L->first.code;
    return L->first_code;
  }
  size_t numel = (size_t)nn_tensor_numel(out);
  if (out->device == NN_CPU) {
    convert(out->data, t, numel);
  } else {
    float *h = cmds_xmalloc(numel * sizeof(float) + 1);
    convert(h, t, numel);
    nn_tensor hv = *out;
    hv.device = NN_CPU;
    hv.data = h;
    if (nn_tensor_copy(out, &hv, &L->first)) L->first_code = L->first.code;
    free(h);
  }
  L->n_loaded++;
  L->n_params += (int64_t)numel;
  return L->first_code;
}

int dfs_has(const dfs_loader *L, const char *fmt, ...) {
  char name[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  return L->c->weights_path && cmds_st_find(&L->c->st, name) != NULL;
}

int dfs_loader_finish(dfs_loader *L, int strict_unused, cmds_error *err) {
  const char *file = L->c->weights_path ? L->c->weights_path : L->c->dir;
  if (L->first_code) {
    if (err) *err = L->first;
    return L->first_code;
  }
  int n_unused = 0;
  if (strict_unused && L->c->weights_path) {
    for (int k = 0; k < L->c->st.n_tensors; k++) {
      if (L->c->used[k]) continue;
      n_unused++;
      note(L, "unexpected %s", L->c->st.tensors[k].name);
    }
  }
  if (!L->n_bad && !n_unused) return 0;
  /* unexpected tensors mean the weights belong to another configuration */
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: %d tensor(s) do not match the configuration %s: %s%s%.0d%s", file,
                   L->n_bad + n_unused, L->c->config_path, L->report, L->n_unreported ? "; and " : "",
                   L->n_unreported, L->n_unreported ? " more" : "");
}
