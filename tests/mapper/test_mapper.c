/* test_mapper: the mapper on the CPU against PyTorch autograd (fixtures from
 * tests/fixtures/gen_mapper.py, float64 reference stored as float32):
 *   forward P, the R (masked) + E stream loss, and every parameter's gradient of their sum:
 *     ||g - g_ref||_2 / ||g_ref||_2 < 1e-4 per parameter tensor (P, loss likewise);
 *   a 10-step AdamW + cosine annealing run: every loss within 1e-3 relative, the lr schedule
 *     to 1e-9, final weights ||w - w_ref|| / ||w_ref|| < 1e-3 per tensor;
 *   for cmds (H = W and H != W) and mlp configurations;
 *   mapper_input_from_f16 against F.interpolate(bicubic) (max abs error 1e-5);
 * and without fixtures: a central finite-difference check of the gradient along a random
 * direction per parameter on a tiny configuration (step 3e-3 along a unit direction,
 * relative 2e-2: the float32 forward limits it), seeded
 * init determinism and bounds, save/load round trip (bit-exact, metadata, two prefixes),
 * and the errors of bad files and configurations (each names the tensor or key).
 *   test_mapper <fixtures/mapper> <scratch dir> */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "mapper.h"
#include "nn.h"
#include "rng.h"
#include "safetensors.h"
#include "safetensors_write.h"

static const char *fixdir, *tmpdir;
static nn_arena scratch;
static nn_ctx cpu;

static void die_on(int rc, const cmds_error *err) {
  if (rc) {
    fprintf(stderr, "%s\n", err->msg);
    exit(1);
  }
}

static const cmds_st_tensor *need(const cmds_st_file *f, const char *name) {
  const cmds_st_tensor *t = cmds_st_find(f, name);
  if (!t) {
    fprintf(stderr, "%s: fixture tensor %s missing\n", f->path, name);
    exit(1);
  }
  return t;
}

static int64_t meta_i(const cmds_st_file *f, const char *k) {
  const char *s = cmds_st_meta(f, k);
  if (!s) {
    fprintf(stderr, "%s: metadata %s missing\n", f->path, k);
    exit(1);
  }
  return strtoll(s, NULL, 10);
}

/* A host tensor holding a copy of fixture tensor `name`. */
static nn_tensor fix_tensor(const cmds_st_file *f, const char *name) {
  const cmds_st_tensor *t = need(f, name);
  size_t n = (size_t)(t->end - t->begin);
  void *p = malloc(n);
  memcpy(p, t->data, n);
  nn_tensor r = nn_tensor_view(p, NN_F32, NN_CPU, t->shape[0], t->ndim > 1 ? t->shape[1] : -1,
                               t->ndim > 2 ? t->shape[2] : -1, t->ndim > 3 ? t->shape[3] : -1);
  return r;
}

static void set_params(mapper_model *m, const cmds_st_file *f, const char *prefix) {
  char name[160];
  for (int i = 0; i < m->nparams; i++) {
    snprintf(name, sizeof name, "%s%s", prefix, m->params[i].name);
    const cmds_st_tensor *t = need(f, name);
    if ((int64_t)(t->end - t->begin) != (int64_t)nn_tensor_bytes(&m->params[i].value)) {
      fprintf(stderr, "%s: %s has the wrong size\n", f->path, name);
      exit(1);
    }
    memcpy(m->params[i].value.data, t->data, nn_tensor_bytes(&m->params[i].value));
  }
}

static float mask_sum(const nn_tensor *mask) {
  double s = 0;
  for (int64_t i = 0; i < nn_tensor_numel(mask); i++) s += ((const float *)mask->data)[i];
  return (float)s;
}

static const float LW[4] = {1.2f, 1.0f, 0.8f, 1.0f};

/* One training step's loss and gradients: R stream (x, T, mask) + E stream (xE, TE). */
static double step_loss(mapper_model *m, mapper_tape *tape, const nn_tensor *x, const nn_tensor *t,
                        const nn_tensor *mask, const nn_tensor *xe, const nn_tensor *te, nn_tensor *p,
                        nn_tensor *dp, double *lr_out, double *le_out) {
  cmds_error err = {0};
  int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3];
  double lr_, le;
  die_on(mapper_forward(m, &cpu, x, p, tape, &err), &err);
  die_on(mapper_loss(&cpu, p, t, mask, m->cfg.layers, LW, (double)mask_sum(mask) + 1e-8, &lr_, dp, &err), &err);
  die_on(mapper_backward(m, &cpu, x, dp, tape, &err), &err);
  die_on(mapper_forward(m, &cpu, xe, p, tape, &err), &err);
  die_on(mapper_loss(&cpu, p, te, NULL, m->cfg.layers, LW, (double)(B * H * W), &le, dp, &err), &err);
  die_on(mapper_backward(m, &cpu, xe, dp, tape, &err), &err);
  if (lr_out) *lr_out = lr_;
  if (le_out) *le_out = le;
  return lr_ + le;
}

