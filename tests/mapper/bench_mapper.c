/* bench_mapper: training steps per second of one mapper (forward with a tape, the loss,
 * backward, AdamW) at batch 2, ours against tests/mapper/mapper_ref.py (PyTorch) on the
 * same machine, printed side by side with the ratio and the achieved conv GFLOP/s.
 * FLOPs are the convolutions' multiply-adds x 2, counted analytically: forward F, backward
 * 2F minus the adaptation convs' input gradients (x needs none). fp32 (TF32 off) on both sides.
 *   bench_mapper [--device cpu|cuda] [--size 224] [--width 768] [--layers 3] [--batch 2]
 *                [--steps 5] [--warmup 2] [--threads 2] [--kind cmds|mlp] [--ref mapper_ref.py]
 * Without python3/torch the PyTorch column is skipped with a message. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mapper.h"
#include "nn.h"
#include "rng.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die_on(int rc, const cmds_error *err) {
  if (rc) {
    fprintf(stderr, "bench_mapper: %s\n", err->msg);
    exit(1);
  }
}

/* Forward conv FLOPs, and the part in the adaptation convs. */
static double conv_flops(const mapper_config *c, int64_t H, int64_t W, double *adapt) {
  double D = (double)c->width, L = (double)c->layers, C = D * L, HW = (double)(H * W);
  if (c->kind == MAPPER_MLP) {
    double mh = c->mlp_hidden ? (double)c->mlp_hidden : C;
    *adapt = 2.0 * HW * C * mh; /* mlp.0's input gradient is not needed either */
    return 2.0 * HW * (C * mh + mh * C);
  }
  double M = fmax(8.0, floor(C / (double)c->ca_reduction)), ph = c->proj_hidden ? (double)c->proj_hidden : 2 * D;
  double sh = (double)c->sel_hidden;
  *adapt = 2.0 * L * D * D * HW;
  double f = L * D * D * HW + C * M * (double)(H + W) + M * C * (double)(H + W) + C * 9 * sh * HW + sh * L * HW +
             D * ph * HW + ph * C * HW;
  return 2.0 * f;
}

