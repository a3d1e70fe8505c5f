/* The score stage's fusion, up-sampling, smoothing and image score (stages/score/fuse.h)
 * against numpy / torch / scipy (tests/fixtures/gen_score.py) for every fusion, stream
 * choice and a spread of l1, l2 and sigma, at 1e-5; and the setting keys: canonical values,
 * derived names, which maps a setting reads, bad keys refused.
 *   test_fuse FIXTURES_DIR */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuse.h"
#include "npy.h"
#include "score_files.h"
#include "taskcfg.h"

static int fails = 0, checks = 0;
#define CHECK(cond, ...)                       \
  do {                                         \
    checks++;                                  \
    if (!(cond)) {                             \
      fails++;                                 \
      fprintf(stderr, "FAIL: " __VA_ARGS__);   \
      fprintf(stderr, "\n");                   \
    }                                          \
  } while (0)

static void run_case(const char *fx, const char *name, int R, int S) {
  char p[4096];
  npy_array st, ex, im, fgm;
  snprintf(p, sizeof p, "%s/score/fuse_%s_streams.npy", fx, name);
  if (npy_load(p, &st)) { fails++; return; }
  snprintf(p, sizeof p, "%s/score/fuse_%s_expected.npy", fx, name);
  if (npy_load(p, &ex)) { fails++; return; }
  snprintf(p, sizeof p, "%s/score/fuse_%s_image.npy", fx, name);
  if (npy_load(p, &im)) { fails++; return; }
  snprintf(p, sizeof p, "%s/score/fuse_%s_fg.npy", fx, name);
  if (npy_load(p, &fgm)) { fails++; return; }
  int N = (int)st.shape[0];
  CHECK(st.shape[2] == R && ex.shape[2] == S, "%s: fixture shapes", name);
  snprintf(p, sizeof p, "%s/score/fuse_settings.txt", fx);
  FILE *f = fopen(p, "r");
  CHECK(f != NULL, "%s: cannot open", p);
  if (!f) return;
  char line[256];
  int si = 0;
  score_finisher fin;
  cmds_error err = {0};
  CHECK(score_finisher_init(&fin, R, S, &err) == 0, "finisher: %s", err.msg);
  float *psi = malloc(sizeof(float) * (size_t)(R * R)), *out = malloc(sizeof(float) * (size_t)(S * S));
  double worst = 0.0;
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '#') continue;
    char l1[32], l2[32], fu[16], mo[16], sg[32], fm[8];
    if (sscanf(line, "%31s %31s %15s %15s %31s %7s", l1, l2, fu, mo, sg, fm) != 6) continue;
    cmds_config c;
    cmds_config_default(&c);
    char kv[6][64];
    snprintf(kv[0], 64, "score.l1=%s", l1);
    snprintf(kv[1], 64, "score.l2=%s", l2);
    snprintf(kv[2], 64, "score.fusion=%s", fu);
    snprintf(kv[3], 64, "score.streams=%s", mo);
    snprintf(kv[4], 64, "score.sigma=%s", sg);
    snprintf(kv[5], 64, "score.fg_mask=%s", fm);
    for (int k = 0; k < 6; k++) CHECK(score_setting_set(&c, kv[k], "test", &err) == 0, "%s: %s", kv[k], err.msg);
    score_params sp;
    score_params_from_cfg(&c, &sp);
    for (int n = 0; n < N; n++) {
      const float *m = (const float *)st.data + (size_t)n * 4 * (size_t)(R * R);
      score_fuse(&sp, m + 0 * R * R, m + 1 * R * R, m + 2 * R * R, m + 3 * R * R, (int64_t)R * R, psi);
      float img = 0;
      const uint8_t *fg = sp.fg_mask ? (const uint8_t *)fgm.data + (size_t)n * (size_t)(S * S) : NULL;
      int rc = score_finish(&fin, psi, fg, sp.sigma, out, &img, &err);
      CHECK(rc == 0, "score_finish: %s", err.msg);
      const float *e = (const float *)ex.data + ((size_t)si * (size_t)N + (size_t)n) * (size_t)(S * S);
      double d = 0.0;
      for (int i = 0; i < S * S; i++) d = fmax(d, fabs((double)out[i] - (double)e[i]));
      double di = fabs((double)img - npy_get(&im, (int64_t)si * N + n));
      CHECK(d <= 1e-5 && di <= 1e-5, "%s setting %d (%s %s %s %s %s %s) sample %d: max |diff| %g, image %g", name, si,
            l1, l2, fu, mo, sg, fm, n, d, di);
      worst = fmax(worst, fmax(d, di));
    }
    si++;
  }
  fclose(f);
  CHECK(si == ex.shape[0], "%s: %d settings read, fixture has %lld", name, si, (long long)ex.shape[0]);
  printf("fuse %s (R %d -> S %d): %d settings x %d samples, max |diff| %.3g\n", name, R, S, si, N, worst);
  free(psi);
  free(out);
  score_finisher_free(&fin);
  npy_free(&st);
  npy_free(&ex);
  npy_free(&im);
  npy_free(&fgm);
}