static void test_case(const char *name) {
  char path[1024];
  cmds_error err = {0};
  snprintf(path, sizeof path, "%s/%s.safetensors", fixdir, name);
  cmds_st_file f;
  die_on(cmds_st_open(&f, path, &err), &err);
  mapper_config c;
  const char *kind = cmds_st_meta(&f, "kind");
  mapper_config_default(&c, meta_i(&f, "width"), meta_i(&f, "layers"));
  c.kind = kind && !strcmp(kind, "mlp") ? MAPPER_MLP : MAPPER_CMDS;
  c.adapt_groups = meta_i(&f, "adapt_groups");
  c.ca_reduction = meta_i(&f, "ca_reduction");
  c.ca_groups = meta_i(&f, "ca_groups");
  c.sel_hidden = meta_i(&f, "sel_hidden");
  c.proj_hidden = meta_i(&f, "proj_hidden");
  c.mlp_hidden = meta_i(&f, "mlp_hidden");
  int64_t B = meta_i(&f, "B"), H = meta_i(&f, "H"), W = meta_i(&f, "W"), steps = meta_i(&f, "steps");
  mapper_model m;
  die_on(mapper_init(&m, &c, 0, NN_CPU, &err), &err);
  set_params(&m, &f, "param.");
  nn_tensor x = fix_tensor(&f, "x"), t = fix_tensor(&f, "T"), mask = fix_tensor(&f, "mask"),
            xe = fix_tensor(&f, "xE"), te = fix_tensor(&f, "TE"), pref = fix_tensor(&f, "P");
  nn_tensor p = fix_tensor(&f, "P"), dp = fix_tensor(&f, "P");
  mapper_tape *tape = mapper_tape_new(&c, B, H, W, NN_CPU, &err);
  die_on(!tape, &err);

  /* inference forward (no tape) */
  memset(p.data, 0, nn_tensor_bytes(&p));
  die_on(mapper_forward(&m, &cpu, &x, &p, NULL, &err), &err);
  double e = check_rel_l2(p.data, pref.data, nn_tensor_numel(&p));
  CHECK(e < 1e-5, "%s: P rel error %.3g", name, e);

  /* loss and gradients */
  double lr_, le;
  mapper_zero_grad(&m);
  step_loss(&m, tape, &x, &t, &mask, &xe, &te, &p, &dp, &lr_, &le);
  const double *want_r = need(&f, "loss_R")->data, *want_e = need(&f, "loss_E")->data;
  CHECK_CLOSE(lr_, want_r[0], 0, 1e-5, "loss R");
  CHECK_CLOSE(le, want_e[0], 0, 1e-5, "loss E");
  double worst = 0;
  for (int i = 0; i < m.nparams; i++) {
    char gname[160];
    snprintf(gname, sizeof gname, "grad.%s", m.params[i].name);
    const cmds_st_tensor *g = need(&f, gname);
    double r = check_rel_l2(m.params[i].grad.data, g->data, nn_tensor_numel(&m.params[i].grad));
    CHECK(r < 1e-4, "%s: grad %s rel error %.3g", name, m.params[i].name, r);
    if (r > worst) worst = r;
  }
  printf("%s: P %.2g, loss R %.10g E %.10g, worst gradient rel error %.3g over %d tensors\n", name, e,
         lr_, le, worst, m.nparams);

  /* 10 steps of AdamW with cosine annealing */
  set_params(&m, &f, "param.");
  mapper_adamw opt;
  die_on(mapper_adamw_init(&opt, &m, 1e-4f, &err), &err);
  const double *losses = need(&f, "losses")->data, *lrs = need(&f, "lrs")->data;
  double worst_loss = 0;
  for (int64_t s = 0; s < steps; s++) {
    double lr = mapper_cosine_lr(s, steps, 1e-3, 1e-5);
    CHECK_CLOSE(lr, lrs[s], 0, 1e-9, "cosine lr");
    mapper_zero_grad(&m);
    double loss = step_loss(&m, tape, &x, &t, &mask, &xe, &te, &p, &dp, NULL, NULL);
    double r = fabs(loss - losses[s]) / fabs(losses[s]);
    CHECK(r < 1e-3, "%s: step %lld loss %.10g want %.10g", name, (long long)s, loss, losses[s]);
    if (r > worst_loss) worst_loss = r;
    die_on(mapper_adamw_step(&opt, &m, &cpu, (float)lr, &err), &err);
  }
  CHECK(opt.step == steps, "adamw step count %lld", (long long)opt.step);
  double worst_w = 0;
  for (int i = 0; i < m.nparams; i++) {
    char fname[160];
    snprintf(fname, sizeof fname, "final.%s", m.params[i].name);
    double r = check_rel_l2(m.params[i].value.data, need(&f, fname)->data, nn_tensor_numel(&m.params[i].value));
    CHECK(r < 1e-3, "%s: final %s rel error %.3g", name, m.params[i].name, r);
    if (r > worst_w) worst_w = r;
  }
  printf("%s: %lld AdamW steps, worst loss rel error %.3g, worst final weight rel error %.3g\n", name,
         (long long)steps, worst_loss, worst_w);
  mapper_adamw_free(&opt);
  mapper_tape_free(tape);
  mapper_free(&m);
  free(x.data), free(t.data), free(mask.data), free(xe.data), free(te.data), free(pref.data);
  free(p.data), free(dp.data);
  cmds_st_close(&f);
}

