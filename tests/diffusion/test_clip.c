/* test_clip: the CLIP text encoder (kernels/diffusion/clip.h) against transformers'
 * CLIPTextModel on tests/fixtures/diffusion_clip (gen_diffusion_clip.py): sd2 (hidden_act gelu,
 * fp32, "text_model."-prefixed names as SD 2 / Marigold ship them) and sd1 (quick_gelu, fp16
 * storage, names as transformers 5 saves them), last_hidden_state for three tokenized prompts
 * (B = 3) within 1e-4 relative; clip_encode_prompt (tokenizer + encoder) against Marigold's
 * unpadded empty-prompt encoding and the padded form against the batch row; a missing tensor,
 * an id outside the vocabulary and too many tokens give errors that name them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "clip.h"
#include "npy.h"

static double compare(const float *got, const npy_array *want, int64_t n, const char *what) {
  double maxabs = 0, maxerr = 0;
  for (int64_t i = 0; i < n; i++) maxabs = fmax(maxabs, fabs(npy_get(want, i)));
  int bad = 0;
  for (int64_t i = 0; i < n; i++) {
    double w = npy_get(want, i), e = fabs((double)got[i] - w);
    maxerr = fmax(maxerr, e);
    if (!(e <= 1e-4 * fabs(w) + 1e-5 * maxabs) && bad++ < 5)
      CHECK(0, "%s[%lld]: got %.8g want %.8g", what, (long long)i, got[i], w);
  }
  CHECK(bad == 0 && n > 0, "%s: %d of %lld values off; max error %.3g (max |value| %.3g)", what, bad, (long long)n,
        maxerr, maxabs);
  printf("%s: %lld values, max abs error %.3g, max |value| %.3g\n", what, (long long)n, maxerr, maxabs);
  return maxerr;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s FIXTURE_DIR (tests/fixtures/diffusion_clip)\n", argv[0]);
    return 2;
  }
  const char *fx = argv[1];
  char path[2048], root[2048];
  cmds_error err = {0};
  const char *names[2] = {"sd2", "sd1"};
  for (int r = 0; r < 2; r++) {
    snprintf(root, sizeof root, "%s/%s", fx, names[r]);
    clip_text_model m;
    int rc = clip_text_load(&m, root, "text_encoder", NN_CPU, &err);
    CHECK(rc == 0, "load %s: %s", root, err.msg);
    if (rc) continue;
    CHECK(m.hidden == 32 && m.layers == 2 && m.heads == 4 && m.intermediate == 64 && m.max_pos == 77 &&
              m.quick_gelu == (r == 1),
          "%s: config", names[r]);
    npy_array ids, want, empty;
    snprintf(path, sizeof path, "%s/ids_%s.npy", fx, names[r]);
    if (npy_load(path, &ids)) return 1;
    snprintf(path, sizeof path, "%s/out_%s.npy", fx, names[r]);
    if (npy_load(path, &want)) return 1;
    snprintf(path, sizeof path, "%s/empty_%s.npy", fx, names[r]);
    if (npy_load(path, &empty)) return 1;
    int64_t B = ids.shape[0], S = ids.shape[1];
    int32_t *id = malloc((size_t)(B * S) * sizeof *id);
    for (int64_t i = 0; i < B * S; i++) id[i] = (int32_t)npy_get(&ids, i);
    nn_arena scratch;
    nn_ctx ctx;
    CHECK(nn_arena_init(&scratch, NN_CPU, clip_text_workspace_bytes(&m, B, S), &err) == 0, "scratch");
    CHECK(nn_ctx_init(&ctx, NN_CPU, &scratch, NULL, 0, &err) == 0, "ctx");
    float *o = malloc((size_t)(B * S * m.hidden) * sizeof *o);
    nn_tensor out = nn_tensor_view(o, NN_F32, NN_CPU, B, S, m.hidden, -1);
    rc = clip_text_forward(&m, &ctx, &out, id, B, S, &err);
    CHECK(rc == 0, "%s forward: %s", names[r], err.msg);
    CHECK(scratch.used_bytes == 0, "scratch rewound");
    char what[64];
    snprintf(what, sizeof what, "%s last_hidden_state (%lld, %lld, 32)", names[r], (long long)B, (long long)S);
    if (!rc) compare(o, &want, B * S * m.hidden, what);

    /* errors: id outside the vocabulary, too many tokens */
    int32_t keep = id[S + 3];
    id[S + 3] = (int32_t)m.vocab;
    rc = clip_text_forward(&m, &ctx, &out, id, B, S, &err);
    CHECK(rc == CMDS_EINPUT && strstr(err.msg, "id 730 at (1, 3)"), "bad id: %d %s", rc, err.msg);
    id[S + 3] = keep;
    int32_t many[78] = {0};
    float o78[78 * 32];
    nn_tensor out78 = nn_tensor_view(o78, NN_F32, NN_CPU, 1, 78, 32, -1);
    rc = clip_text_forward(&m, &ctx, &out78, many, 1, 78, &err);
    CHECK(rc == CMDS_EINPUT && strstr(err.msg, "1..77 tokens"), "78 tokens: %d %s", rc, err.msg);

    /* the convenience: Marigold's unpadded empty prompt, the SD pipelines' padded prompt */
    float *emb = NULL;
    int64_t es = 0, eh = 0;
    rc = clip_encode_prompt(root, "", &emb, &es, &eh, &err);
    CHECK(rc == 0 && es == 2 && eh == 32, "%s encode empty prompt: rc %d S %lld (%s)", names[r], rc, (long long)es,
          err.msg);
    snprintf(what, sizeof what, "%s empty prompt (1, 2, 32)", names[r]);
    if (!rc && es == 2) compare(emb, &empty, 2 * 32, what);
    free(emb);
    rc = clip_encode_prompt_ex(root, "A photo of a  BAGEL", 1, &emb, &es, &eh, &err);
    CHECK(rc == 0 && es == S && eh == 32, "%s encode padded prompt: rc %d S %lld (%s)", names[r], rc, (long long)es,
          err.msg);
    if (!rc && es == S) { /* row 0 of the batch is "a photo of a bagel" */
      double md = 0;
      for (int64_t i = 0; i < S * 32; i++) md = fmax(md, fabs((double)emb[i] - (double)o[i]));
      /* same math, B = 1 vs 3 GEMMs: summation order only */
      CHECK(md <= 1e-5, "%s: padded prompt encoding differs from batch row 0 by %g", names[r], md);
    }
    free(emb);
    free(o);
    free(id);
    npy_free(&ids);
    npy_free(&want);
    npy_free(&empty);
    nn_ctx_free(&ctx);
    nn_arena_free(&scratch);
    clip_text_free(&m);
  }

  /* a checkpoint without one tensor: named in the error */
  clip_text_model m;
  snprintf(root, sizeof root, "%s/bad/notensor", fx);
  int rc = clip_text_load(&m, root, "text_encoder", NN_CPU, &err);
  CHECK(rc == CMDS_EINPUT && strstr(err.msg, "encoder.layers.1.mlp.fc2.weight") && strstr(err.msg, "model.safetensors"),
        "missing tensor: %d %s", rc, err.msg);
  printf("missing tensor -> %s\n", err.msg);
  snprintf(root, sizeof root, "%s/nonexistent", fx);
  rc = clip_text_load(&m, root, "text_encoder", NN_CPU, &err);
  CHECK(rc != 0 && strstr(err.msg, "nonexistent"), "missing folder: %d %s", rc, err.msg);
  printf("missing folder -> %s\n", err.msg);
  return CHECK_DONE();
}
