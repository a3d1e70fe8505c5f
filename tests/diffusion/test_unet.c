/* test_unet: kernels/diffusion/unet against diffusers' UNet2DConditionModel on the tiny
 * random UNets of tests/fixtures/diffusion_unet (gen_diffusion_unet.py), on the CPU:
 *   - unet_a (Marigold-like: 8 in, head counts as a list, linear projections) at t = 999 and
 *     250, fp32 weights; the same weights from the fp16-only variant folder;
 *   - unet_b (fp16 file only, 3 levels, 2 layers per block, 2 transformer layers, 1x1 conv
 *     projections, batch 2, odd sizes 15 x 21: upsampling to the skip's size) at t = 37.5;
 *   all to 1e-4 of the output's scale;
 *   - the scratch arena sized by unet_workspace_bytes is enough (and a smaller one is refused
 *     before any work with a message that says so);
 *   - with --cuda, the forwards on the GPU (fp32, no TF32: the same 1e-4; exit 77 without one);
 *   - bad configs name the key and value, weights that do not fit the config name every
 *     tensor (written as config variants beside a link to unet_a's weights). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "difftest.h"
#include "npy.h"
#include "nn/tensor.h"
#include "unet.h"

static const char *g_root;
static nn_device g_dev = NN_CPU;

static int load_npy(const char *name, npy_array *a) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/%s.npy", g_root, name);
  return npy_load(p, a);
}

/* Runs the UNet of `sub` on the fixture inputs `in` at timestep t and compares with `want`:
 * max |got - want| <= 1e-4 * max |want|. */