static void test_input(void) {
  char path[1024];
  cmds_error err = {0};
  snprintf(path, sizeof path, "%s/resize.safetensors", fixdir);
  cmds_st_file f;
  die_on(cmds_st_open(&f, path, &err), &err);
  const char *cases[2] = {"up", "copy"};
  for (int k = 0; k < 2; k++) {
    char n1[64], n2[64];
    snprintf(n1, sizeof n1, "%s.rows", cases[k]);
    snprintf(n2, sizeof n2, "%s.x", cases[k]);
    const cmds_st_tensor *rows = need(&f, n1), *want = need(&f, n2);
    nn_tensor x = fix_tensor(&f, n2);
    memset(x.data, 0, nn_tensor_bytes(&x));
    die_on(mapper_input_from_f16(&cpu, &x, rows->data, rows->shape[0], rows->shape[1], rows->shape[2],
                                 rows->shape[4], &err), &err);
    double mx = 0;
    for (int64_t i = 0; i < nn_tensor_numel(&x); i++)
      mx = fmax(mx, fabs(((float *)x.data)[i] - ((const float *)want->data)[i]));
    CHECK(mx < 1e-5, "input %s: max abs error %.3g", cases[k], mx);
    free(x.data);
  }
  cmds_st_close(&f);
}

static void tiny_config(mapper_config *c) {
  mapper_config_default(c, 4, 2);
  c->adapt_groups = 2;
  c->ca_reduction = 1;
  c->ca_groups = 2;
  c->sel_hidden = 3;
  c->proj_hidden = 6;
}

static nn_tensor rand_tensor(cmds_rng *r, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
  nn_tensor t = nn_tensor_view(NULL, NN_F32, NN_CPU, d0, d1, d2, d3);
  t.data = malloc(nn_tensor_bytes(&t));
  for (int64_t i = 0; i < nn_tensor_numel(&t); i++) ((float *)t.data)[i] = (float)cmds_rng_normal(r);
  return t;
}

static double fd_loss(mapper_model *m, const nn_tensor *x, const nn_tensor *t, const nn_tensor *mask,
                      nn_tensor *p) {
  cmds_error err = {0};
  double l;
  die_on(mapper_forward(m, &cpu, x, p, NULL, &err), &err);
  die_on(mapper_loss(&cpu, p, t, mask, m->cfg.layers, LW, mask_sum(mask) + 1e-8, &l, NULL, &err), &err);
  return l;
}

