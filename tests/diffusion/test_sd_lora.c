/* test_sd_lora: LoRA files (kernels/diffusion/sd_lora: sd_lora_save / sd_lora_load) against the
 * files diffusers and peft wrote for the tiny SD checkpoint (tests/fixtures/gen_diffusion_sd.py):
 * our file has exactly the tensors, dtypes and __metadata__ of StableDiffusionPipeline.save_lora_weights
 * (diffusers' load_lora_weights reads that form: checked in the generator), peft's names load to the same
 * factors, alpha comes from the metadata, save / load round trip, bad files named in the error.
 * With the trainer (sd_lora_trainer_*): the 20-step fine-tune against diffusers + peft with the same
 * draws (loss per step, final LoRA factors), and a stop + resume equal to no stop.
 *   test_sd_lora FIXTURE_DIR */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "jsonread.h"
#include "npy.h"
#include "safetensors.h"
#include "safetensors_write.h"
#include "sd_lora.h"

static const char *dir;
static char tmpdir[256];

static void fixture(char *p, size_t n, const char *name) { snprintf(p, n, "%s/%s", dir, name); }

/* host copies of every adapter's A and B, in the set's order */
static float **snapshot(const unet_model *m) {
  const unet_lora_set *L = m->lora;
  float **s = calloc((size_t)(2 * L->n), sizeof *s);
  cmds_error err;
  for (int i = 0; i < 2 * L->n; i++) {
    const nn_tensor *t = i % 2 ? &L->items[i / 2].B : &L->items[i / 2].A;
    s[i] = malloc(nn_tensor_bytes(t));
    nn_tensor h = nn_tensor_view(s[i], NN_F32, NN_CPU, t->shape[0], t->shape[1], -1, -1);
    nn_tensor_copy(&h, t, &err);
  }
  return s;
}

static void snapshot_free(float **s, int n) {
  for (int i = 0; i < 2 * n; i++) free(s[i]);
  free(s);
}

/* max |a - b| / max |b| over every factor */
static double snapshot_diff(const unet_model *m, float **a, float **b) {
  double d = 0, sc = 0;
  for (int i = 0; i < 2 * m->lora->n; i++) {
    const nn_tensor *t = i % 2 ? &m->lora->items[i / 2].B : &m->lora->items[i / 2].A;
    for (int64_t e = 0; e < nn_tensor_numel(t); e++) {
      d = fmax(d, fabs((double)a[i][e] - b[i][e]));
      sc = fmax(sc, fabs((double)b[i][e]));
    }
  }
  return d / (sc > 0 ? sc : 1);
}

