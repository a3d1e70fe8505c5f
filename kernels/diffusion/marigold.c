/* marigold: diffusers' MarigoldNormalsPipeline on our modules; see marigold.h. */
#include "marigold.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clip.h"
#include "config.h"
#include "jsonread.h"
#include "nn/elementwise.h"
#include "nn/resize.h"
#include "rng.h"

#define ALIGN256(x) (((size_t)(x) + 255) / 256 * 256)

marigold_opts marigold_opts_default(void) {
  marigold_opts o;
  memset(&o, 0, sizeof(o));
  o.steps = 0;
  o.processing_res = -1;
  o.ensemble_size = 1;
  o.match_input_res = 1;
  o.reduction = MARIGOLD_CLOSEST;
  return o;
}

/* ---- host image operations -------------------------------------------------------------- */

/* One axis of torch's antialiased bilinear weights (_compute_indices_min_size_weights_aa with
 * scalar_t = float, including its float / double promotions). w: (out, maxk). */
typedef struct aa_axis {
  int maxk;
  int *xmin, *xsize;
  float *w;
} aa_axis;

static float aa_triangle(float x) {
  if (x < 0) x = -x;
  return x < 1.0 ? (float)(1.0 - x) : 0.0f;
}

static void aa_axis_build(aa_axis *a, int in, int out) {
  float scale = (float)in / (float)out;
  float support = scale >= 1.0 ? (float)(1.0 * scale) : 1.0f;
  a->maxk = (int)ceil(support) * 2 + 1;
  a->xmin = cmds_xmalloc(sizeof(int) * (size_t)out);
  a->xsize = cmds_xmalloc(sizeof(int) * (size_t)out);
  a->w = cmds_xcalloc((size_t)out * (size_t)a->maxk, sizeof(float));
  float invscale = scale >= 1.0 ? (float)(1.0 / scale) : 1.0f;
  for (int i = 0; i < out; i++) {
    float center = (float)(scale * ((double)i + 0.5));
    int64_t xmin = (int64_t)((double)(center - support) + 0.5);
    if (xmin < 0) xmin = 0;
    int64_t xmax = (int64_t)((double)(center + support) + 0.5);
    if (xmax > in) xmax = in;
    int64_t xs = xmax - xmin;
    if (xs < 0) xs = 0;
    if (xs > a->maxk) xs = a->maxk;
    float *w = a->w + (size_t)i * (size_t)a->maxk, total = 0.0f;
    for (int64_t j = 0; j < xs; j++) {
      float d = (float)(j + xmin) - center; /* int64 - float in float */
      w[j] = aa_triangle((float)(((double)d + 0.5) * (double)invscale));
      total += w[j];
    }
    if (total != 0.0f)
      for (int64_t j = 0; j < xs; j++) w[j] /= total;
    a->xmin[i] = (int)xmin;
    a->xsize[i] = (int)xs;
  }
}

static void aa_axis_free(aa_axis *a) {
  free(a->xmin);
  free(a->xsize);
  free(a->w);
}

void marigold_resize_bilinear_aa(const float *x, int C, int ih, int iw, float *y, int oh, int ow) {
  aa_axis ax, ay;
  aa_axis_build(&ax, iw, ow);
  aa_axis_build(&ay, ih, oh);
  float *tmp = cmds_xmalloc(sizeof(float) * (size_t)C * (size_t)ih * (size_t)ow);
  /* along W (torch's "horizontal" pass first), then along H; sums in float in tap order */
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < (int64_t)C * ih; r++) {
    const float *src = x + r * iw;
    float *dst = tmp + r * ow;
    for (int j = 0; j < ow; j++) {
      const float *w = ax.w + (size_t)j * (size_t)ax.maxk;
      const float *s = src + ax.xmin[j];
      float acc = s[0] * w[0];
      for (int k = 1; k < ax.xsize[j]; k++) acc += s[k] * w[k];
      dst[j] = acc;
    }
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < (int64_t)C * oh; r++) {
    int c = (int)(r / oh), i = (int)(r % oh);
    const float *w = ay.w + (size_t)i * (size_t)ay.maxk;
    const float *src = tmp + ((size_t)c * (size_t)ih + (size_t)ay.xmin[i]) * (size_t)ow;
    float *dst = y + r * ow;
    for (int j = 0; j < ow; j++) {
      float acc = src[j] * w[0];
      for (int k = 1; k < ay.xsize[i]; k++) acc += src[(size_t)k * (size_t)ow + (size_t)j] * w[k];
      dst[j] = acc;
    }
  }
  free(tmp);
  aa_axis_free(&ax);
  aa_axis_free(&ay);
}

