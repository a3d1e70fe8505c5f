/* ddim: diffusers' DDIMScheduler (eta = 0); see ddim.h for the float32 rules it mirrors. */
#include "ddim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "jsonread.h"
#include "nn/elementwise.h"

#ifdef CMDS_CUDA
int ddim_clamp_cuda(nn_ctx *c, float *x, int64_t n, float lo, float hi, cmds_error *err);
#endif

/* torch.linspace(start, end, n, dtype=float32) on the CPU: the step in float, each value
 * start + step*i (lower half) or end - step*(n-1-i) (upper half) rounded once (an FMA). */
static void linspace_f32(float *out, int n, double start_d, double end_d) {
  float start = (float)start_d, end = (float)end_d;
  if (n == 1) {
    out[0] = start;
    return;
  }
  float step = (end - start) / (float)(n - 1);
  int half = n / 2;
  for (int i = 0; i < n; i++)
    out[i] = i < half ? fmaf(step, (float)i, start) : fmaf(-step, (float)(n - 1 - i), end);
}

/* torch.cumprod on the CPU: accumulated in double, each prefix stored as float. */
static void cumprod_f32(float *out, const float *x, int n) {
  double acc = 1.0;
  for (int i = 0; i < n; i++) {
    acc *= (double)x[i];
    out[i] = (float)acc;
  }
}

static double alpha_bar_cos(double t) {
  const double pi = 3.14159265358979323846; /* math.pi */
  double c = cos((t + 0.008) / 1.008 * pi / 2);
  return c * c;
}

/* diffusers' rescale_zero_terminal_snr in float32. */
static void rescale_zero_snr(float *betas, int T) {
  float *a = cmds_xmalloc(sizeof(float) * (size_t)T), *s = cmds_xmalloc(sizeof(float) * (size_t)T);
  for (int i = 0; i < T; i++) a[i] = 1.0f - betas[i];
  cumprod_f32(s, a, T);
  for (int i = 0; i < T; i++) s[i] = sqrtf(s[i]);
  float s0 = s[0], sT = s[T - 1];
  float k = s0 / (s0 - sT);
  for (int i = 0; i < T; i++) s[i] = (s[i] - sT) * k;
  for (int i = 0; i < T; i++) s[i] = s[i] * s[i]; /* alphas_bar */
  a[0] = s[0];
  for (int i = 1; i < T; i++) a[i] = s[i] / s[i - 1];
  for (int i = 0; i < T; i++) betas[i] = 1.0f - a[i];
  free(a);
  free(s);
}

void ddim_free(ddim_scheduler *s) {
  if (!s) return;
  free(s->betas);
  free(s->alphas_cumprod);
  free(s->timesteps);
  memset(s, 0, sizeof(*s));
}

