/* fuse: see fuse.h. */
#include "fuse.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/blur.h"
#include "nn/resize.h"
#include "score_files.h"

void score_params_from_cfg(const cmds_config *c, score_params *p) {
  memset(p, 0, sizeof *p);
  p->l1 = (float)strtod(c->value[CK_SCORE_L1], NULL);
  p->l2 = (float)strtod(c->value[CK_SCORE_L2], NULL);
  const char *f = c->value[CK_SCORE_FUSION];
  p->fusion = !strcmp(f, "add") ? FUSE_ADD : !strcmp(f, "max") ? FUSE_MAX : !strcmp(f, "2d") ? FUSE_2D
              : !strcmp(f, "3d") ? FUSE_3D : FUSE_MUL;
  const char *s = c->value[CK_SCORE_STREAMS];
  p->streams = !strcmp(s, "real") ? STREAMS_REAL : !strcmp(s, "est") ? STREAMS_EST : STREAMS_BOTH;
  p->sigma = strtod(c->value[CK_SCORE_SIGMA], NULL);
  p->fg_mask = strtol(c->value[CK_SCORE_FG_MASK], NULL, 10) != 0;
}

unsigned score_params_uses(const score_params *p) {
  unsigned a = 0, b = 0; /* the maps of A (2D) and of B (3D) */
  if (p->streams == STREAMS_BOTH) {
    a = 1u << PSI_2D_REAL | (p->l1 != 0.0f ? 1u << PSI_2D_EST : 0);
    b = 1u << PSI_3D_REAL | (p->l2 != 0.0f ? 1u << PSI_3D_EST : 0);
  } else if (p->streams == STREAMS_REAL) {
    a = 1u << PSI_2D_REAL;
    b = 1u << PSI_3D_REAL;
  } else {
    a = 1u << PSI_2D_EST;
    b = 1u << PSI_3D_EST;
  }
  return p->fusion == FUSE_2D ? a : p->fusion == FUSE_3D ? b : a | b;
}

void score_fuse(const score_params *p, const float *psi2d_r, const float *psi2d_e, const float *psi3d_r,
                const float *psi3d_e, int64_t n, float *out) {
  const float l1 = p->l1, l2 = p->l2;
  for (int64_t i = 0; i < n; i++) {
    float a, b;
    if (p->streams == STREAMS_BOTH) {
      a = psi2d_r[i] + (psi2d_e && l1 != 0.0f ? l1 * psi2d_e[i] : 0.0f);
      b = psi3d_r[i] + (psi3d_e && l2 != 0.0f ? l2 * psi3d_e[i] : 0.0f);
    } else if (p->streams == STREAMS_REAL) {
      a = psi2d_r[i];
      b = psi3d_r[i];
    } else {
      a = psi2d_e[i];
      b = psi3d_e[i];
    }
    switch (p->fusion) {
      case FUSE_MUL: out[i] = a * b; break;
      case FUSE_ADD: out[i] = a + b; break;
      case FUSE_MAX: out[i] = a > b ? a : b; break;
      case FUSE_2D: out[i] = a; break;
      default: out[i] = b; break;
    }
  }
}

int score_finisher_init(score_finisher *f, int R, int S, cmds_error *err) {
  memset(f, 0, sizeof *f);
  f->R = R;
  f->S = S;
  size_t px = (size_t)S * (size_t)S;
  int rc = nn_arena_init(&f->arena, NN_CPU, (2 * px + (size_t)R * (size_t)R) * sizeof(float) + 4096, err);
  if (!rc) rc = nn_ctx_init(&f->ctx, NN_CPU, &f->arena, NULL, 0, err);
  if (rc) return rc;
  f->up = cmds_xmalloc(px * sizeof(float));
  f->blur = cmds_xmalloc(px * sizeof(float));
  return CMDS_OK;
}

void score_finisher_free(score_finisher *f) {
  if (f->ctx.scratch) nn_ctx_free(&f->ctx);
  nn_arena_free(&f->arena);
  free(f->up);
  free(f->blur);
  memset(f, 0, sizeof *f);
}

int score_finish(score_finisher *f, const float *psi, const uint8_t *fg, double sigma224, float *out,
                 float *image_score, cmds_error *err) {
  int R = f->R, S = f->S, rc = CMDS_OK;
  nn_tensor x = nn_tensor_view((void *)psi, NN_F32, NN_CPU, 1, 1, R, R);
  nn_tensor up = nn_tensor_view(f->up, NN_F32, NN_CPU, 1, 1, S, S);
  nn_tensor y = nn_tensor_view(out, NN_F32, NN_CPU, 1, 1, S, S);
  if (R != S) rc = nn_resize_forward(&f->ctx, &up, &x, NN_RESIZE_BILINEAR, err);
  else memcpy(f->up, psi, sizeof(float) * (size_t)S * (size_t)S);
  if (!rc && fg)
    for (size_t i = 0; i < (size_t)S * (size_t)S; i++)
      if (!fg[i]) f->up[i] = 0.0f;
  float sigma_px = (float)(sigma224 * (double)S / 224.0);
  if (!rc) rc = nn_blur_forward(&f->ctx, &y, &up, sigma_px, err);
  if (rc) return cmds_error_wrap(err, "score.sigma=%g at %d px (sigma %g px)", sigma224, S, (double)sigma_px);
  float m = -INFINITY;
  for (size_t i = 0; i < (size_t)S * (size_t)S; i++)
    if (out[i] > m) m = out[i];
  *image_score = m;
  return CMDS_OK;
}
