/* test_ddim: kernels/diffusion/ddim against diffusers' DDIMScheduler (fixtures from
 * tests/fixtures/gen_diffusion_ddim.py): the float32 alphas_cumprod bit for bit, the
 * timesteps of every spacing exactly, step / add_noise / get_velocity to float rounding,
 * and the configurations ddim_load must refuse.
 *   test_ddim FIXTURE_DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ddim.h"
#include "npy.h"

static const char *dir;

static int load(npy_array *a, const char *cs, const char *name) {
  char p[1024];
  snprintf(p, sizeof(p), "%s/%s/%s", dir, cs, name);
  return npy_load(p, a);
}

/* max |got - want| / (atol + rtol |want|) <= 1 over all elements */
static void check_arr(const float *got, const npy_array *want, int64_t off, int64_t n, double atol, double rtol,
                      const char *what) {
  double worst = 0, wg = 0, ww = 0;
  int64_t wi = 0;
  for (int64_t i = 0; i < n; i++) {
    double w = npy_get(want, off + i), g = got[i];
    double r = fabs(g - w) / (atol + rtol * fabs(w));
    if (!(r <= worst)) { worst = r; wi = i; wg = g; ww = w; }
  }
  CHECK(worst <= 1.0, "%s: element %lld got %.9g want %.9g (%.2f of the tolerance)", what, (long long)wi, wg, ww,
        worst);
}