int ddim_load(ddim_scheduler *s, const char *root, const char *subfolder, cmds_error *err) {
  memset(s, 0, sizeof(*s));
  snprintf(s->what, sizeof(s->what), "%s/%s/scheduler_config.json", root, subfolder ? subfolder : "scheduler");
  cmds_jv cfg;
  int rc = cmds_jv_read_file(s->what, &cfg, err);
  if (rc) return rc;
  const char *w = s->what;
  const char *cls = NULL, *schedule = NULL, *spacing = NULL, *pred = NULL;
  int64_t T = 0, offset = 0;
  double beta_start = 0, beta_end = 0, clip_range = 1;
  int clip = 1, one = 1, thresholding = 0, zero_snr = 0;
  double *trained = NULL;
  int n_trained = 0;
  if ((rc = cmds_jv_get_str(&cfg, w, "_class_name", 0, "DDIMScheduler", &cls, err)) ||
      (rc = cmds_jv_get_int(&cfg, w, "num_train_timesteps", 0, 1000, &T, err)) ||
      (rc = cmds_jv_get_num(&cfg, w, "beta_start", 0, 0.0001, &beta_start, err)) ||
      (rc = cmds_jv_get_num(&cfg, w, "beta_end", 0, 0.02, &beta_end, err)) ||
      (rc = cmds_jv_get_str(&cfg, w, "beta_schedule", 0, "linear", &schedule, err)) ||
      (rc = cmds_jv_get_bool(&cfg, w, "clip_sample", 0, 1, &clip, err)) ||
      (rc = cmds_jv_get_num(&cfg, w, "clip_sample_range", 0, 1.0, &clip_range, err)) ||
      (rc = cmds_jv_get_bool(&cfg, w, "set_alpha_to_one", 0, 1, &one, err)) ||
      (rc = cmds_jv_get_int(&cfg, w, "steps_offset", 0, 0, &offset, err)) ||
      (rc = cmds_jv_get_str(&cfg, w, "prediction_type", 0, "epsilon", &pred, err)) ||
      (rc = cmds_jv_get_bool(&cfg, w, "thresholding", 0, 0, &thresholding, err)) ||
      (rc = cmds_jv_get_str(&cfg, w, "timestep_spacing", 0, "leading", &spacing, err)) ||
      (rc = cmds_jv_get_bool(&cfg, w, "rescale_betas_zero_snr", 0, 0, &zero_snr, err)))
    goto done;
  /* schedulers whose step is not DDIM's */
  if (strstr(cls, "LCM") || strstr(cls, "Flow") || strstr(cls, "TCD")) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key '_class_name': %s steps differently from DDIM (only DDIM-style "
                   "schedules of this family are supported)", w, cls);
    goto done;
  }
  if (T < 1 || T > 100000) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'num_train_timesteps': 1..100000 expected, got %lld", w, (long long)T);
    goto done;
  }
  if (thresholding) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'thresholding': true is not supported (dynamic thresholding is a "
                   "pixel-space option; latent diffusion models leave it false)", w);
    goto done;
  }
  s->num_train_timesteps = (int)T;
  s->steps_offset = offset;
  s->clip_sample = clip;
  s->clip_sample_range = (float)clip_range;
  s->set_alpha_to_one = one;
  s->rescale_zero_snr = zero_snr;
  if (!strcmp(pred, "epsilon")) s->prediction = DDIM_PRED_EPSILON;
  else if (!strcmp(pred, "v_prediction")) s->prediction = DDIM_PRED_V;
  else if (!strcmp(pred, "sample")) s->prediction = DDIM_PRED_SAMPLE;
  else {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'prediction_type': epsilon, v_prediction or sample expected, got '%s'",
                   w, pred);
    goto done;
  }
  if (!strcmp(spacing, "leading")) s->spacing = DDIM_SPACING_LEADING;
  else if (!strcmp(spacing, "trailing")) s->spacing = DDIM_SPACING_TRAILING;
  else if (!strcmp(spacing, "linspace")) s->spacing = DDIM_SPACING_LINSPACE;
  else {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'timestep_spacing': leading, trailing or linspace expected, got '%s'",
                   w, spacing);
    goto done;
  }
  s->betas = cmds_xmalloc(sizeof(float) * (size_t)T);
  s->alphas_cumprod = cmds_xmalloc(sizeof(float) * (size_t)T);
  trained = cmds_xmalloc(sizeof(double) * (size_t)T);
  if ((rc = cmds_jv_get_nums(&cfg, w, "trained_betas", 0, (int)T, trained, &n_trained, err))) goto done;
  if (n_trained > 0) {
    if (n_trained != T) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'trained_betas': %lld values expected (num_train_timesteps), got %d",
                     w, (long long)T, n_trained);
      goto done;
    }
    for (int i = 0; i < T; i++) s->betas[i] = (float)trained[i];
  } else if (!strcmp(schedule, "linear")) {
    linspace_f32(s->betas, (int)T, beta_start, beta_end);
  } else if (!strcmp(schedule, "scaled_linear")) {
    linspace_f32(s->betas, (int)T, sqrt(beta_start), sqrt(beta_end));
    for (int i = 0; i < T; i++) s->betas[i] = s->betas[i] * s->betas[i];
  } else if (!strcmp(schedule, "squaredcos_cap_v2")) {
    for (int i = 0; i < T; i++) {
      double t1 = (double)i / (double)T, t2 = (double)(i + 1) / (double)T;
      double b = 1 - alpha_bar_cos(t2) / alpha_bar_cos(t1);
      s->betas[i] = (float)(b < 0.999 ? b : 0.999);
    }
  } else {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'beta_schedule': linear, scaled_linear or squaredcos_cap_v2 expected, "
                   "got '%s'", w, schedule);
    goto done;
  }
  if (zero_snr) rescale_zero_snr(s->betas, (int)T);
  {
    float *alphas = cmds_xmalloc(sizeof(float) * (size_t)T);
    for (int i = 0; i < T; i++) alphas[i] = 1.0f - s->betas[i];
    cumprod_f32(s->alphas_cumprod, alphas, (int)T);
    free(alphas);
  }
  s->final_alpha_cumprod = one ? 1.0f : s->alphas_cumprod[0];
