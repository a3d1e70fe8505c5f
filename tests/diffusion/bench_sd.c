/* bench_sd: the augment stage's two costs on a Stable Diffusion checkpoint (bench_sd.sh makes a
 * full-size SD 2.1 one with random weights): one LoRA fine-tune step at R x R (rank 16, batch 1;
 * median of STEPS steps after the first; the VAE posterior of the support image is computed once
 * when the trainer is made, as sd_lora_trainer does) and one img2img image at R x R (METHOD's
 * guidance 7.5, I2I_STEPS DDIM steps at STRENGTH), with the LoRA attached; peak memory.
 *   bench_sd ROOT cpu|cuda R STEPS I2I_STEPS STRENGTH      exit 77 when cuda is asked and absent;
 * I2I_STEPS 0: the training step only (profiling it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "difftest.h"
#include "img2img.h"
#include "sd_lora.h"

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc != 7) {
    fprintf(stderr, "usage: %s ROOT cpu|cuda R STEPS I2I_STEPS STRENGTH\n", argv[0]);
    return 2;
  }
  const char *root = argv[1];
  nn_device dev;
  int R = atoi(argv[3]), steps = atoi(argv[4]), i2i = atoi(argv[5]);
  float strength = (float)atof(argv[6]);
  if (steps < 2) steps = 2;
  if (difftest_bench_device(argv[2], &dev)) return 77;
  char desc[256];
  printf("device: %s\n", nn_device_describe(dev, desc, sizeof desc));
  cmds_error err = {0};
  sd_models M;
  double t0 = difftest_now();
  if (sd_models_load(&M, root, dev, &err) || sd_models_set_prompt(&M, "a photo of a bagel", "", &err)) {
    fprintf(stderr, "bench_sd: %s\n", err.msg);
    return 1;
  }
  printf("load + prompt: %.2f s\n", difftest_now() - t0);
  float *img = malloc((size_t)R * R * 3 * sizeof(float)), *out = malloc((size_t)R * R * 3 * sizeof(float));
  unsigned s = 1;
  for (size_t i = 0; i < (size_t)R * R * 3; i++) img[i] = (float)difftest_lcg_u16(&s) / 32767.5f - 1.0f;
  sd_lora_opts o = sd_lora_opts_default();
  size_t need = sd_lora_trainer_workspace_bytes(&M, R);
  size_t need_i = sd_img2img_workspace_bytes(&M, R, R, 7.5f);
  if (need_i > need) need = need_i;
  nn_arena scratch;
  nn_ctx ctx;
  if (nn_arena_init(&scratch, dev, need, &err) || nn_ctx_init(&ctx, dev, &scratch, NULL, 0, &err)) {
    fprintf(stderr, "bench_sd: %s\n", err.msg);
    return 1;
  }
  printf("workspace: %.2f GiB, training tape %.2f GiB\n", (double)need / (1 << 30),
         (double)unet_tape_bytes(&M.unet, 1, R / M.vae_scale, R / M.vae_scale, M.S) / (1 << 30));
  sd_lora_trainer *T = NULL;
  t0 = difftest_now();
  if (sd_lora_trainer_new(&T, &M, &ctx, &o, img, 1, R, &err)) {
    fprintf(stderr, "bench_sd: %s\n", err.msg);
    return 1;
  }
  printf("trainer (LoRA rank %d, VAE posterior of the image): %.2f s\n", o.rank, difftest_now() - t0);
  double *times = calloc((size_t)steps, sizeof(double)), *cpus = calloc((size_t)steps, sizeof(double));
  for (int i = 0; i < steps; i++) {
    double t = difftest_now(), c = difftest_cpu_now(), loss = 0;
    if (sd_lora_trainer_step(T, NULL, &loss, &err)) {
      fprintf(stderr, "bench_sd: %s\n", err.msg);
      return 1;
    }
    if (nn_ctx_sync(&ctx, &err)) return 1;
    times[i] = difftest_now() - t;
    cpus[i] = difftest_cpu_now() - c;
    printf("  step %d: %.3f s (cpu %.3f s), loss %.4f\n", i + 1, times[i], cpus[i], loss);
  }
  difftest_sort(times + 1, (size_t)(steps - 1));
  difftest_sort(cpus + 1, (size_t)(steps - 1));
  printf("ours: %.3f cpu-s per training step (median; min wall %.3f s, min cpu %.3f s)\n", cpus[1 + (steps - 2) / 2],
         times[1], cpus[1]);
  printf("ours: %.3f s per training step (%dx%d, rank %d, batch 1), peak RSS %.2f GiB, scratch peak %.2f GiB\n",
         times[1 + (steps - 2) / 2], R, R, o.rank, difftest_rss_gib(), (double)scratch.peak_bytes / (1 << 30));
  sd_lora_trainer_free(T);
  if (i2i < 1) goto done;
  sd_img2img_opts io = sd_img2img_opts_default();
  io.steps = i2i;
  io.strength = strength;
  int warm = dev == NN_CUDA;
  double ti = 0;
  for (int r = 0; r <= warm; r++) {
    double t = difftest_now();
    if (sd_img2img(&M, &ctx, img, R, R, &io, out, &err)) {
      fprintf(stderr, "bench_sd: %s\n", err.msg);
      return 1;
    }
    ti = difftest_now() - t;
  }
  printf("ours: %.3f s per image (img2img %dx%d, %d DDIM steps x strength %.2f, guidance %.1f, LoRA), peak RSS %.2f GiB\n",
         ti, R, R, i2i, (double)strength, (double)io.guidance, difftest_rss_gib());
done:
  nn_ctx_free(&ctx);
  nn_arena_free(&scratch);
  sd_models_free(&M);
  free(img);
  free(out);
  free(times);
  free(cpus);
  return 0;
}