static void test_files(sd_models *M) {
  cmds_error err = {0};
  char p[1200], q[1200], ours[400];
  int n = 0;

  /* diffusers' file */
  fixture(p, sizeof p, "lora_final.safetensors");
  int rc = sd_lora_load(&M->unet, p, &err);
  CHECK(rc == 0, "load diffusers' file: %s", err.msg);
  if (rc) return;
  n = M->unet.lora->n;
  CHECK(n == 56 && M->unet.lora->rank == 4 && M->unet.lora->alpha == 4.0f && M->unet.lora->items[0].scale == 1.0f,
        "adapters %d rank %d alpha %g", n, M->unet.lora->rank, (double)M->unet.lora->alpha);
  float **ref = snapshot(&M->unet);
  int nonzero = 0;
  for (int64_t e = 0; e < nn_tensor_numel(&M->unet.lora->items[3].B); e++) nonzero += ref[7][e] != 0.0f;
  CHECK(nonzero > 0, "the trained B factors are not zero");

  /* ours: the same tensors, dtypes, shapes, values and metadata as diffusers' */
  snprintf(ours, sizeof ours, "%s/ours.safetensors", tmpdir);
  const char *meta[] = {"cmds.category", "cable_gland", "cmds.steps", "20", NULL};
  rc = sd_lora_save(&M->unet, ours, meta, &err);
  CHECK(rc == 0, "save: %s", err.msg);
  cmds_st_file a, b;
  if (!rc && !cmds_st_open(&a, ours, &err) && !cmds_st_open(&b, p, &err)) {
    CHECK(a.n_tensors == b.n_tensors, "tensor count %d vs diffusers' %d", a.n_tensors, b.n_tensors);
    int same = 0;
    for (int i = 0; i < b.n_tensors; i++) {
      const cmds_st_tensor *tb = &b.tensors[i], *ta = cmds_st_find(&a, tb->name);
      if (!ta) { CHECK(0, "our file lacks %s", tb->name); continue; }
      CHECK(ta->dtype == tb->dtype && ta->ndim == tb->ndim && ta->shape[0] == tb->shape[0] &&
            ta->shape[1] == tb->shape[1], "%s: dtype / shape", tb->name);
      same += ta->end - ta->begin == tb->end - tb->begin && !memcmp(ta->data, tb->data, tb->end - tb->begin);
    }
    CHECK(same == b.n_tensors, "%d of %d tensors bit-identical", same, b.n_tensors);
    const char *ma = cmds_st_meta(&a, "lora_adapter_metadata"), *mb = cmds_st_meta(&b, "lora_adapter_metadata");
    CHECK(ma && mb && !strcmp(ma, mb), "lora_adapter_metadata as diffusers writes it:\n%s\nvs\n%s", ma ? ma : "-",
          mb ? mb : "-");
    CHECK(cmds_st_meta(&a, "format") && !strcmp(cmds_st_meta(&a, "format"), "pt"), "format pt");
    CHECK(cmds_st_meta(&a, "cmds.category") && !strcmp(cmds_st_meta(&a, "cmds.category"), "cable_gland"), "extra metadata");
    cmds_st_close(&a);
    cmds_st_close(&b);
  } else {
    CHECK(0, "open: %s", err.msg);
  }
  const char *reserved[] = {"format", "x", NULL};
  CHECK(sd_lora_save(&M->unet, ours, reserved, &err) == CMDS_EINPUT && strstr(err.msg, "reserved"), "%s", err.msg);

  /* round trip through our file, then peft's names: the same factors */
  unet_lora_detach(&M->unet);
  rc = sd_lora_load(&M->unet, ours, &err);
  CHECK(rc == 0, "load ours: %s", err.msg);
  if (!rc) {
    float **s = snapshot(&M->unet);
    CHECK(snapshot_diff(&M->unet, s, ref) == 0, "round trip");
    snapshot_free(s, n);
  }
  fixture(q, sizeof q, "lora_final_peft.safetensors");
  rc = sd_lora_load(&M->unet, q, &err);
  CHECK(rc == 0, "load peft's file: %s", err.msg);
  if (!rc) {
    float **s = snapshot(&M->unet);
    CHECK(snapshot_diff(&M->unet, s, ref) == 0 && M->unet.lora->alpha == 4.0f, "peft names: the same factors, alpha = r");
    snapshot_free(s, n);
  }
  fixture(q, sizeof q, "lora_alpha8.safetensors");
  rc = sd_lora_load(&M->unet, q, &err);
  CHECK(rc == 0 && M->unet.lora->alpha == 8.0f && M->unet.lora->items[5].scale == 2.0f, "alpha 8 from the metadata: %s",
        err.msg);

  /* bad files */
  cmds_st_file f;
  if (cmds_st_open(&f, p, &err)) { CHECK(0, "%s", err.msg); snapshot_free(ref, n); return; }
  cmds_st_out *t = calloc((size_t)f.n_tensors + 1, sizeof *t);
  int nt = 0, dropped = -1;
  char bad[400];
  float junk[4 * 64] = {0};
  for (int i = 0; i < f.n_tensors; i++) {
    const cmds_st_tensor *s = &f.tensors[i];
    if (dropped < 0 && strstr(s->name, "mid_block") && strstr(s->name, "attn2.to_v.lora.up")) { dropped = i; continue; }
    t[nt] = (cmds_st_out){s->name, CMDS_ST_F32, 2, {s->shape[0], s->shape[1]}, s->data};
    nt++;
  }
  snprintf(bad, sizeof bad, "%s/missing.safetensors", tmpdir);
  CHECK(cmds_st_write(bad, t, nt, NULL, 0, &err) == 0, "%s", err.msg);
  CHECK(sd_lora_load(&M->unet, bad, &err) == CMDS_EINPUT &&
        strstr(err.msg, "mid_block.attentions.0.transformer_blocks.0.attn2.to_v.lora_B") && !M->unet.lora,
        "missing adapter named, LoRA detached: %s", err.msg);
  /* an unknown module and a mis-shaped factor */
  t[nt] = (cmds_st_out){"unet.down_blocks.7.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight", CMDS_ST_F32, 2,
                        {4, 8}, junk};
  t[0].shape[1] = 3;
  snprintf(bad, sizeof bad, "%s/unknown.safetensors", tmpdir);
  CHECK(cmds_st_write(bad, t, nt + 1, NULL, 0, &err) == 0, "%s", err.msg);
  CHECK(sd_lora_load(&M->unet, bad, &err) == CMDS_EINPUT && strstr(err.msg, "down_blocks.7") && strstr(err.msg, t[0].name),
        "unknown + mis-shaped named: %s", err.msg);
  t[0].shape[1] = f.tensors[0].shape[1];
  /* ranks that differ */
  t[nt] = (cmds_st_out){"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight", CMDS_ST_F32, 2,
                        {2, 8}, junk};
  snprintf(bad, sizeof bad, "%s/rank.safetensors", tmpdir);
  for (int i = 0; i < nt; i++)
    if (!strcmp(t[i].name, t[nt].name)) t[i] = t[nt];
  CHECK(cmds_st_write(bad, t, nt, NULL, 0, &err) == 0, "%s", err.msg);
  CHECK(sd_lora_load(&M->unet, bad, &err) == CMDS_EINPUT && strstr(err.msg, "rank"), "mixed ranks: %s", err.msg);
  /* not a LoRA at all: the UNet's own weights; not a file */
  snprintf(bad, sizeof bad, "%s/ckpt/unet/diffusion_pytorch_model.fp16.safetensors", dir);
  CHECK(sd_lora_load(&M->unet, bad, &err) == CMDS_EINPUT && strstr(err.msg, "no LoRA tensor"), "unet weights: %s", err.msg);
  CHECK(sd_lora_load(&M->unet, "/nonexistent/lora.safetensors", &err) != 0 && strstr(err.msg, "/nonexistent/lora"),
        "no file: %s", err.msg);
  free(t);
  cmds_st_close(&f);
  CHECK(sd_lora_save(&M->unet, ours, NULL, &err) == CMDS_EINPUT && strstr(err.msg, "no LoRA"), "save without LoRA: %s",
        err.msg);
  snapshot_free(ref, n);
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: test_sd_lora FIXTURE_DIR\n"); return 2; }
  dir = argv[1];
  snprintf(tmpdir, sizeof tmpdir, "/tmp/test_sd_lora.%d", (int)getpid());
  char cmd[600], root[1100];
  snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", tmpdir, tmpdir);
  if (system(cmd)) return 1;
  snprintf(root, sizeof root, "%s/ckpt", dir);
  sd_models M;
  cmds_error err = {0};
  int rc = sd_models_load(&M, root, NN_CPU, &err);
  CHECK(rc == 0, "load: %s", err.msg);
  if (rc) return CHECK_DONE();
  test_files(&M);
  sd_models_free(&M);
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd)) return 1;
  return CHECK_DONE();
}