static void run_case(char *line) {
  char *cs = strtok(line, " \n");
  if (!cs) return;
  ddim_scheduler s;
  cmds_error err = {0};
  char root[1024];
  snprintf(root, sizeof(root), "%s/%s", dir, cs);
  if (ddim_load(&s, root, "scheduler", &err)) {
    CHECK(0, "%s: %s", cs, err.msg);
    return;
  }
  npy_array ac, x, m;
  if (load(&ac, cs, "alphas_cumprod.npy") || load(&x, cs, "sample.npy") || load(&m, cs, "model_out.npy")) {
    CHECK(0, "%s: fixtures missing", cs);
    return;
  }
  CHECK(ac.count == s.num_train_timesteps, "%s: T %d vs %lld", cs, s.num_train_timesteps, (long long)ac.count);
  if (!s.rescale_zero_snr) {
    int64_t nbad = 0;
    for (int64_t i = 0; i < ac.count; i++) nbad += s.alphas_cumprod[i] != (float)npy_get(&ac, i);
    CHECK(nbad == 0, "%s: %lld of %lld alphas_cumprod differ from diffusers' float32 values", cs, (long long)nbad,
          (long long)ac.count);
  } else {
    /* the rescale takes square roots, and torch's CPU sqrt (MKL VML) is not correctly rounded:
     * a few float ulps, amplified near t = T - 1 by the subtraction of the last root (ca. 1e-5) */
    char what[128];
    snprintf(what, sizeof(what), "%s alphas_cumprod (zero SNR)", cs);
    check_arr(s.alphas_cumprod, &ac, 0, ac.count, 1e-12, 2e-5, what);
    CHECK(s.alphas_cumprod[ac.count - 1] == 0.0f, "%s: zero terminal SNR: last alpha_cumprod %g", cs,
          (double)s.alphas_cumprod[ac.count - 1]);
  }

  nn_arena scratch;
  nn_ctx ctx;
  nn_arena_init(&scratch, NN_CPU, 1 << 20, &err);
  nn_ctx_init(&ctx, NN_CPU, &scratch, NULL, 0, &err);
  int64_t numel = x.count;
  float *prev = malloc(sizeof(float) * (size_t)numel);
  nn_tensor tx = nn_tensor_view(x.data, NN_F32, NN_CPU, 2, 4, 5, 6);
  nn_tensor tm = nn_tensor_view(m.data, NN_F32, NN_CPU, 2, 4, 5, 6);
  nn_tensor tp = nn_tensor_view(prev, NN_F32, NN_CPU, 2, 4, 5, 6);
  for (char *tok; (tok = strtok(NULL, " \n"));) {
    int n = atoi(tok);
    char name[64], what[128];
    npy_array ts, st, idx;
    snprintf(name, sizeof(name), "timesteps_%d.npy", n);
    if (load(&ts, cs, name)) { CHECK(0, "%s missing", name); continue; }
    int rc = ddim_set_timesteps(&s, n, &err);
    CHECK(rc == 0, "%s n=%d: %s", cs, n, err.msg);
    if (rc) { npy_free(&ts); continue; }
    int same = s.n_steps == ts.count;
    for (int64_t i = 0; same && i < ts.count; i++) same = s.timesteps[i] == (int64_t)npy_get(&ts, i);
    CHECK(same, "%s n=%d: timesteps differ (%d vs %lld entries, first %lld vs %lld)", cs, n, s.n_steps,
          (long long)ts.count, (long long)s.timesteps[0], (long long)npy_get(&ts, 0));
    snprintf(name, sizeof(name), "step_%d.npy", n);
    load(&st, cs, name);
    snprintf(name, sizeof(name), "step_%d_idx.npy", n);
    load(&idx, cs, name);
    for (int64_t k = 0; k < idx.count; k++) {
      int64_t t = (int64_t)npy_get(&ts, (int64_t)npy_get(&idx, k));
      rc = ddim_step(&s, &ctx, &tp, &tm, t, &tx, &err);
      CHECK(rc == 0, "%s step t=%lld: %s", cs, (long long)t, err.msg);
      snprintf(what, sizeof(what), "%s n=%d step t=%lld", cs, n, (long long)t);
      /* float32 rounding of a few products and sums (values up to ~5) */
      check_arr(prev, &st, k * numel, numel, 2e-6, 2e-6, what);
    }
    /* prev may alias sample */
    if (idx.count > 0) {
      float *cp = malloc(sizeof(float) * (size_t)numel);
      memcpy(cp, x.data, sizeof(float) * (size_t)numel);
      nn_tensor tc = nn_tensor_view(cp, NN_F32, NN_CPU, 2, 4, 5, 6);
      int64_t t = (int64_t)npy_get(&ts, (int64_t)npy_get(&idx, 0));
      ddim_step(&s, &ctx, &tc, &tm, t, &tc, &err);
      snprintf(what, sizeof(what), "%s n=%d step in place", cs, n);
      check_arr(cp, &st, 0, numel, 2e-6, 2e-6, what);
      free(cp);
    }
    npy_free(&ts);
    npy_free(&st);
    npy_free(&idx);
  }
  npy_array noise, nt, an, vel;
  if (!load(&noise, cs, "noise.npy") && !load(&nt, cs, "noise_t.npy") && !load(&an, cs, "add_noise.npy") &&
      !load(&vel, cs, "velocity.npy")) {
    int64_t t[2] = {(int64_t)npy_get(&nt, 0), (int64_t)npy_get(&nt, 1)};
    nn_tensor te = nn_tensor_view(noise.data, NN_F32, NN_CPU, 2, 4, 5, 6);
    char what[128];
    CHECK(ddim_add_noise(&s, &ctx, &tp, &tx, &te, t, &err) == 0, "%s", err.msg);
    snprintf(what, sizeof(what), "%s add_noise", cs);
    check_arr(prev, &an, 0, numel, 1e-6, 1e-6, what);
    CHECK(ddim_velocity(&s, &ctx, &tp, &tx, &te, t, &err) == 0, "%s", err.msg);
    snprintf(what, sizeof(what), "%s velocity", cs);
    check_arr(prev, &vel, 0, numel, 1e-6, 1e-6, what);
    npy_free(&noise); npy_free(&nt); npy_free(&an); npy_free(&vel);
  }
  free(prev);
  npy_free(&ac); npy_free(&x); npy_free(&m);
  nn_ctx_free(&ctx);
  nn_arena_free(&scratch);
  ddim_free(&s);
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: test_ddim FIXTURE_DIR\n"); return 2; }
  dir = argv[1];
  char p[1024], line[512];
  snprintf(p, sizeof(p), "%s/cases.txt", dir);
  FILE *f = fopen(p, "r");
  if (!f) { fprintf(stderr, "cannot open %s\n", p); return 1; }
  int ncases = 0;
  while (fgets(line, sizeof(line), f)) { run_case(line); ncases++; }
  fclose(f);
  CHECK(ncases >= 8, "only %d cases", ncases);

  /* refusals name the file and the key */
  ddim_scheduler s;
  cmds_error err = {0};
  snprintf(p, sizeof(p), "%s/bad_thresholding", dir);
  CHECK(ddim_load(&s, p, "scheduler", &err) == CMDS_EINPUT && strstr(err.msg, "thresholding") &&
        strstr(err.msg, "scheduler_config.json"), "thresholding: %s", err.msg);
  snprintf(p, sizeof(p), "%s/bad_lcm", dir);
  CHECK(ddim_load(&s, p, "scheduler", &err) == CMDS_EINPUT && strstr(err.msg, "LCMScheduler"), "lcm: %s", err.msg);
  snprintf(p, sizeof(p), "%s/no_such_case", dir);
  CHECK(ddim_load(&s, p, "scheduler", &err) != 0 && strstr(err.msg, "no_such_case"), "missing: %s", err.msg);
  snprintf(p, sizeof(p), "%s/marigold", dir);
  if (ddim_load(&s, p, "scheduler", &err) == 0) {
    CHECK(ddim_set_timesteps(&s, 0, &err) == CMDS_EINPUT, "n = 0 accepted");
    CHECK(ddim_set_timesteps(&s, 1001, &err) == CMDS_EINPUT, "n > T accepted");
    ddim_free(&s);
  }
  return CHECK_DONE();
}