/* x / max(|x|, eps) per pixel of a (3, HW) plane set (torch.norm over channels, then clamp). */
static void normalize_chw(float *x, int64_t HW) {
  for (int64_t i = 0; i < HW; i++) {
    float a = x[i], b = x[HW + i], c = x[2 * HW + i];
    float n = (float)sqrt((double)a * a + (double)b * b + (double)c * c);
    if (n < 1e-6f) n = 1e-6f;
    x[i] = a / n;
    x[HW + i] = b / n;
    x[2 * HW + i] = c / n;
  }
}

void marigold_normals_to_pointcloud_frame(float *normals, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    normals[3 * i + 1] = -normals[3 * i + 1];
    normals[3 * i + 2] = -normals[3 * i + 2];
  }
}

/* ---- checkpoint --------------------------------------------------------------------------- */

static int file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* The weight file of a component: <stem>.safetensors or <stem>.fp16.safetensors. */
static int component_has_weights(const char *root, const char *name, const char *stem) {
  char p[1200];
  snprintf(p, sizeof(p), "%s/%s/%s.safetensors", root, name, stem);
  if (file_exists(p)) return 1;
  snprintf(p, sizeof(p), "%s/%s/%s.fp16.safetensors", root, name, stem);
  return file_exists(p);
}

int marigold_have_weights(const char *root, char *why, size_t n) {
  char p[1200];
  cmds_jv idx;
  cmds_error err = {0};
  if (!root || !*root) {
    snprintf(why, n, "no Marigold checkpoint given");
    return 0;
  }
  if (dfs_model_index(root, &idx, &err)) {
    snprintf(why, n, "%s", err.msg);
    return 0;
  }
  const char *pt = NULL;
  int ok = !cmds_jv_get_str(&idx, "model_index.json", "prediction_type", 0, "", &pt, &err) && !strcmp(pt, "normals");
  if (!ok) snprintf(why, n, "%s/model_index.json: prediction_type '%s', a Marigold normals checkpoint has 'normals'",
                    root, pt ? pt : "?");
  cmds_jv_free(&idx);
  if (!ok) return 0;
  static const char *comps[][3] = {{"unet", "config.json", "diffusion_pytorch_model"},
                                   {"vae", "config.json", "diffusion_pytorch_model"},
                                   {"text_encoder", "config.json", "model"},
                                   {"scheduler", "scheduler_config.json", NULL},
                                   {"tokenizer", "vocab.json", NULL}};
  for (size_t i = 0; i < sizeof(comps) / sizeof(comps[0]); i++) {
    snprintf(p, sizeof(p), "%s/%s/%s", root, comps[i][0], comps[i][1]);
    if (!file_exists(p)) {
      snprintf(why, n, "%s missing", p);
      return 0;
    }
    if (comps[i][2] && !component_has_weights(root, comps[i][0], comps[i][2])) {
      snprintf(why, n, "%s/%s: no %s.safetensors (or .fp16.safetensors)", root, comps[i][0], comps[i][2]);
      return 0;
    }
  }
  if (n) why[0] = 0;
  return 1;
}

void marigold_free(marigold_model *m) {
  if (!m) return;
  vae_free(&m->vae);
  unet_free(&m->unet);
  ddim_free(&m->sched);
  free(m->empty_emb);
  memset(m, 0, sizeof(*m));
}