done:
  free(trained);
  cmds_jv_free(&cfg);
  if (rc) {
    char keep[sizeof(s->what)];
    memcpy(keep, s->what, sizeof(keep));
    ddim_free(s);
    memcpy(s->what, keep, sizeof(keep));
  }
  return rc;
}

int ddim_set_timesteps(ddim_scheduler *s, int n, cmds_error *err) {
  const int T = s->num_train_timesteps;
  if (n < 1 || n > T)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %d inference steps asked for; 1..num_train_timesteps (%d) possible",
                     s->what, n, T);
  free(s->timesteps);
  s->timesteps = NULL;
  s->n_inference = n;
  int64_t len = n;
  int64_t *ts = NULL;
  if (s->spacing == DDIM_SPACING_LINSPACE) {
    /* np.linspace(0, T-1, n).round()[::-1]: i * step in double, the last exactly T-1 */
    ts = cmds_xmalloc(sizeof(int64_t) * (size_t)len);
    double step = n > 1 ? (double)(T - 1) / (double)(n - 1) : 0.0;
    for (int i = 0; i < n; i++) {
      double v = (n > 1 && i == n - 1) ? (double)(T - 1) : (double)i * step;
      ts[n - 1 - i] = (int64_t)rint(v);
    }
  } else if (s->spacing == DDIM_SPACING_LEADING) {
    int64_t ratio = T / n;
    ts = cmds_xmalloc(sizeof(int64_t) * (size_t)len);
    for (int i = 0; i < n; i++) ts[n - 1 - i] = (int64_t)i * ratio + s->steps_offset;
  } else {
    /* np.round(np.arange(T, 0, -T / n)) - 1: numpy's length ceil((stop - start) / step) and
     * its fill start + i * (x1 - x0) */
    double ratio = (double)T / (double)n;
    double start = (double)T, delta = -ratio;
    len = (int64_t)ceil((0.0 - start) / delta);
    if (len < 1) len = 1;
    ts = cmds_xmalloc(sizeof(int64_t) * (size_t)len);
    double d = (start + delta) - start;
    for (int64_t i = 0; i < len; i++) {
      double v = i == 0 ? start : i == 1 ? start + delta : start + (double)i * d;
      ts[i] = (int64_t)rint(v) - 1;
    }
  }
  for (int64_t i = 0; i < len; i++)
    if (ts[i] < 0 || ts[i] >= T) {
      long long bad = (long long)ts[i];
      free(ts);
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: %d inference steps give timestep %lld outside 0..%d with this "
                       "timestep_spacing / steps_offset (diffusers would index out of range); choose another "
                       "step count", s->what, n, bad, T - 1);
    }
  s->timesteps = ts;
  s->n_steps = (int)len;
  return CMDS_OK;
}