static void test_keys(void) {
  cmds_config c;
  cmds_error err = {0};
  char name[128];
  cmds_config_default(&c);
  cmds_config_setting_name(&c, name, sizeof name);
  CHECK(!strcmp(name, "default"), "default name: %s", name);
  CHECK(cmds_config_set_arg(&c, "score.l1=3e-1", NULL, CMDS_KEYS_ALL, &err) == 0, "l1");
  CHECK(cmds_config_set_arg(&c, "score.fusion=add", NULL, CMDS_KEYS_ALL, &err) == 0, "fusion");
  CHECK(cmds_config_set_arg(&c, "score.fg_mask=0", NULL, CMDS_KEYS_ALL, &err) == 0, "fg_mask");
  CHECK(cmds_config_set_arg(&c, "score.fg_mask=2", NULL, CMDS_KEYS_ALL, &err) != 0 && strstr(err.msg, "score.fg_mask"), "fg_mask=2");
  cmds_config_setting_name(&c, name, sizeof name);
  CHECK(!strcmp(name, "l1-0.3_fusion-add_fg_mask-0"), "derived name: %s", name);
  CHECK(cmds_config_set_arg(&c, "score.fusion=sum", "x.txt:2", CMDS_KEYS_ALL, &err) != 0 && strstr(err.msg, "score.fusion") &&
            strstr(err.msg, "mul|add|max|2d|3d") && strstr(err.msg, "x.txt:2"),
        "bad fusion message: %s", err.msg);
  CHECK(cmds_config_set_arg(&c, "score.l3=1", NULL, CMDS_KEYS_ALL, &err) != 0 && strstr(err.msg, "unknown") && strstr(err.msg, "score.l1"),
        "unknown key message: %s", err.msg);
  CHECK(cmds_config_set_arg(&c, "score.l1=-1", NULL, CMDS_KEYS_ALL, &err) != 0 && strstr(err.msg, "score.l1"), "negative l1");
  CHECK(cmds_config_set_arg(&c, "score.l1", NULL, CMDS_KEYS_ALL, &err) != 0 && strstr(err.msg, "key=value"), "no value");
  CHECK(score_setting_set(&c, "train.steps=10", "s.txt:1", &err) != 0 && strstr(err.msg, "only change score"),
        "settings refuse training keys: %s", err.msg);
  score_params sp;
  cmds_config_default(&c);
  score_params_from_cfg(&c, &sp);
  CHECK(score_params_uses(&sp) == 15u, "default uses all four maps");
  cmds_config_set_arg(&c, "score.l1=0", NULL, CMDS_KEYS_ALL, &err);
  cmds_config_set_arg(&c, "score.l2=0", NULL, CMDS_KEYS_ALL, &err);
  score_params_from_cfg(&c, &sp);
  CHECK(score_params_uses(&sp) == (1u << PSI_2D_REAL | 1u << PSI_3D_REAL), "l1 = l2 = 0 uses the real maps only");
  cmds_config_set_arg(&c, "score.streams=est", NULL, CMDS_KEYS_ALL, &err);
  cmds_config_set_arg(&c, "score.fusion=2d", NULL, CMDS_KEYS_ALL, &err);
  score_params_from_cfg(&c, &sp);
  CHECK(score_params_uses(&sp) == 1u << PSI_2D_EST, "est + 2d uses psi_2d_est only");
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: test_fuse FIXTURES_DIR\n");
    return 2;
  }
  test_keys();
  run_case(argv[1], "up", 12, 24);
  run_case(argv[1], "same", 16, 16);
  printf("%d checks, %d failed\n", checks, fails);
  return fails ? 1 : 0;
}