int marigold_load(marigold_model *m, const char *root, nn_device dev, cmds_error *err) {
  memset(m, 0, sizeof(*m));
  snprintf(m->root, sizeof(m->root), "%s", root);
  m->device = dev;
  char what[700];
  snprintf(what, sizeof(what), "%s/model_index.json", root);
  cmds_jv idx, vcfg;
  int rc = dfs_model_index(root, &idx, err);
  if (rc) return rc;
  const char *pt = NULL;
  int64_t steps = 0, res = -1;
  int full_z = 1;
  if (!(rc = cmds_jv_get_str(&idx, what, "prediction_type", 1, NULL, &pt, err)) && strcmp(pt, "normals"))
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'prediction_type': 'normals' expected (a Marigold normals checkpoint), "
                   "got '%s'", what, pt);
  if (!rc) rc = cmds_jv_get_int(&idx, what, "default_denoising_steps", 0, 0, &steps, err);
  if (!rc) rc = cmds_jv_get_int(&idx, what, "default_processing_resolution", 0, -1, &res, err);
  if (!rc) rc = cmds_jv_get_bool(&idx, what, "use_full_z_range", 0, 1, &full_z, err);
  cmds_jv_free(&idx);
  if (rc) return rc;
  m->default_steps = (int)steps;
  m->default_res = (int)res;
  m->use_full_z_range = full_z;

  snprintf(what, sizeof(what), "%s/vae/config.json", root);
  if ((rc = cmds_jv_read_file(what, &vcfg, err))) return rc;
  int64_t lc = 4;
  rc = cmds_jv_get_int(&vcfg, what, "latent_channels", 0, 4, &lc, err);
  cmds_jv_free(&vcfg);
  if (rc) return rc;
  m->latent_channels = (int)lc;

  if ((rc = ddim_load(&m->sched, root, "scheduler", err))) goto fail;
  if ((rc = vae_load(&m->vae, root, "vae", dev, err))) goto fail;
  m->vae_scale = vae_scale_factor(&m->vae);
  if ((rc = unet_load(&m->unet, root, "unet", dev, err))) goto fail;
  if (unet_in_channels(&m->unet) != 2 * m->latent_channels) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s/unet/config.json: key 'in_channels': %d expected (image latent + normals "
                   "latent, 2 x the VAE's latent_channels), got %d", root, 2 * m->latent_channels,
                   unet_in_channels(&m->unet));
    goto fail;
  }
  {
    /* The pipeline encodes "" unpadded (padding="do_not_pad": BOS, EOS), as clip_encode_prompt
     * does; the text encoder runs once, on the CPU. */
    float *emb = NULL;
    int64_t S = 0, D = 0;
    if ((rc = clip_encode_prompt(root, "", &emb, &S, &D, err))) goto fail;
    m->emb_S = S;
    m->emb_D = D;
    m->empty_emb = emb;
  }
  return CMDS_OK;
fail:
  marigold_free(m);
  return rc;
}

/* ---- one image ---------------------------------------------------------------------------- */

int marigold_plan_for(const marigold_model *m, int H, int W, const marigold_opts *o, marigold_plan *p,
                      cmds_error *err) {
  memset(p, 0, sizeof(*p));
  if (H < 1 || W < 1) return CMDS_FAIL(err, CMDS_EINPUT, "marigold: empty image (%d x %d)", W, H);
  int f = m->vae_scale > 0 ? m->vae_scale : 8;
  p->steps = o->steps > 0 ? o->steps : m->default_steps;
  if (p->steps < 1)
    return CMDS_FAIL(err, CMDS_EINPUT, "marigold: no step count given and %s/model_index.json has no "
                     "default_denoising_steps", m->root);
  int res = o->processing_res >= 0 ? o->processing_res : m->default_res;
  if (res < 0)
    return CMDS_FAIL(err, CMDS_EINPUT, "marigold: no processing resolution given and %s/model_index.json has no "
                     "default_processing_resolution", m->root);
  if (res % f)
    return CMDS_FAIL(err, CMDS_EINPUT, "marigold: processing resolution %d is not a multiple of the VAE scale "
                     "factor %d", res, f);
  p->ensemble = o->ensemble_size > 0 ? o->ensemble_size : 1;
  p->batch = o->batch > 0 && o->batch < p->ensemble ? o->batch : p->ensemble;
  if (res > 0) {
    int mx = H > W ? H : W;
    p->ph = (int)((int64_t)H * res / mx);
    p->pw = (int)((int64_t)W * res / mx);
    if (p->ph == 0 || p->pw == 0)
      return CMDS_FAIL(err, CMDS_EINPUT, "marigold: extreme aspect ratio of the input image (%d x %d)", W, H);
  } else {
    p->ph = H;
    p->pw = W;
  }
  p->pph = (p->ph + f - 1) / f * f;
  p->ppw = (p->pw + f - 1) / f * f;
  p->h = p->pph / f;
  p->w = p->ppw / f;
  p->oh = o->match_input_res ? H : p->ph;
  p->ow = o->match_input_res ? W : p->pw;
  return CMDS_OK;
}