/* Directional derivative along a random unit-scale direction per parameter tensor. */
static void test_finite_differences(mapper_kind kind) {
  cmds_error err = {0};
  mapper_config c;
  tiny_config(&c);
  c.kind = kind;
  c.mlp_hidden = 5;
  int64_t B = 2, H = 3, W = 4, C = c.width * c.layers;
  mapper_model m;
  die_on(mapper_init(&m, &c, 11, NN_CPU, &err), &err);
  cmds_rng r;
  cmds_rng_seed(&r, 98);
  /* GroupNorm weights away from 1 and biases away from 0, so their gradients are generic */
  for (int i = 0; i < m.nparams; i++)
    if (strstr(m.params[i].name, "norm"))
      for (int64_t j = 0; j < nn_tensor_numel(&m.params[i].value); j++)
        ((float *)m.params[i].value.data)[j] += (float)(0.3 * cmds_rng_normal(&r));
  nn_tensor x = rand_tensor(&r, B, C, H, W), t = rand_tensor(&r, B, C, H, W), p = rand_tensor(&r, B, C, H, W),
            dp = rand_tensor(&r, B, C, H, W), mask = rand_tensor(&r, B, H, W, -1);
  for (int64_t i = 0; i < nn_tensor_numel(&mask); i++) ((float *)mask.data)[i] = ((float *)mask.data)[i] > 0 ? 1.0f : 0.0f;
  mapper_tape *tape = mapper_tape_new(&c, B, H, W, NN_CPU, &err);
  die_on(!tape, &err);
  double l;
  mapper_zero_grad(&m);
  die_on(mapper_forward(&m, &cpu, &x, &p, tape, &err), &err);
  die_on(mapper_loss(&cpu, &p, &t, &mask, c.layers, LW, mask_sum(&mask) + 1e-8, &l, &dp, &err), &err);
  die_on(mapper_backward(&m, &cpu, &x, &dp, tape, &err), &err);
  const double h = 3e-3;
  double worst = 0;
  for (int i = 0; i < m.nparams; i++) {
    mapper_param *pp = &m.params[i];
    int64_t n = nn_tensor_numel(&pp->value);
    float *v = pp->value.data, *g = pp->grad.data;
    float *orig = malloc((size_t)n * sizeof(float)), *dir = malloc((size_t)n * sizeof(float));
    memcpy(orig, v, (size_t)n * sizeof(float));
    /* direction: the unit gradient plus a random unit vector, normalised (a strong signal
     * that still probes components other than the gradient's own) */
    double gn = 0, rn = 0, dn = 0, gd = 0;
    for (int64_t j = 0; j < n; j++) {
      dir[j] = (float)cmds_rng_normal(&r);
      gn += (double)g[j] * g[j];
      rn += (double)dir[j] * dir[j];
    }
    gn = sqrt(gn) + 1e-30, rn = sqrt(rn);
    for (int64_t j = 0; j < n; j++) {
      dir[j] = (float)(g[j] / gn + dir[j] / rn);
      dn += (double)dir[j] * dir[j];
    }
    for (int64_t j = 0; j < n; j++) {
      dir[j] = (float)(dir[j] / sqrt(dn));
      gd += (double)g[j] * dir[j];
    }
    for (int64_t j = 0; j < n; j++) v[j] = orig[j] + (float)h * dir[j];
    double lp = fd_loss(&m, &x, &t, &mask, &p);
    for (int64_t j = 0; j < n; j++) v[j] = orig[j] - (float)h * dir[j];
    double lm = fd_loss(&m, &x, &t, &mask, &p);
    memcpy(v, orig, (size_t)n * sizeof(float));
    double fd = (lp - lm) / (2 * h), rel = fabs(fd - gd) / fmax(fabs(fd), 1e-3);
    CHECK(rel < 2e-2, "finite differences %s: analytic %.6g numeric %.6g", pp->name, gd, fd);
    if (rel > worst) worst = rel;
    free(orig);
    free(dir);
  }
  printf("finite differences (%s): worst rel difference %.3g over %d tensors\n", kind == MAPPER_MLP ? "mlp" : "cmds",
         worst, m.nparams);
  mapper_tape_free(tape);
  mapper_free(&m);
  free(x.data), free(t.data), free(p.data), free(dp.data), free(mask.data);
}