int main(int argc, char **argv) {
  const char *device = "cuda", *ref = NULL, *kind = "cmds";
  int64_t size = 224, width = 768, layers = 3, batch = 2;
  int steps = 5, warmup = 2, threads = 2;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) {
      fprintf(stderr, "bench_mapper: %s needs a value\n", a);
      return 2;
    }
    if (!strcmp(a, "--device")) device = v;
    else if (!strcmp(a, "--size")) size = atoll(v);
    else if (!strcmp(a, "--width")) width = atoll(v);
    else if (!strcmp(a, "--layers")) layers = atoll(v);
    else if (!strcmp(a, "--batch")) batch = atoll(v);
    else if (!strcmp(a, "--steps")) steps = atoi(v);
    else if (!strcmp(a, "--warmup")) warmup = atoi(v);
    else if (!strcmp(a, "--threads")) threads = atoi(v);
    else if (!strcmp(a, "--kind")) kind = v;
    else if (!strcmp(a, "--ref")) ref = v;
    else {
      fprintf(stderr, "bench_mapper: unknown option %s\n", a);
      return 2;
    }
    i++;
  }
  nn_device dev = !strcmp(device, "cuda") ? NN_CUDA : NN_CPU;
  if (dev == NN_CUDA && !nn_cuda_available()) {
    printf("bench_mapper: no CUDA device: skipped\n");
    return 77;
  }
  if (dev == NN_CUDA) nn_cuda_select(0);
  cmds_error err = {0};
  mapper_config c;
  mapper_config_default(&c, width, layers);
  c.kind = !strcmp(kind, "mlp") ? MAPPER_MLP : MAPPER_CMDS;
  die_on(mapper_config_check(&c, &err), &err);
  int64_t H = size, W = size, C = width * layers, s4[4] = {batch, C, H, W};
  mapper_model m;
  die_on(mapper_init(&m, &c, 0, dev, &err), &err);
  mapper_adamw opt;
  die_on(mapper_adamw_init(&opt, &m, 1e-4f, &err), &err);
  mapper_tape *tape = mapper_tape_new(&c, batch, H, W, dev, &err);
  die_on(!tape, &err);
  nn_arena io, scratch;
  size_t one = (size_t)(batch * C * H * W) * sizeof(float);
  die_on(nn_arena_init(&io, dev, 4 * (one + 256) + 256, &err), &err);
  die_on(nn_arena_init(&scratch, dev, mapper_scratch_bytes_train(&c, batch, H, W), &err), &err);
  nn_ctx ctx;
  die_on(nn_ctx_init(&ctx, dev, &scratch, NULL, 0, &err), &err);
  nn_tensor x, t, p, dp;
  die_on(nn_tensor_alloc(&x, &io, NN_F32, 4, s4, &err), &err);
  die_on(nn_tensor_alloc(&t, &io, NN_F32, 4, s4, &err), &err);
  die_on(nn_tensor_alloc(&p, &io, NN_F32, 4, s4, &err), &err);
  die_on(nn_tensor_alloc(&dp, &io, NN_F32, 4, s4, &err), &err);
  {
    float *h = malloc(one);
    cmds_rng r;
    cmds_rng_seed(&r, 5);
    for (int k = 0; k < 2; k++) {
      for (size_t i = 0; i < one / sizeof(float); i++) h[i] = (float)cmds_rng_normal(&r);
      nn_tensor hv = nn_tensor_view(h, NN_F32, NN_CPU, batch, C, H, W);
      die_on(nn_tensor_copy(k ? &t : &x, &hv, &err), &err);
    }
    free(h);
  }
  const float lw[3] = {1.2f, 1.0f, 0.8f};
  double loss = 0, t0 = 0;
  for (int s = 0; s < warmup + steps; s++) {
    if (s == warmup) {
      die_on(nn_ctx_sync(&ctx, &err), &err);
      t0 = now();
    }
    mapper_zero_grad(&m);
    die_on(mapper_forward(&m, &ctx, &x, &p, tape, &err), &err);
    die_on(mapper_loss(&ctx, &p, &t, NULL, layers, lw, (double)(batch * H * W), &loss, &dp, &err), &err);
    die_on(mapper_backward(&m, &ctx, &x, &dp, tape, &err), &err);
    die_on(mapper_adamw_step(&opt, &m, &ctx, 1e-4f, &err), &err);
  }
  die_on(nn_ctx_sync(&ctx, &err), &err);
  double dt = now() - t0, ours = steps / dt, adapt;
  double fwd = conv_flops(&c, H, W, &adapt), step_flops = fwd + 2 * fwd - adapt;
  printf("mapper training step (%s, D=%lld L=%lld, batch %lld, %lldx%lld, fp32, %s): %lld parameters, tape %.2f GB, "
         "scratch %.2f GB, conv FLOPs per step %.3g\n",
         kind, (long long)width, (long long)layers, (long long)batch, (long long)H, (long long)W,
         nn_device_name(dev), (long long)mapper_numel(&m), mapper_tape_bytes(&c, batch, H, W) / 1e9,
         scratch.peak_bytes / 1e9, step_flops);
  printf("ours:    %8.4f steps/s  %8.1f GFLOP/s  (last loss %.6f)\n", ours, ours * step_flops / 1e9, loss);

  double torch_sps = -1;
  if (ref) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "python3 %s bench --device %s --kind %s --width %lld --layers %lld --size %lld --batch %lld "
             "--steps %d --warmup %d --threads %d 2>&1",
             ref, dev == NN_CUDA ? "cuda" : "cpu", kind, (long long)width, (long long)layers, (long long)size,
             (long long)batch, steps, warmup, threads);
    FILE *f = popen(cmd, "r");
    char line[1024];
    while (f && fgets(line, sizeof line, f))
      if (sscanf(line, "torch_steps_per_s %lf", &torch_sps) != 1 && strstr(line, "Error")) fputs(line, stdout);
    if (f) pclose(f);
  }
  if (torch_sps > 0)
    printf("PyTorch: %8.4f steps/s  %8.1f GFLOP/s\nratio ours/PyTorch: %.2f\n", torch_sps,
           torch_sps * step_flops / 1e9, ours / torch_sps);
  else
    printf("PyTorch: skipped (%s)\n", ref ? "python3 with torch did not run mapper_ref.py" : "no --ref given");
  nn_ctx_free(&ctx);
  nn_arena_free(&io);
  nn_arena_free(&scratch);
  mapper_tape_free(tape);
  mapper_adamw_free(&opt);
  mapper_free(&m);
  return 0;
}