/* Scratch layout of marigold_normals: x (1,3,PPH,PPW), img_lat (1,C,h,w), img_rep (B,C,h,w),
 * pred (E,C,h,w), cat (B,2C,h,w), out (B,C,h,w), enc (B,S,D), dec (1,3,PPH,PPW), then the
 * larger of the VAE's and the UNet's (+ DDIM's) workspace. */
static size_t persistent_bytes(const marigold_model *m, const marigold_plan *p) {
  int64_t C = m->latent_channels, hw = (int64_t)p->h * p->w, img = 3 * (int64_t)p->pph * p->ppw;
  size_t b = 0;
  b += ALIGN256(sizeof(float) * (size_t)img) * 2;
  b += ALIGN256(sizeof(float) * (size_t)(C * hw));
  b += ALIGN256(sizeof(float) * (size_t)(p->batch * C * hw)) * 2;
  b += ALIGN256(sizeof(float) * (size_t)(p->ensemble * C * hw));
  b += ALIGN256(sizeof(float) * (size_t)(p->batch * 2 * C * hw));
  b += ALIGN256(sizeof(float) * (size_t)(p->batch * m->emb_S * m->emb_D));
  return b;
}

size_t marigold_workspace_bytes(const marigold_model *m, int H, int W, const marigold_opts *o) {
  marigold_plan p;
  cmds_error err;
  if (marigold_plan_for(m, H, W, o, &p, &err)) return 0;
  size_t v = vae_workspace_bytes(&m->vae, 1, p.pph, p.ppw);
  size_t u = unet_workspace_bytes(&m->unet, p.batch, p.h, p.w, m->emb_S) +
             ddim_step_workspace_bytes((int64_t)p.batch * m->latent_channels * p.h * p.w);
  return persistent_bytes(m, &p) + (v > u ? v : u) + (1 << 20);
}

static nn_tensor view4(void *base, size_t off_floats, nn_device d, int64_t a, int64_t b, int64_t c, int64_t e) {
  return nn_tensor_view((float *)base + off_floats, NN_F32, d, a, b, c, e);
}