static void test_init(void) {
  cmds_error err = {0};
  mapper_config c;
  tiny_config(&c);
  mapper_model a, b, d;
  die_on(mapper_init(&a, &c, 7, NN_CPU, &err), &err);
  die_on(mapper_init(&b, &c, 7, NN_CPU, &err), &err);
  die_on(mapper_init(&d, &c, 8, NN_CPU, &err), &err);
  int same = 1, differ = 0, inside = 1;
  for (int i = 0; i < a.nparams; i++) {
    size_t n = nn_tensor_bytes(&a.params[i].value);
    same &= !memcmp(a.params[i].value.data, b.params[i].value.data, n);
    differ |= !!memcmp(a.params[i].value.data, d.params[i].value.data, n);
    const mapper_param *p = &a.params[i];
    if (p->value.ndim == 4) {
      double bound = 1.0 / sqrt((double)(p->value.shape[1] * p->value.shape[2] * p->value.shape[3]));
      for (int64_t j = 0; j < nn_tensor_numel(&p->value); j++) inside &= fabs(((float *)p->value.data)[j]) <= bound;
    }
  }
  CHECK(same, "same seed, same weights");
  CHECK(differ, "another seed, other weights");
  CHECK(inside, "conv weights within +-1/sqrt(fan_in)");
  CHECK(a.nparams == 4 * 2 + 16, "cmds has %d parameter tensors", a.nparams);
  CHECK(mapper_find(&a, "selector.conv1.weight") == &a.params[4 * 2 + 8], "param order");
  CHECK(mapper_find(&a, "no.such") == NULL, "find missing");
  int64_t M = 8, n = 2 * (4 * 4 + 4 + 4 + 4) + (8 * M + M) + 2 * M + 2 * (M * 8 + 8) + (3 * 8 * 9 + 3) +
                     (2 * 3 + 2) + (6 * 4 + 6) + (8 * 6 + 8);
  CHECK(mapper_numel(&a) == n, "numel %lld want %lld", (long long)mapper_numel(&a), (long long)n);
  die_on(mapper_copy(&d, &a, &err), &err);
  CHECK(!memcmp(d.params[3].value.data, a.params[3].value.data, nn_tensor_bytes(&a.params[3].value)), "copy");
  mapper_free(&a), mapper_free(&b), mapper_free(&d);

  /* configuration errors name the key */
  const struct {
    const char *key;
    int64_t *field;
    int64_t bad;
  } cases[] = {{"mapper.adapt_groups", &c.adapt_groups, 3}, {"mapper.ca_groups", &c.ca_groups, 3},
               {"mapper.ca_reduction", &c.ca_reduction, 0}, {"mapper.sel_hidden", &c.sel_hidden, 0},
               {"mapper.layers", &c.layers, 13}, {"mapper.width", &c.width, 0}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    tiny_config(&c);
    *cases[k].field = cases[k].bad;
    int rc = mapper_config_check(&c, &err);
    CHECK(rc == CMDS_EINPUT && strstr(err.msg, cases[k].key), "config %s: rc %d msg %s", cases[k].key, rc, err.msg);
  }
  mapper_config_default(&c, 768, 3);
  CHECK(mapper_config_check(&c, &err) == 0, "defaults valid: %s", err.msg);
}

