/* trainer_identity: what a trained model or checkpoint says it was made from (the metadata
 * both files carry: configuration key, task, backbone weights, sample list and cache,
 * estimated normals, augmented rows), and the checks that decide whether one found on disk
 * may be reused (skipped task, resumed checkpoint) or must be redone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "feature_cache.h"
#include "fsutil.h"
#include "h5io.h"
#include "record.h"
#include "sample_cache.h"
#include "trainer_internal.h"

const char *train_est_identity(int est_on, const cmds_fc_info *fi) {
  return !est_on ? "none" : fi->normals_est_id[0] ? fi->normals_est_id : "unnamed";
}

const char *train_aug_identity(int est_on, const cmds_fc_info *fi) {
  return est_on && fi->n[2] > 0 && fi->augmented_id[0] ? fi->augmented_id : "none";
}

int train_same_model_config(const char *have, const cmds_config *cfg) {
  cmds_config got;
  cmds_config_default(&got);
  for (const char *p = have; *p;) {
    const char *semi = strchr(p, ';'), *end = semi ? semi : p + strlen(p), *eq = memchr(p, '=', (size_t)(end - p));
    char kv[CMDS_CFG_VALUE_MAX + 128];
    if (!eq || (size_t)(end - p) >= sizeof kv) return 0;
    memcpy(kv, p, (size_t)(end - p));
    kv[end - p] = 0;
    cmds_error e = {0};
    if (cmds_config_set_arg(&got, kv, "config_key", CMDS_KEYS_MODEL, &e)) return 0;
    p = semi ? semi + 1 : end;
  }
  return cmds_config_equal(&got, cfg, CMDS_KEYS_MODEL);
}

/* The sample cache a model's features came from (metadata cmds.sample_cache_id): "" when the
 * feature cache is older than the attribute. */
int train_sample_cache_matches(const char *path, const cmds_fc_info *fi) {
  char have[64];
  cmds_error e = {0};
  if (train_ckpt_meta(path, "cmds.sample_cache_id", have, sizeof have, &e) != CMDS_OK) have[0] = 0;
  return !strcmp(have, fi->sample_cache_id);
}

int train_est_matches(const char *path, const char *want, const char *want_aug) {
  char have[300], have_aug[CMDS_SC_AUG_ID_LEN];
  cmds_error e = {0};
  if (train_ckpt_meta(path, "cmds.normals_est_id", have, sizeof have, &e) != CMDS_OK) snprintf(have, sizeof have, "none");
  if (train_ckpt_meta(path, "cmds.augmented_id", have_aug, sizeof have_aug, &e) != CMDS_OK)
    snprintf(have_aug, sizeof have_aug, "none");
  return !strcmp(have, want) && !strcmp(have_aug, want_aug);
}

void train_meta_fill(meta_kv *mk, const cmds_task *t, const task_state *s, const char *schema, const char *key,
                      uint64_t seed, int64_t step, int64_t steps) {
  snprintf(mk->step, sizeof mk->step, "%lld", (long long)step);
  snprintf(mk->steps, sizeof mk->steps, "%lld", (long long)steps);
  snprintf(mk->seed, sizeof mk->seed, "%llu", (unsigned long long)seed);
  snprintf(mk->k, sizeof mk->k, "%d", t->k);
  snprintf(mk->version, sizeof mk->version, "%s", cmds_code_version());
  snprintf(mk->streams, sizeof mk->streams, "%s%s%s", s->real_on ? "real" : "", s->real_on && s->est_on ? "," : "",
           s->est_on ? "est" : "");
  size_t used = 0;
  mk->blocks[0] = 0;
  for (int i = 0; i < s->L; i++)
    used += (size_t)snprintf(mk->blocks + used, sizeof mk->blocks - used, "%s%lld", i ? "," : "", (long long)s->fi.blocks[i]);
  const char *pairs[] = {"cmds.schema", schema, "cmds.schema_version", "1", "cmds.config_key", key,
                         "cmds.dataset", t->dataset, "cmds.category", t->category, "cmds.k", mk->k,
                         "cmds.tag", t->tag, "cmds.code_version", mk->version, "cmds.task_seed", mk->seed,
                         "cmds.step", mk->step, "cmds.steps", mk->steps, "cmds.streams", mk->streams,
                         "cmds.weights_id", s->fi.weights_id, "cmds.feature_blocks", mk->blocks,
                         "cmds.sample_list_hash", s->fi.sample_list_hash,
                         "cmds.sample_cache_id", s->fi.sample_cache_id,
                         "cmds.normals_est_id", train_est_identity(s->est_on, &s->fi),
                         "cmds.augmented_id", train_aug_identity(s->est_on && s->aug_on, &s->fi)};
  mk->n = (int)(sizeof pairs / sizeof pairs[0]) / 2;
  for (int i = 0; i < 2 * mk->n; i++) mk->kv[i] = pairs[i];
}

int train_inputs_match(const train_env *env, const cmds_task *t, const char *path) {
  char fc_path[4200], have_w[160], have_h[64];
  snprintf(fc_path, sizeof fc_path, "%s/%s/%s.features.h5", env->cache, t->dataset, t->category);
  cmds_error e = {0};
  hid_t fc;
  cmds_fc_info fi;
  if (!cmds_is_file(fc_path) ||
      cmds_h5_open_read(&fc, fc_path, MPI_COMM_SELF, CMDS_FEATURE_CACHE_SCHEMA, CMDS_FEATURE_CACHE_VERSION, &e))
    return 1;
  int rc = cmds_fc_read_info(fc, fc_path, &fi, &e);
  H5Fclose(fc);
  if (rc) return 1;
  if (train_ckpt_meta(path, "cmds.weights_id", have_w, sizeof have_w, &e) ||
      train_ckpt_meta(path, "cmds.sample_list_hash", have_h, sizeof have_h, &e))
    return 0;
  train_params tp;
  train_config_params(&t->cfg, &tp);
  int est_on = tp.stream_est && (fi.modalities & (1 << CMDS_FC_NORMALS_EST));
  return !strcmp(have_w, fi.weights_id) && !strcmp(have_h, fi.sample_list_hash) && train_sample_cache_matches(path, &fi) &&
         train_est_matches(path, train_est_identity(est_on, &fi), train_aug_identity(est_on && tp.augmented, &fi));
}