size_t ddim_step_workspace_bytes(int64_t numel) { return 2 * (((size_t)numel * sizeof(float) + 255) / 256 * 256); }

static int clamp_inplace(nn_ctx *ctx, nn_tensor *x, float r, cmds_error *err) {
  int64_t n = nn_tensor_numel(x);
  float *p = (float *)x->data;
  if (x->device == NN_CPU) {
    for (int64_t i = 0; i < n; i++) p[i] = p[i] < -r ? -r : p[i] > r ? r : p[i];
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return ddim_clamp_cuda(ctx, p, n, -r, r, err);
#else
  (void)ctx;
  return CMDS_FAIL(err, CMDS_EINTERNAL, "ddim_step: a CUDA tensor in a build without CUDA");
#endif
}

static int check_pair(const char *op, const nn_tensor *a, const nn_tensor *b, const nn_tensor *c, nn_ctx *ctx,
                      cmds_error *err) {
  int64_t n = nn_tensor_numel(a);
  const nn_tensor *ts[3] = {a, b, c};
  for (int i = 0; i < 3; i++) {
    if (ts[i]->dtype != NN_F32 || ts[i]->device != ctx->device)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: tensors must be float32 on the context's device (%s)", op,
                       nn_device_name(ctx->device));
    if (nn_tensor_numel(ts[i]) != n) {
      char s1[64], s2[64];
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: shapes %s and %s differ in size", op,
                       nn_tensor_shape_str(a, s1, sizeof(s1)), nn_tensor_shape_str(ts[i], s2, sizeof(s2)));
    }
  }
  return CMDS_OK;
}

int ddim_step(const ddim_scheduler *s, nn_ctx *ctx, nn_tensor *prev, const nn_tensor *model_out, int64_t t,
              const nn_tensor *sample, cmds_error *err) {
  const int T = s->num_train_timesteps;
  if (s->n_inference < 1) return CMDS_FAIL(err, CMDS_EINTERNAL, "ddim_step before ddim_set_timesteps (%s)", s->what);
  if (t < 0 || t >= T)
    return CMDS_FAIL(err, CMDS_EINPUT, "ddim_step: timestep %lld outside 0..%d (%s)", (long long)t, T - 1, s->what);
  int rc = check_pair("ddim_step", sample, model_out, prev, ctx, err);
  if (rc) return rc;
  int64_t pt = t - T / s->n_inference;
  /* 0-dim float32 tensors in diffusers: every coefficient rounded to float */
  float a = s->alphas_cumprod[t];
  float a_prev = pt >= 0 ? s->alphas_cumprod[pt] : s->final_alpha_cumprod;
  float b = 1.0f - a;
  float sa = sqrtf(a), sb = sqrtf(b);
  float sa_prev = sqrtf(a_prev), sb_prev = sqrtf(1.0f - a_prev - 0.0f);
  int64_t n = nn_tensor_numel(sample);
  size_t mark = nn_arena_mark(ctx->scratch);
  nn_tensor x0, eps;
  int64_t shp[1] = {n};
  if ((rc = nn_tensor_alloc(&x0, ctx->scratch, NN_F32, 1, shp, err)) ||
      (rc = nn_tensor_alloc(&eps, ctx->scratch, NN_F32, 1, shp, err)))
    goto out;
  nn_tensor xs = nn_tensor_view(sample->data, NN_F32, ctx->device, n, -1, -1, -1);
  nn_tensor mo = nn_tensor_view(model_out->data, NN_F32, ctx->device, n, -1, -1, -1);
  switch (s->prediction) {
    case DDIM_PRED_EPSILON: /* x0 = (x - sb e) / sa */
      if ((rc = nn_axpby_forward(ctx, &x0, 1.0f, &xs, -sb, &mo, err)) ||
          (rc = nn_axpby_forward(ctx, &x0, 1.0f / sa, &x0, 0.0f, &x0, err)) ||
          (rc = nn_axpby_forward(ctx, &eps, 1.0f, &mo, 0.0f, &mo, err)))
        goto out;
      break;
    case DDIM_PRED_V:
      if ((rc = nn_axpby_forward(ctx, &x0, sa, &xs, -sb, &mo, err)) ||
          (rc = nn_axpby_forward(ctx, &eps, sa, &mo, sb, &xs, err)))
        goto out;
      break;
    case DDIM_PRED_SAMPLE: /* eps = (x - sa x0) / sb */
      if ((rc = nn_axpby_forward(ctx, &x0, 1.0f, &mo, 0.0f, &mo, err)) ||
          (rc = nn_axpby_forward(ctx, &eps, 1.0f, &xs, -sa, &mo, err)) ||
          (rc = nn_axpby_forward(ctx, &eps, 1.0f / sb, &eps, 0.0f, &eps, err)))
        goto out;
      break;
  }
  if (s->clip_sample && (rc = clamp_inplace(ctx, &x0, s->clip_sample_range, err))) goto out;
  {
    nn_tensor pv = nn_tensor_view(prev->data, NN_F32, ctx->device, n, -1, -1, -1);
    rc = nn_axpby_forward(ctx, &pv, sa_prev, &x0, sb_prev, &eps, err);
  }
out:
  nn_arena_rewind(ctx->scratch, mark);
  if (rc) cmds_error_wrap(err, "ddim_step at t=%lld", (long long)t);
  return rc;
}

