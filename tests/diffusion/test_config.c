/* test_config: checkpoint folders in diffusers layout and weights by name
 * (kernels/diffusion/config.h) on tests/fixtures/diffusion_config (written by the safetensors
 * library, gen_diffusion_config.py): F32 / F16 / BF16 storage read to fp32, the fp16 variant
 * taken when the plain file is absent, transformers' model.safetensors, scheduler configs, and
 * one error naming every missing / mis-shaped / unused tensor. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "config.h"

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s FIXTURE_DIR\n", argv[0]);
    return 2;
  }
  const char *root = argv[1];
  cmds_error err = {0};
  dfs_component c;
  int rc = dfs_component_open(&c, root, "comp", NULL, 1, &err);
  CHECK(rc == 0, "open comp: %s", err.msg);
  if (rc) return CHECK_DONE();
  CHECK(strstr(c.weights_path, "diffusion_pytorch_model.safetensors") != NULL, "%s", c.weights_path);
  int64_t ch;
  CHECK(cmds_jv_get_int(&c.config, c.config_path, "channels", 1, 0, &ch, &err) == 0 && ch == 3, "config read");
  nn_arena a;
  CHECK(nn_arena_init(&a, NN_CPU, dfs_component_param_bytes(&c), &err) == 0, "arena");
  dfs_loader L;
  dfs_loader_init(&L, &c, &a);
  nn_tensor ta, tb, tc, td;
  dfs_load(&L, &ta, 2, (int64_t[]){2, 3}, "a");
  dfs_load(&L, &tb, 1, (int64_t[]){4}, "b");
  dfs_load(&L, &tc, 1, (int64_t[]){3}, "c");
  CHECK(dfs_has(&L, "d.%s", "weight") && !dfs_has(&L, "d.bias"), "dfs_has");
  dfs_load(&L, &td, 4, (int64_t[]){2, 2, 1, 1}, "d.%s", "weight");
  CHECK(dfs_loader_finish(&L, 1, &err) == 0, "finish: %s", err.msg);
  CHECK(L.n_loaded == 4 && L.n_params == 6 + 4 + 3 + 4, "counted %lld tensors, %lld params", (long long)L.n_loaded,
        (long long)L.n_params);
  const float *fa = ta.data, *fb = tb.data, *fc = tc.data, *fd = td.data;
  for (int i = 0; i < 6; i++) CHECK(fa[i] == 0.5f * (float)i, "a[%d] = %g", i, fa[i]);
  for (int i = 0; i < 4; i++) CHECK(fb[i] == (float)i / 8, "b (f16)[%d] = %g", i, fb[i]);
  for (int i = 0; i < 3; i++) CHECK(fc[i] == -2.0f * (float)i, "c (bf16)[%d] = %g", i, fc[i]);
  CHECK(fd[3] == 1.0f, "d");

  /* wrong requests: all in one message; unused tensors when strict */
  nn_arena_reset(&a);
  dfs_loader_init(&L, &c, &a);
  dfs_load(&L, &ta, 2, (int64_t[]){3, 2}, "a");
  dfs_load(&L, &tb, 1, (int64_t[]){4}, "missing.weight");
  rc = dfs_loader_finish(&L, 1, &err);
  CHECK(rc == CMDS_EINPUT, "bad requests accepted");
  CHECK(strstr(err.msg, "diffusion_pytorch_model.safetensors") && strstr(err.msg, "a has shape (2, 3), (3, 2) expected") &&
            strstr(err.msg, "missing missing.weight (4)") && strstr(err.msg, "unexpected b") &&
            strstr(err.msg, "unexpected d.weight"),
        "message: %s", err.msg);
  CHECK(((float *)ta.data)[0] == 0 && ta.shape[0] == 3, "a bad tensor is zero-filled in the expected shape");
  dfs_loader_init(&L, &c, &a);
  dfs_load(&L, &ta, 2, (int64_t[]){2, 3}, "a");
  CHECK(dfs_loader_finish(&L, 0, &err) == 0, "unused tensors are fine when not strict: %s", err.msg);
  nn_arena_free(&a);
  dfs_component_close(&c);

  /* fp16-only folder: the variant is taken; asking for a variant that is absent names the file */
  rc = dfs_component_open(&c, root, "half", NULL, 1, &err);
  CHECK(rc == 0 && strstr(c.weights_path, "diffusion_pytorch_model.fp16.safetensors"), "fp16 fallback: %s", err.msg);
  if (!rc) dfs_component_close(&c);
  rc = dfs_component_open(&c, root, "comp", "fp16", 1, &err);
  CHECK(rc == CMDS_EINPUT && strstr(err.msg, "diffusion_pytorch_model.fp16.safetensors"), "variant: %s", err.msg);
  rc = dfs_component_open(&c, root, "text", NULL, 1, &err);
  CHECK(rc == 0 && strstr(c.weights_path, "/model.safetensors"), "transformers naming: %s", err.msg);
  if (!rc) dfs_component_close(&c);
  rc = dfs_component_open(&c, root, "scheduler", NULL, 0, &err);
  CHECK(rc == 0 && strstr(c.config_path, "scheduler_config.json"), "scheduler config: %s", err.msg);
  if (!rc) dfs_component_close(&c);
  rc = dfs_component_open(&c, root, "scheduler", NULL, 1, &err);
  CHECK(rc == CMDS_EINPUT && strstr(err.msg, "no weight file"), "no weights: %s", err.msg);
  rc = dfs_component_open(&c, root, "vae", NULL, 1, &err);
  CHECK(rc == CMDS_EINPUT && strstr(err.msg, "no 'vae' folder"), "missing component: %s", err.msg);
  rc = dfs_component_open(&c, "/nonexistent/ckpt", "vae", NULL, 1, &err);
  CHECK(rc == CMDS_EINPUT && strstr(err.msg, "/nonexistent/ckpt"), "missing root: %s", err.msg);
  cmds_jv mi;
  rc = dfs_model_index(root, &mi, &err);
  CHECK(rc == 0 && cmds_jv_member(&mi, "comp") != NULL, "model_index: %s", err.msg);
  if (!rc) cmds_jv_free(&mi);
  return CHECK_DONE();
}
