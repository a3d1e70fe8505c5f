/* bench_vae: the VAE of a full-size checkpoint (random weights, make_full_marigold.py's
 * SD VAE, or any diffusers checkpoint) on one device: load time, scratch bytes
 * (vae_workspace_bytes), seconds per encode_mean_scaled and per decode_scaled of one
 * SIZE x SIZE image, and the mean / mean |.| of the latent and the decoded image (the
 * diffusers side prints the same for the same input, a check at full size). The
 * diffusers side is bench_vae_torch.py; bench_vae.sh runs both and prints the ratio.
 *   bench_vae CKPT_ROOT cpu|cuda SIZE REPS      (REPS 0: load and print the scratch size only)
 * Exit 77 when cuda is asked for and there is no GPU. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "difftest.h"
#include "vae.h"

static int fail(const cmds_error *err) {
  fprintf(stderr, "bench_vae: %s\n", err->msg);
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s CKPT_ROOT cpu|cuda SIZE REPS\n", argv[0]);
    return 2;
  }
  nn_device dev;
  int64_t S = atoll(argv[3]);
  int reps = atoi(argv[4]);
  if (S < 8 || reps < 0) {
    fprintf(stderr, "bench_vae: SIZE >= 8 and REPS >= 0 expected\n");
    return 2;
  }
  if (difftest_bench_device(argv[2], &dev)) return 77;
  cmds_error err = {0};
  char desc[256];
  printf("device: %s\n", nn_device_describe(dev, desc, sizeof desc));
  double t0 = difftest_now();
  vae_model m;
  if (vae_load(&m, argv[1], "vae", dev, &err)) return fail(&err);
  printf("load: %.2f s, %lld parameters\n", difftest_now() - t0, (long long)m.n_params);
  int64_t h, w, f = vae_scale_factor(&m);
  vae_latent_size(&m, S, S, &h, &w);
  size_t ws = vae_workspace_bytes(&m, 1, S, S);
  printf("scratch at %lld x %lld: %.1f MiB (vae_workspace_bytes)\n", (long long)S, (long long)S, (double)ws / 1048576.0);
  if (reps == 0) { /* sizes only */
    vae_free(&m);
    return 0;
  }
  nn_arena s, io;
  nn_ctx ctx;
  size_t img = (size_t)(3 > m.out_channels ? 3 : m.out_channels) * (size_t)(S * S) * sizeof(float);
  if (nn_arena_init(&s, dev, ws, &err) || nn_arena_init(&io, dev, 3 * img + 4096, &err) ||
      nn_ctx_init(&ctx, dev, &s, NULL, 0, &err))
    return fail(&err);
  nn_tensor x, lat, y;
  if (nn_tensor_alloc(&x, &io, NN_F32, 4, (int64_t[]){1, m.in_channels, S, S}, &err) ||
      nn_tensor_alloc(&lat, &io, NN_F32, 4, (int64_t[]){1, m.latent_channels, h, w}, &err) ||
      nn_tensor_alloc(&y, &io, NN_F32, 4, (int64_t[]){1, m.out_channels, h * f, w * f}, &err))
    return fail(&err);
  size_t nx = (size_t)nn_tensor_numel(&x);
  float *hx = malloc(nx * sizeof(float));
  for (size_t i = 0; i < nx; i++) hx[i] = (float)(sin(0.001 * (double)i) * 0.9);
  nn_tensor hv = nn_tensor_view(hx, NN_F32, NN_CPU, x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
  if (nn_tensor_copy(&x, &hv, &err)) return fail(&err);
  double te = 1e30, td = 1e30;
  for (int r = 0; r < reps + 1; r++) { /* the first run warms up */
    double a = difftest_now();
    if (vae_encode_mean_scaled(&m, &ctx, &lat, &x, &err) || nn_ctx_sync(&ctx, &err)) return fail(&err);
    double b = difftest_now();
    if (vae_decode_scaled(&m, &ctx, &y, &lat, &err) || nn_ctx_sync(&ctx, &err)) return fail(&err);
    double c = difftest_now();
    if (r > 0) {
      te = fmin(te, b - a);
      td = fmin(td, c - b);
    }
  }
  printf("ours: encode %.3f s, decode %.3f s per image (best of %d), scratch peak %.1f MiB\n", te, td, reps,
         (double)s.peak_bytes / 1048576.0);
  printf("%.3f s per image (encode + decode)\n", te + td);
  /* summaries to compare with diffusers' (same input): mean and mean |.| of latent and image */
  nn_tensor outs[2] = {lat, y};
  const char *names[2] = {"latent", "image"};
  for (int k = 0; k < 2; k++) {
    size_t n = (size_t)nn_tensor_numel(&outs[k]);
    float *hbuf = malloc(n * sizeof(float));
    nn_tensor hb = nn_tensor_view(hbuf, NN_F32, NN_CPU, (int64_t)n, -1, -1, -1);
    nn_tensor flat = nn_tensor_view(outs[k].data, NN_F32, dev, (int64_t)n, -1, -1, -1);
    if (nn_tensor_copy(&hb, &flat, &err)) return fail(&err);
    double sum = 0, asum = 0;
    for (size_t i = 0; i < n; i++) {
      sum += hbuf[i];
      asum += fabs(hbuf[i]);
    }
    printf("%s: mean %.6e, mean abs %.6e\n", names[k], sum / (double)n, asum / (double)n);
    free(hbuf);
  }
  free(hx);
  nn_ctx_free(&ctx);
  nn_arena_free(&s);
  nn_arena_free(&io);
  vae_free(&m);
  return 0;
}