static void check_forward(const char *sub, const char *in, double t, const char *want) {
  cmds_error err = {0};
  unet_model m;
  int rc = unet_load(&m, g_root, sub, g_dev, &err);
  CHECK(rc == 0, "load %s: %s", sub, err.msg);
  if (rc) return;
  char nx[64], ne[64];
  snprintf(nx, sizeof nx, "%s_x", in);
  snprintf(ne, sizeof ne, "%s_enc", in);
  npy_array x, enc, w;
  if (load_npy(nx, &x) || load_npy(ne, &enc) || load_npy(want, &w)) {
    CHECK(0, "fixtures for %s", want);
    unet_free(&m);
    return;
  }
  CHECK(x.shape[1] == unet_in_channels(&m), "%s: in_channels %d", sub, unet_in_channels(&m));
  int64_t B = x.shape[0], h = x.shape[2], wd = x.shape[3], S = enc.shape[1];
  size_t ws = unet_workspace_bytes(&m, B, h, wd, S);
  nn_arena scratch, io;
  nn_ctx ctx;
  nn_arena_init(&scratch, g_dev, ws, &err);
  nn_ctx_init(&ctx, g_dev, &scratch, NULL, 0, &err);
  nn_tensor hx = nn_tensor_view(x.data, NN_F32, NN_CPU, B, x.shape[1], h, wd);
  nn_tensor he = nn_tensor_view(enc.data, NN_F32, NN_CPU, B, S, enc.shape[2], -1);
  float *out = calloc((size_t)w.count, sizeof(float));
  nn_tensor ho = nn_tensor_view(out, NN_F32, NN_CPU, w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
  nn_tensor tx = hx, te = he, to = ho;
  if (g_dev != NN_CPU) { /* inputs and output on the device */
    nn_arena_init(&io, g_dev, nn_tensor_bytes(&hx) + nn_tensor_bytes(&he) + nn_tensor_bytes(&ho) + 1024, &err);
    nn_tensor_alloc(&tx, &io, NN_F32, 4, hx.shape, &err);
    nn_tensor_alloc(&te, &io, NN_F32, 3, he.shape, &err);
    nn_tensor_alloc(&to, &io, NN_F32, 4, ho.shape, &err);
    nn_tensor_copy(&tx, &hx, &err);
    nn_tensor_copy(&te, &he, &err);
  }
  rc = unet_forward(&m, &ctx, &to, &tx, t, &te, &err);
  if (!rc) rc = nn_ctx_sync(&ctx, &err);
  if (!rc && g_dev != NN_CPU) rc = nn_tensor_copy(&ho, &to, &err);
  CHECK(rc == 0, "%s forward: %s", want, err.msg);
  CHECK(scratch.peak_bytes <= ws && scratch.used_bytes == 0, "%s: scratch peak %zu of %zu, %zu left in use", want,
        scratch.peak_bytes, ws, scratch.used_bytes);
  if (!rc) {
    double scale = 0, maxerr = 0;
    const float *wf = w.data;
    for (int64_t i = 0; i < w.count; i++) scale = fabs(wf[i]) > scale ? fabs(wf[i]) : scale;
    int64_t worst = 0;
    for (int64_t i = 0; i < w.count; i++) {
      double e = fabs((double)out[i] - wf[i]);
      if (!(e <= maxerr)) maxerr = e, worst = i;
    }
    printf("%s (%s, t=%g): max |diff| %.3g (%.3g of the output's scale %.3g)\n", want, sub, t, maxerr, maxerr / scale,
           scale);
    CHECK(maxerr <= 1e-4 * scale, "%s: element %lld got %.8g want %.8g (max |diff| %.3g, scale %.3g)", want,
          (long long)worst, out[worst], wf[worst], maxerr, scale);
  }
  /* a scratch arena one page short of the workspace is refused before any work */
  if (ws > 8192) {
    nn_arena small;
    nn_ctx sctx;
    nn_arena_init(&small, g_dev, ws - 4096, &err);
    nn_ctx_init(&sctx, g_dev, &small, NULL, 0, &err);
    rc = unet_forward(&m, &sctx, &to, &tx, t, &te, &err);
    CHECK(rc == CMDS_ENOMEM && strstr(err.msg, "unet_workspace_bytes") && small.peak_bytes == 0,
          "small scratch: rc %d: %s", rc, err.msg);
    nn_ctx_free(&sctx);
    nn_arena_free(&small);
  }
  free(out);
  if (g_dev != NN_CPU) nn_arena_free(&io);
  nn_ctx_free(&ctx);
  nn_arena_free(&scratch);
  npy_free(&x), npy_free(&enc), npy_free(&w);
  unet_free(&m);
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  if (fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
  s[n] = 0;
  fclose(f);
  return s;
}

/* bad/<name>/config.json = unet_a's config with `from` replaced by `to`, and a link to
 * unet_a's weights; loads it and checks the error names every `expect` (NULL-terminated). */
static void check_bad(const char *name, const char *from, const char *to, const char *const *expect) {
  char src[PATH_MAX], dir[PATH_MAX], p[PATH_MAX + 64], wsrc[PATH_MAX + 64];
  snprintf(src, sizeof src, "%s/unet_a/config.json", g_root);
  char *text = read_text(src);
  CHECK(text != NULL, "read %s", src);
  if (!text) return;
  char *at = strstr(text, from);
  CHECK(at != NULL, "%s: '%s' not in unet_a's config", name, from);
  if (!at) {
    free(text);
    return;
  }
  mkdir("bad", 0755);
  snprintf(dir, sizeof dir, "bad/%s", name);
  mkdir(dir, 0755);
  snprintf(p, sizeof p, "%s/config.json", dir);
  FILE *f = fopen(p, "wb");
  fwrite(text, 1, (size_t)(at - text), f);
  fputs(to, f);
  fputs(at + strlen(from), f);
  fclose(f);
  free(text);
  char absroot[PATH_MAX];
  if (!realpath(g_root, absroot)) snprintf(absroot, sizeof absroot, "%s", g_root);
  snprintf(wsrc, sizeof wsrc, "%s/unet_a/diffusion_pytorch_model.safetensors", absroot);
  snprintf(p, sizeof p, "%s/diffusion_pytorch_model.safetensors", dir);
  unlink(p);
  CHECK(symlink(wsrc, p) == 0, "symlink %s: %s", p, strerror(errno));
  cmds_error err = {0};
  unet_model m;
  int rc = unet_load(&m, "bad", name, NN_CPU, &err);
  CHECK(rc == CMDS_EINPUT, "%s: accepted (rc %d)", name, rc);
  if (!rc) unet_free(&m);
  for (int i = 0; expect[i]; i++) CHECK(strstr(err.msg, expect[i]) != NULL, "%s: '%s' not in: %s", name, expect[i], err.msg);
}

int main(int argc, char **argv) {
  int cuda = 0, rc = difftest_args(argc, argv, &g_root, &cuda);
  if (rc >= 0) return rc;
  if (cuda) { /* the same checks with the model and every activation on the GPU */
    g_dev = NN_CUDA;
    check_forward("unet_a", "a", 999, "a_t999");
    check_forward("unet_a_fp16", "a", 999, "a_fp16_t999");
    check_forward("unet_b", "b", 37.5, "b_t37p5");
    return CHECK_DONE();
  }

  check_forward("unet_a", "a", 999, "a_t999");
  check_forward("unet_a", "a", 250, "a_t250");
  check_forward("unet_a_fp16", "a", 999, "a_fp16_t999");
  check_forward("unet_b", "b", 37.5, "b_t37p5");

  /* what the loader read from the configs */
  cmds_error err = {0};
  unet_model m;
  if (unet_load(&m, g_root, "unet_a", NN_CPU, &err) == 0) {
    CHECK(m.cfg.heads[0] == 2 && m.cfg.heads[1] == 4 && m.down[0].attns[0].heads == 2 &&
              m.down[0].attns[0].blocks[0].attn1.dim_head == 4 && m.mid_attn.heads == 4 && m.up[1].attns[0].heads == 2,
          "head counts: per block, the up blocks reversed");
    CHECK(m.up[1].n_layers == 2 && m.up[1].resnets[1].cin == 16 && m.down[1].resnets[0].has_shortcut,
          "up block layers and skip widths");
    unet_free(&m);
  }
  if (unet_load(&m, g_root, "unet_b", NN_CPU, &err) == 0) {
    CHECK(m.source && strstr(m.source, "diffusion_pytorch_model.fp16.safetensors"), "fp16 variant taken");
    CHECK(m.down[0].attns[1].n_layers == 2 && m.down[0].attns[0].proj_in.k == 1, "conv projections, 2 layers");
    unet_free(&m);
  }

  /* bad configs: the key and the value are named */
  check_bad("class_embed", "\"class_embed_type\": null", "\"class_embed_type\": \"timestep\"",
            (const char *const[]){"config.json", "class_embed_type", "timestep", NULL});
  check_bad("addition_embed", "\"addition_embed_type\": null", "\"addition_embed_type\": \"text_time\"",
            (const char *const[]){"addition_embed_type", "text_time", NULL});
  check_bad("scale_shift", "\"resnet_time_scale_shift\": \"default\"", "\"resnet_time_scale_shift\": \"scale_shift\"",
            (const char *const[]){"resnet_time_scale_shift", "scale_shift", NULL});
  check_bad("block_type", "\"CrossAttnDownBlock2D\"", "\"AttnDownBlock2D\"",
            (const char *const[]){"down_block_types", "AttnDownBlock2D", NULL});
  check_bad("mid_none", "\"mid_block_type\": \"UNetMidBlock2DCrossAttn\"", "\"mid_block_type\": null",
            (const char *const[]){"mid_block_type", "null", NULL});
  check_bad("only_cross", "\"only_cross_attention\": false", "\"only_cross_attention\": true",
            (const char *const[]){"only_cross_attention", "true", NULL});
  check_bad("heads_list", "\"attention_head_dim\": [\n    2,\n    4\n  ]", "\"attention_head_dim\": [2, 4, 4]",
            (const char *const[]){"attention_head_dim", "2 integers", NULL});
  /* configs the weights do not fit: every tensor named */
  check_bad("cross_dim", "\"cross_attention_dim\": 12", "\"cross_attention_dim\": 16",
            (const char *const[]){"diffusion_pytorch_model.safetensors",
                                  "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight has shape (8, 12), "
                                  "(8, 16) expected",
                                  "mid_block.attentions.0.transformer_blocks.0.attn2.to_v.weight", NULL});
  check_bad("layers", "\"layers_per_block\": 1", "\"layers_per_block\": 2",
            (const char *const[]){"missing down_blocks.0.resnets.1.norm1.weight", "100 tensor(s) do not match", "and 83 more",
                                  NULL});
  check_bad("conv_proj", "\"use_linear_projection\": true", "\"use_linear_projection\": false",
            (const char *const[]){"down_blocks.0.attentions.0.proj_in.weight has shape (8, 8), (8, 8, 1, 1) expected",
                                  NULL});
  check_bad("no_attn_up", "\"CrossAttnUpBlock2D\"", "\"UpBlock2D\"",
            (const char *const[]){"unexpected up_blocks.1.attentions.0.norm.weight", NULL});

  /* a missing folder names the path */
  rc = unet_load(&m, g_root, "no_such_unet", NN_CPU, &err);
  CHECK(rc == CMDS_EINPUT && strstr(err.msg, "no_such_unet"), "missing folder: %s", err.msg);
  return CHECK_DONE();
}