static void test_files(void) {
  cmds_error err = {0};
  char path[1024], bad[1024];
  mapper_config c;
  tiny_config(&c);
  mapper_model a, b, back;
  die_on(mapper_init(&a, &c, 1, NN_CPU, &err), &err);
  die_on(mapper_init(&b, &c, 2, NN_CPU, &err), &err);
  snprintf(path, sizeof path, "%s/mapper_roundtrip.safetensors", tmpdir);
  const mapper_model *models[2] = {&a, &b};
  const char *prefixes[2] = {"rgb_to_3d.", "3d_to_rgb."};
  const char *extra[4] = {"mapper.resolution", "224", "note", "quote \" and \\ kept"};
  die_on(mapper_save(models, prefixes, 2, extra, 2, path, &err), &err);
  for (int k = 0; k < 2; k++) {
    die_on(mapper_load(&back, path, prefixes[k], NN_CPU, &err), &err);
    int same = back.nparams == models[k]->nparams;
    for (int i = 0; same && i < back.nparams; i++)
      same = !strcmp(back.params[i].name, models[k]->params[i].name) &&
             !memcmp(back.params[i].value.data, models[k]->params[i].value.data,
                     nn_tensor_bytes(&back.params[i].value));
    CHECK(same, "round trip %s bit-exact", prefixes[k]);
    CHECK(back.cfg.ca_groups == c.ca_groups && back.cfg.proj_hidden == 6 && back.cfg.kind == MAPPER_CMDS,
          "config from metadata");
    mapper_free(&back);
  }
  cmds_st_file f;
  die_on(cmds_st_open(&f, path, &err), &err);
  const char *res = cmds_st_meta(&f, "mapper.resolution"), *note = cmds_st_meta(&f, "note");
  CHECK(res && !strcmp(res, "224"), "extra metadata");
  CHECK(note && !strcmp(note, extra[3]), "escaped metadata: %s", note ? note : "(none)");
  CHECK(f.n_tensors == 2 * a.nparams, "tensor count %d", f.n_tensors);

  /* rewrite the file with one change: tensor `skip` left out, `reshape` given a wrong shape,
   * metadata key `mkey` set to `mval` (or dropped when mval is NULL) */
  struct {
    const char *skip, *reshape, *mkey, *mval, *want;
  } cases[] = {
      {"rgb_to_3d.coord.conv_h.bias", NULL, NULL, NULL, "rgb_to_3d.coord.conv_h.bias"},
      {NULL, "rgb_to_3d.selector.conv1.weight", NULL, NULL, "rgb_to_3d.selector.conv1.weight"},
      {NULL, NULL, "mapper.ca_groups", "3", "mapper.ca_groups"},
      {NULL, NULL, "mapper.sel_hidden", "many", "mapper.sel_hidden"},
      {NULL, NULL, "mapper.width", NULL, "mapper.width"},
      {NULL, NULL, "mapper.kind", "transformer", "mapper.kind"},
      {NULL, NULL, "cmds_schema_version", "2", "cmds_schema"},
  };
  snprintf(bad, sizeof bad, "%s/mapper_bad.safetensors", tmpdir);
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    cmds_st_out *t = calloc((size_t)f.n_tensors, sizeof *t);
    int n = 0;
    for (int i = 0; i < f.n_tensors; i++) {
      const cmds_st_tensor *s = &f.tensors[i];
      if (cases[k].skip && !strcmp(s->name, cases[k].skip)) continue;
      t[n].name = s->name;
      t[n].dtype = s->dtype;
      t[n].ndim = s->ndim;
      memcpy(t[n].shape, s->shape, sizeof t[n].shape);
      if (cases[k].reshape && !strcmp(s->name, cases[k].reshape)) {
        t[n].shape[0] = s->shape[1]; /* same bytes, wrong shape */
        t[n].shape[1] = s->shape[0];
      }
      t[n].data = s->data;
      n++;
    }
    const char **kv = calloc((size_t)(2 * f.n_meta), sizeof *kv);
    int nm = 0;
    for (int i = 0; i < f.n_meta; i++) {
      const char *v = f.meta_values[i];
      if (cases[k].mkey && !strcmp(f.meta_keys[i], cases[k].mkey)) {
        if (!cases[k].mval) continue;
        v = cases[k].mval;
      }
      kv[2 * nm] = f.meta_keys[i];
      kv[2 * nm + 1] = v;
      nm++;
    }
    die_on(cmds_st_write(bad, t, n, kv, nm, &err), &err);
    int rc = mapper_load(&back, bad, "rgb_to_3d.", NN_CPU, &err);
    CHECK((rc == CMDS_EINPUT || rc == CMDS_ESCHEMA) && strstr(err.msg, cases[k].want) && strstr(err.msg, "mapper_bad"),
          "bad file case %zu: rc %d, message '%s' should name %s and the file", k, rc, err.msg, cases[k].want);
    if (!rc) mapper_free(&back);
    free(t);
    free(kv);
  }
  cmds_st_close(&f);
  int rc = mapper_load(&back, path, "2d_to_3d.", NN_CPU, &err);
  CHECK(rc == CMDS_EINPUT && strstr(err.msg, "2d_to_3d.adapt.0.conv.weight"), "wrong prefix: %s", err.msg);
  snprintf(bad, sizeof bad, "%s/no_such_dir/m.safetensors", tmpdir);
  rc = mapper_load(&back, bad, "rgb_to_3d.", NN_CPU, &err);
  CHECK(rc != 0 && strstr(err.msg, "no_such_dir"), "missing file: %s", err.msg);
  remove(path);
  snprintf(bad, sizeof bad, "%s/mapper_bad.safetensors", tmpdir);
  remove(bad);
  mapper_free(&a), mapper_free(&b);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: test_mapper <fixtures/mapper> <scratch dir>\n");
    return 2;
  }
  fixdir = argv[1];
  tmpdir = argv[2];
  cmds_error err = {0};
  die_on(nn_arena_init(&scratch, NN_CPU, (size_t)64 << 20, &err), &err);
  die_on(nn_ctx_init(&cpu, NN_CPU, &scratch, NULL, 0, &err), &err);
  test_case("cmds_sq");
  test_case("cmds_rect");
  test_case("mlp");
  test_input();
  test_finite_differences(MAPPER_CMDS);
  test_finite_differences(MAPPER_MLP);
  test_init();
  test_files();
  nn_ctx_free(&cpu);
  nn_arena_free(&scratch);
  return CHECK_DONE();
}
