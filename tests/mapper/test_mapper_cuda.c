/* test_mapper_cuda: the mapper on the GPU against the CPU path (which test_mapper pins to
 * PyTorch), fp32 (TF32 off), random data at a moderate size: D = 64, L = 3, 28 x 28 and
 * 20 x 33, batch 2, cmds and mlp. One training step on both devices: forward with a tape,
 * the R (masked) + E stream losses, backward, AdamW; and an inference forward and the f16
 * input up-sampling. Pass: ||gpu - cpu||_2 / ||cpu||_2 per tensor < 1e-5 for P, x and the
 * weights after AdamW, < 1e-4 for every gradient (long chains of fp32 reductions in another
 * order); losses to 1e-5 relative. GPU buffers are poisoned with NaN first, so a value never
 * written fails. Exits 77 (skip) without CUDA or a GPU.
 *   test_mapper_cuda */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "mapper.h"
#include "nn.h"
#include "rng.h"

#include "cuda_pair.h"

/* N(0, 1) values, or 0 / 1 with probability 1/2 when binary, from r. */
static nn_tensor host_draw(cmds_rng *r, int ndim, const int64_t *shape, int binary) {
  nn_tensor t = host_empty(ndim, shape);
  float *p = t.data;
  for (int64_t i = 0; i < nn_tensor_numel(&t); i++)
    p[i] = binary ? (cmds_rng_uniform(r) < 0.5 ? 1.0f : 0.0f) : (float)cmds_rng_normal(r);
  return t;
}

static const float LW[3] = {1.2f, 1.0f, 0.8f};