int marigold_normals(marigold_model *m, nn_ctx *ctx, const float *rgb, int H, int W, const marigold_opts *o,
                     float *normals, cmds_error *err) {
  marigold_plan p;
  int rc = marigold_plan_for(m, H, W, o, &p, err);
  if (rc) return rc;
  if (ctx->device != m->device)
    return CMDS_FAIL(err, CMDS_EINPUT, "marigold: the model is on %s, the context on %s", nn_device_name(m->device),
                     nn_device_name(ctx->device));
  const int64_t HWin = (int64_t)H * W;
  for (int64_t i = 0; i < 3 * HWin; i++)
    if (!(rgb[i] >= 0.0f && rgb[i] <= 1.0f))
      return CMDS_FAIL(err, CMDS_EINPUT, "marigold: input pixel %lld channel %lld is %g, outside [0, 1]",
                       (long long)(i / 3), (long long)(i % 3), (double)rgb[i]);
  const nn_device dev = ctx->device;
  const int64_t C = m->latent_channels, E = p.ensemble, B = p.batch, h = p.h, w = p.w;
  const int64_t S = m->emb_S, D = m->emb_D, PPH = p.pph, PPW = p.ppw, PH = p.ph, PW = p.pw;
  const int64_t lat = C * h * w, img = 3 * PPH * PPW;

  /* 1-2: [-1, 1], channels first, resized, replicate-padded (host) */
  float *chw = cmds_xmalloc(sizeof(float) * (size_t)(3 * HWin));
  for (int64_t i = 0; i < HWin; i++)
    for (int c = 0; c < 3; c++) chw[c * HWin + i] = rgb[3 * i + c] * 2.0f - 1.0f;
  float *rs = chw;
  if ((o->processing_res >= 0 ? o->processing_res : m->default_res) > 0) {
    rs = cmds_xmalloc(sizeof(float) * (size_t)(3 * PH * PW));
    marigold_resize_bilinear_aa(chw, 3, H, W, rs, (int)PH, (int)PW);
  }
  float *host = cmds_xmalloc(sizeof(float) * (size_t)(img > E * lat ? img : E * lat));
  for (int c = 0; c < 3; c++)
    for (int64_t r = 0; r < PPH; r++)
      for (int64_t q = 0; q < PPW; q++) {
        int64_t sr = r < PH ? r : PH - 1, sq = q < PW ? q : PW - 1;
        host[(c * PPH + r) * PPW + q] = rs[(c * PH + sr) * PW + sq];
      }
  if (rs != chw) free(rs);
  free(chw);

  float *preds = NULL; /* host (E, 3, PH, PW) */
  size_t mark = nn_arena_mark(ctx->scratch);
  nn_tensor x, img_lat, img_rep, pred, cat, out, enc, dec;
  int64_t sx[4] = {1, 3, PPH, PPW}, sl[4] = {1, C, h, w}, sr[4] = {B, C, h, w}, sp[4] = {E, C, h, w};
  int64_t sc[4] = {B, 2 * C, h, w}, se[3] = {B, S, D};
  if ((rc = nn_tensor_alloc(&x, ctx->scratch, NN_F32, 4, sx, err)) ||
      (rc = nn_tensor_alloc(&dec, ctx->scratch, NN_F32, 4, sx, err)) ||
      (rc = nn_tensor_alloc(&img_lat, ctx->scratch, NN_F32, 4, sl, err)) ||
      (rc = nn_tensor_alloc(&img_rep, ctx->scratch, NN_F32, 4, sr, err)) ||
      (rc = nn_tensor_alloc(&out, ctx->scratch, NN_F32, 4, sr, err)) ||
      (rc = nn_tensor_alloc(&pred, ctx->scratch, NN_F32, 4, sp, err)) ||
      (rc = nn_tensor_alloc(&cat, ctx->scratch, NN_F32, 4, sc, err)) ||
      (rc = nn_tensor_alloc(&enc, ctx->scratch, NN_F32, 3, se, err)))
    goto done;

  /* 3: image latent, repeated over the batch; the text embedding likewise */
  {
    nn_tensor hx = nn_tensor_view(host, NN_F32, NN_CPU, 1, 3, PPH, PPW);
    if ((rc = nn_tensor_copy(&x, &hx, err))) goto done;
    if ((rc = vae_encode_mean_scaled(&m->vae, ctx, &img_lat, &x, err))) goto done;
    for (int64_t b = 0; b < B; b++) {
      nn_tensor dst = view4(img_rep.data, (size_t)(b * lat), dev, 1, C, h, w);
      if ((rc = nn_tensor_copy(&dst, &img_lat, err))) goto done;
      nn_tensor he = nn_tensor_view(m->empty_emb, NN_F32, NN_CPU, 1, S, D, -1);
      nn_tensor de = nn_tensor_view((float *)enc.data + b * S * D, NN_F32, dev, 1, S, D, -1);
      if ((rc = nn_tensor_copy(&de, &he, err))) goto done;
    }
  }
  /* 4: initial latents */
  if (o->init_latents) {
    memcpy(host, o->init_latents, sizeof(float) * (size_t)(E * lat));
  } else {
    cmds_rng r;
    cmds_rng_seed(&r, o->seed);
    for (int64_t i = 0; i < E * lat; i++) host[i] = (float)cmds_rng_normal(&r);
  }
  {
    nn_tensor hp = nn_tensor_view(host, NN_F32, NN_CPU, E, C, h, w);
    if ((rc = nn_tensor_copy(&pred, &hp, err))) goto done;
  }
  /* 5: DDIM, B members at a time */
  if ((rc = ddim_set_timesteps(&m->sched, p.steps, err))) goto done;
  for (int64_t i0 = 0; i0 < E; i0 += B) {
    int64_t b = E - i0 < B ? E - i0 : B;
    nn_tensor pb = view4(pred.data, (size_t)(i0 * lat), dev, b, C, h, w);
    nn_tensor ib = view4(img_rep.data, 0, dev, b, C, h, w);
    nn_tensor cb = view4(cat.data, 0, dev, b, 2 * C, h, w);
    nn_tensor ob = view4(out.data, 0, dev, b, C, h, w);
    nn_tensor eb = nn_tensor_view(enc.data, NN_F32, dev, b, S, D, -1);
    for (int k = 0; k < m->sched.n_steps; k++) {
      int64_t t = m->sched.timesteps[k];
      if ((rc = nn_concat_channels_forward(ctx, &cb, &ib, &pb, err)) ||
          (rc = unet_forward(&m->unet, ctx, &ob, &cb, (double)t, &eb, err)) ||
          (rc = ddim_step(&m->sched, ctx, &pb, &ob, t, &pb, err))) {
        cmds_error_wrap(err, "marigold: members %lld..%lld, step %d of %d (t = %lld)", (long long)i0,
                        (long long)(i0 + b - 1), k + 1, m->sched.n_steps, (long long)t);
        goto done;
      }
    }
  }
  /* 6: decode each member, clip, (z range), normalise, unpad (host) */
  preds = cmds_xmalloc(sizeof(float) * (size_t)(E * 3 * PH * PW));
  for (int64_t e = 0; e < E; e++) {
    nn_tensor pe = view4(pred.data, (size_t)(e * lat), dev, 1, C, h, w);
    if ((rc = vae_decode_scaled(&m->vae, ctx, &dec, &pe, err))) goto done;
    nn_tensor hd = nn_tensor_view(host, NN_F32, NN_CPU, 1, 3, PPH, PPW);
    if ((rc = nn_tensor_copy(&hd, &dec, err))) goto done;
    const int64_t HWp = PPH * PPW;
    for (int64_t i = 0; i < 3 * HWp; i++) host[i] = host[i] < -1.0f ? -1.0f : host[i] > 1.0f ? 1.0f : host[i];
    if (!m->use_full_z_range)
      for (int64_t i = 0; i < HWp; i++) host[2 * HWp + i] = host[2 * HWp + i] * 0.5f + 0.5f;
    normalize_chw(host, HWp);
    float *dst = preds + e * 3 * PH * PW;
    for (int c = 0; c < 3; c++)
      for (int64_t r = 0; r < PH; r++) memcpy(dst + (c * PH + r) * PW, host + (c * PPH + r) * PPW, sizeof(float) * (size_t)PW);
  }
  /* 7: ensemble (closest to the normalised mean, or the mean) into preds[0] */
  if (E > 1) {
    const int64_t HWp = PH * PW;
    float *mean = host; /* (3, HWp) */
    for (int64_t i = 0; i < 3 * HWp; i++) {
      float s = 0.0f;
      for (int64_t e = 0; e < E; e++) s += preds[e * 3 * HWp + i];
      mean[i] = s / (float)E;
    }
    normalize_chw(mean, HWp);
    for (int64_t i = 0; i < HWp; i++) {
      if (o->reduction == MARIGOLD_MEAN) {
        for (int c = 0; c < 3; c++) preds[c * HWp + i] = mean[c * HWp + i];
        continue;
      }
      int64_t best = 0;
      float bs = -INFINITY;
      for (int64_t e = 0; e < E; e++) {
        const float *q = preds + e * 3 * HWp;
        float sim = mean[i] * q[i] + mean[HWp + i] * q[HWp + i] + mean[2 * HWp + i] * q[2 * HWp + i];
        sim = sim < -1.0f ? -1.0f : sim > 1.0f ? 1.0f : sim;
        if (sim > bs) {
          bs = sim;
          best = e;
        }
      }
      for (int c = 0; c < 3; c++) preds[c * HWp + i] = preds[best * 3 * HWp + c * HWp + i];
    }
  }
  /* 8: back to the input size (bilinear, no antialias), normalised; channels last */
  {
    float *res = preds;
    float *tmp = NULL;
    int64_t OH = p.oh, OW = p.ow;
    if (o->match_input_res) {
      tmp = cmds_xmalloc(sizeof(float) * (size_t)(3 * OH * OW));
      nn_ctx hctx;
      if ((rc = nn_ctx_init(&hctx, NN_CPU, NULL, NULL, 0, err))) {
        free(tmp);
        goto done;
      }
      nn_tensor src = nn_tensor_view(preds, NN_F32, NN_CPU, 1, 3, PH, PW);
      nn_tensor dst = nn_tensor_view(tmp, NN_F32, NN_CPU, 1, 3, OH, OW);
      rc = nn_resize_forward(&hctx, &dst, &src, NN_RESIZE_BILINEAR, err);
      nn_ctx_free(&hctx);
      if (rc) {
        free(tmp);
        goto done;
      }
      normalize_chw(tmp, OH * OW);
      res = tmp;
    }
    for (int64_t i = 0; i < OH * OW; i++)
      for (int c = 0; c < 3; c++) normals[3 * i + c] = res[c * OH * OW + i];
    free(tmp);
  }
done:
  nn_arena_rewind(ctx->scratch, mark);
  free(preds);
  free(host);
  return rc;
}