/* out[b] = ca(t[b]) * p[b] + cb(t[b]) * q[b] with ca/cb from sqrt(a), sqrt(1 - a). */
static int per_item(const ddim_scheduler *s, nn_ctx *ctx, const char *op, nn_tensor *out, const nn_tensor *x0,
                    const nn_tensor *noise, const int64_t *t, int velocity, cmds_error *err) {
  int rc = check_pair(op, x0, noise, out, ctx, err);
  if (rc) return rc;
  int64_t B = x0->ndim > 0 ? x0->shape[0] : 1;
  int64_t per = nn_tensor_numel(x0) / (B > 0 ? B : 1);
  for (int64_t i = 0; i < B; i++) {
    if (t[i] < 0 || t[i] >= s->num_train_timesteps)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: timestep %lld of item %lld outside 0..%d (%s)", op, (long long)t[i],
                       (long long)i, s->num_train_timesteps - 1, s->what);
    float a = s->alphas_cumprod[t[i]];
    float sa = sqrtf(a), sb = sqrtf(1.0f - a);
    size_t off = (size_t)(i * per) * sizeof(float);
    nn_tensor o = nn_tensor_view((char *)out->data + off, NN_F32, ctx->device, per, -1, -1, -1);
    nn_tensor x = nn_tensor_view((char *)x0->data + off, NN_F32, ctx->device, per, -1, -1, -1);
    nn_tensor e = nn_tensor_view((char *)noise->data + off, NN_F32, ctx->device, per, -1, -1, -1);
    rc = velocity ? nn_axpby_forward(ctx, &o, sa, &e, -sb, &x, err) : nn_axpby_forward(ctx, &o, sa, &x, sb, &e, err);
    if (rc) return rc;
  }
  return CMDS_OK;
}

int ddim_add_noise(const ddim_scheduler *s, nn_ctx *ctx, nn_tensor *noisy, const nn_tensor *x0,
                   const nn_tensor *noise, const int64_t *t, cmds_error *err) {
  return per_item(s, ctx, "ddim_add_noise", noisy, x0, noise, t, 0, err);
}

int ddim_velocity(const ddim_scheduler *s, nn_ctx *ctx, nn_tensor *v, const nn_tensor *x0, const nn_tensor *noise,
                  const int64_t *t, cmds_error *err) {
  return per_item(s, ctx, "ddim_velocity", v, x0, noise, t, 1, err);
}