static void run(const char *name, mapper_kind kind, int64_t H, int64_t W) {
  cmds_error err = {0};
  size_t hmark = nn_arena_mark(&host), dmark = nn_arena_mark(&dev);
  mapper_config c;
  mapper_config_default(&c, 64, 3);
  c.kind = kind;
  c.sel_hidden = 32;
  /* M = max(8, 192 / 32) = 8; 4 groups of 2 channels. With one channel per group the norm
   * would cancel coord.conv1.bias exactly, leaving a zero gradient made of rounding noise,
   * which no relative tolerance can compare. */
  c.ca_groups = 4;
  int64_t B = 2, C = 192, s4[4] = {B, C, H, W}, s3[3] = {B, H, W};
  mapper_model mc, mg;
  die_on(mapper_init(&mc, &c, 3, NN_CPU, &err), &err);
  die_on(mapper_init(&mg, &c, 4, NN_CUDA, &err), &err);
  die_on(mapper_copy(&mg, &mc, &err), &err);
  cmds_rng r;
  cmds_rng_seed(&r, cmds_hash_str(name));
  nn_tensor x = host_draw(&r, 4, s4, 0), t = host_draw(&r, 4, s4, 0), mask = host_draw(&r, 3, s3, 1),
            xe = host_draw(&r, 4, s4, 0), te = host_draw(&r, 4, s4, 0), p = host_draw(&r, 4, s4, 0),
            dp = host_draw(&r, 4, s4, 0);
  nn_tensor xg = to_dev(&x, 0), tg = to_dev(&t, 0), mg_ = to_dev(&mask, 0), xeg = to_dev(&xe, 0),
            teg = to_dev(&te, 0), pg = to_dev(&p, 1), dpg = to_dev(&dp, 1);
  double msum = 0;
  for (int64_t i = 0; i < nn_tensor_numel(&mask); i++) msum += ((float *)mask.data)[i];
  mapper_tape *tc = mapper_tape_new(&c, B, H, W, NN_CPU, &err), *tg_ = mapper_tape_new(&c, B, H, W, NN_CUDA, &err);
  die_on(!tc || !tg_, &err);

  /* inference forward */
  die_on(mapper_forward(&mc, &cpu, &x, &p, NULL, &err), &err);
  die_on(mapper_forward(&mg, &gpu, &xg, &pg, NULL, &err), &err);
  double e = rel_err(&pg, &p);
  CHECK(e < 1e-5, "%s: inference P rel error %.3g", name, e);

  /* one training step on each device */
  double lc[2], lg[2];
  mapper_adamw oc, og;
  die_on(mapper_adamw_init(&oc, &mc, 1e-4f, &err), &err);
  die_on(mapper_adamw_init(&og, &mg, 1e-4f, &err), &err);
  mapper_zero_grad(&mc);
  mapper_zero_grad(&mg);
  die_on(mapper_forward(&mc, &cpu, &x, &p, tc, &err), &err);
  die_on(mapper_forward(&mg, &gpu, &xg, &pg, tg_, &err), &err);
  e = rel_err(&pg, &p);
  CHECK(e < 1e-5, "%s: training P rel error %.3g", name, e);
  die_on(mapper_loss(&cpu, &p, &t, &mask, 3, LW, msum + 1e-8, &lc[0], &dp, &err), &err);
  die_on(mapper_loss(&gpu, &pg, &tg, &mg_, 3, LW, msum + 1e-8, &lg[0], &dpg, &err), &err);
  e = rel_err(&dpg, &dp);
  CHECK(e < 1e-5, "%s: dP rel error %.3g", name, e);
  die_on(mapper_backward(&mc, &cpu, &x, &dp, tc, &err), &err);
  die_on(mapper_backward(&mg, &gpu, &xg, &dpg, tg_, &err), &err);
  die_on(mapper_forward(&mc, &cpu, &xe, &p, tc, &err), &err);
  die_on(mapper_forward(&mg, &gpu, &xeg, &pg, tg_, &err), &err);
  die_on(mapper_loss(&cpu, &p, &te, NULL, 3, LW, (double)(B * H * W), &lc[1], &dp, &err), &err);
  die_on(mapper_loss(&gpu, &pg, &teg, NULL, 3, LW, (double)(B * H * W), &lg[1], &dpg, &err), &err);
  die_on(mapper_backward(&mc, &cpu, &xe, &dp, tc, &err), &err);
  die_on(mapper_backward(&mg, &gpu, &xeg, &dpg, tg_, &err), &err);
  CHECK_CLOSE(lg[0], lc[0], 0, 1e-5, "loss R");
  CHECK_CLOSE(lg[1], lc[1], 0, 1e-5, "loss E");
  double worst = 0;
  const char *worst_name = "";
  for (int i = 0; i < mc.nparams; i++) {
    double g = rel_err(&mg.params[i].grad, &mc.params[i].grad);
    CHECK(g < 1e-4, "%s: grad %s rel error %.3g", name, mc.params[i].name, g);
    if (g > worst) worst = g, worst_name = mc.params[i].name;
  }
  die_on(mapper_adamw_step(&oc, &mc, &cpu, 1e-3f, &err), &err);
  die_on(mapper_adamw_step(&og, &mg, &gpu, 1e-3f, &err), &err);
  double worst_w = 0;
  for (int i = 0; i < mc.nparams; i++) {
    double v = rel_err(&mg.params[i].value, &mc.params[i].value);
    CHECK(v < 1e-5, "%s: weight %s after AdamW rel error %.3g", name, mc.params[i].name, v);
    if (v > worst_w) worst_w = v;
  }
  printf("%s: loss %.8g / %.8g, worst gradient rel error %.3g (%s), worst weight after AdamW %.3g\n", name,
         lc[0], lc[1], worst, worst_name, worst_w);

  /* f16 input rows (B, L, G, G, D) -> (B, L*D, H, W) */
  int64_t G = 7, n = B * 3 * G * G * 64;
  uint16_t *rows = malloc((size_t)n * sizeof *rows);
  for (int64_t i = 0; i < n; i++) rows[i] = nn_f32_to_f16((float)cmds_rng_normal(&r));
  nn_tensor xin = host_draw(&r, 4, s4, 0), xing = to_dev(&xin, 1);
  die_on(mapper_input_from_f16(&cpu, &xin, rows, B, 3, G, 64, &err), &err);
  die_on(mapper_input_from_f16(&gpu, &xing, rows, B, 3, G, 64, &err), &err);
  e = rel_err(&xing, &xin);
  CHECK(e < 1e-6, "%s: f16 input rel error %.3g", name, e);
  free(rows);

  mapper_adamw_free(&oc), mapper_adamw_free(&og);
  mapper_tape_free(tc), mapper_tape_free(tg_);
  mapper_free(&mc), mapper_free(&mg);
  nn_arena_rewind(&host, hmark);
  nn_arena_rewind(&dev, dmark);
}

int main(void) {
  mapper_config c;
  mapper_config_default(&c, 64, 3);
  c.sel_hidden = 32;
  c.ca_groups = 4;
  size_t sb = mapper_scratch_bytes(&c, 2, 33, 33);
  int rc = cuda_pair_setup((size_t)256 << 20, sb);
  if (rc) return rc;
  run("cmds_28x28", MAPPER_CMDS, 28, 28);
  run("cmds_20x33", MAPPER_CMDS, 20, 33);
  run("mlp_28x28", MAPPER_MLP, 28, 28);
  printf("scratch peak: host %zu of %zu, device %zu of %zu bytes\n", host_scratch.peak_bytes, sb,
         dev_scratch.peak_bytes, sb);
  cuda_pair_release();
  return CHECK_DONE();
}
