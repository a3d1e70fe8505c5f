/* trainer: one training task's run (see trainer.h): skip a finished task, resume from a
 * checkpoint, the step loop (streams, gradient sum, AdamW, progress, stop signals, test
 * hooks), checkpoints, and the outputs (mapper.safetensors, mapper.json, train.record.json).
 * The task's setup: trainer_setup.c; one step's work: trainer_step.c; what models and
 * checkpoints were made from: trainer_identity.c (shared internals: trainer_internal.h). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "fsutil.h"
#include "progress.h"
#include "record.h"
#include "trainer_internal.h"

#define TRAIN_SCHEMA "cmds.train_output"
#define TRAIN_SCHEMA_VERSION 1
#define CKPT_SCHEMA "cmds.train_checkpoint"

static const char *const prefixes[2] = {"rgb_to_3d.", "3d_to_rgb."};

/* The task seed: train.seed and the task's identity (never the rank or the tag). */
static uint64_t task_seed(const cmds_task *t, uint64_t seed) {
  char id[200];
  snprintf(id, sizeof id, "%s/%s", t->dataset, t->category);
  return train_mix3(seed, cmds_hash_str(id), (uint64_t)t->k);
}

void train_task_dir(const train_env *env, const cmds_task *t, char *out, size_t cap) {
  snprintf(out, cap, "%s/models/%s/%s/k%d/%s", env->run, t->dataset, t->category, t->k, t->tag);
}

static void write_sidecar_json(cmds_json *j, const cmds_task *t, const task_state *s, const train_params *tp,
                               const char *key, uint64_t seed, int64_t steps_done, const double *last_loss,
                               const char *fc_path, const train_env *env) {
  cmds_json_object_begin(j);
  cmds_json_kv_str(j, "schema", TRAIN_SCHEMA);
  cmds_json_kv_int(j, "schema_version", TRAIN_SCHEMA_VERSION);
  cmds_json_key(j, "task");
  cmds_json_object_begin(j);
  cmds_json_kv_str(j, "dataset", t->dataset);
  cmds_json_kv_str(j, "category", t->category);
  cmds_json_kv_int(j, "k", t->k);
  cmds_json_kv_str(j, "tag", t->tag);
  cmds_json_kv_str(j, "origin", t->origin);
  cmds_json_object_end(j);
  cmds_json_key(j, "config");
  cmds_config_json(&t->cfg, j, CMDS_KEYS_ALL);
  cmds_json_kv_str(j, "config_key", key);
  cmds_json_kv_str(j, "code_version", cmds_code_version());
  char sd[32];
  snprintf(sd, sizeof sd, "%llu", (unsigned long long)seed);
  cmds_json_kv_str(j, "task_seed", sd);
  cmds_json_kv_int(j, "steps", steps_done);
  cmds_json_key(j, "final_loss");
  cmds_json_object_begin(j);
  cmds_json_kv_num(j, "total", last_loss[0] + last_loss[1] + last_loss[2] + last_loss[3]);
  cmds_json_kv_num(j, "real.rgb_to_3d", last_loss[0]);
  cmds_json_kv_num(j, "real.3d_to_rgb", last_loss[1]);
  cmds_json_kv_num(j, "est.rgb_to_3d", last_loss[2]);
  cmds_json_kv_num(j, "est.3d_to_rgb", last_loss[3]);
  cmds_json_object_end(j);
  cmds_json_key(j, "streams");
  cmds_json_object_begin(j);
  cmds_json_kv_bool(j, "real", s->real_on);
  cmds_json_kv_bool(j, "est", s->est_on);
  cmds_json_kv_str(j, "est_off_reason",
                   s->est_on ? "" : !tp->stream_est ? "train.streams=real" : "no normals_est in the feature cache");
  cmds_json_kv_int(j, "est_support_rows", s->est_on ? s->k : 0);
  cmds_json_kv_bool(j, "augmented", s->aug_on);
  cmds_json_kv_int(j, "est_augmented_rows", s->n_aug);
  cmds_json_kv_str(j, "est_augmented_note", s->aug_note);
  cmds_json_kv_str(j, "augmented_id", train_aug_identity(s->est_on && s->aug_on, &s->fi));
  cmds_json_object_end(j);
  cmds_json_kv_bool(j, "backbone_online", s->online);
  cmds_json_key(j, "input");
  cmds_json_object_begin(j);
  cmds_json_kv_str(j, "feature_cache", fc_path);
  cmds_json_kv_str(j, "backbone", s->fi.backbone);
  cmds_json_kv_str(j, "weights_id", s->fi.weights_id);
  cmds_json_kv_str(j, "sample_list_hash", s->fi.sample_list_hash);
  cmds_json_kv_str(j, "sample_cache_id", s->fi.sample_cache_id);
  cmds_json_key(j, "blocks");
  cmds_json_array_begin(j);
  for (int i = 0; i < s->L; i++) cmds_json_int(j, s->fi.blocks[i]);
  cmds_json_array_end(j);
  cmds_json_kv_int(j, "grid", s->fi.grid);
  cmds_json_kv_int(j, "width", s->fi.width);
  cmds_json_kv_int(j, "image_size", s->fi.image_size);
  cmds_json_object_end(j);
  cmds_json_key(j, "mapper");
  cmds_json_object_begin(j);
  cmds_json_kv_str(j, "file", "mapper.safetensors");
  cmds_json_kv_int(j, "resolution", s->H);
  cmds_json_kv_int(j, "params_per_mapper", mapper_numel(&s->model[0]));
  cmds_json_object_end(j);
  cmds_json_kv_int(j, "ranks_per_task", env->group.size);
  cmds_json_kv_str(j, "device", nn_device_name(env->device));
  cmds_json_object_end(j);
}

/* Test hook (tests/jobs/test_e2e.sh): CMDS_TEST_HOLD_AT_STEP=N holds a task after its step N
 * until a stop is requested (a signal on any rank; at most 120 s, then it goes on), in the tasks
 * whose label (dataset/category/k<k>/tag) contains CMDS_TEST_HOLD_TASK (every task when unset).
 * The group's rank 0 prints "held after step N" first, so a test can kill cmds-run while the
 * task is known to be running. Collective over the group (the stop test is an all-reduce). */
static void test_hold(const cmds_mpi *g, const char *label, int64_t done) {
  const char *at = getenv("CMDS_TEST_HOLD_AT_STEP"), *task = getenv("CMDS_TEST_HOLD_TASK");
  if (!at || done != atoll(at) || (task && !strstr(label, task))) return;
  if (g->rank == 0) fprintf(stderr, "[train] %s: held after step %lld until a stop is requested (CMDS_TEST_HOLD_AT_STEP)\n", label, (long long)done);
  for (int i = 0; i < 6000 && !cmds_stop_requested_any(g); i++) usleep(20000);
}

int train_task_run(train_env *env, const cmds_task *t, train_result *res, cmds_error *err) {
  memset(res, 0, sizeof *res);
  const cmds_mpi *g = &env->group;
  double t0 = cmds_now();
  train_params tp;
  train_config_params(&t->cfg, &tp);
  res->steps_total = tp.steps;
  char key[2048], dir[4096], final[4200], sidecar[4200], rec_path[4200], ckpt[4200], ckpt_json[4200];
  cmds_config_join(&t->cfg, CMDS_KEYS_MODEL, key, sizeof key);
  train_task_dir(env, t, dir, sizeof dir);
  snprintf(final, sizeof final, "%s/mapper.safetensors", dir);
  snprintf(sidecar, sizeof sidecar, "%s/mapper.json", dir);
  snprintf(rec_path, sizeof rec_path, "%s/train.record.json", dir);
  snprintf(ckpt, sizeof ckpt, "%s/ckpt.safetensors", dir);
  snprintf(ckpt_json, sizeof ckpt_json, "%s/ckpt.json", dir);

  /* Finished with the same configuration: skip. Another configuration in the folder: refuse
   * (a score run may rest on it), unless --force. */
  int skip = 0, rc = CMDS_OK;
  if (g->rank == 0 && !env->force && cmds_is_file(final) && cmds_is_file(sidecar)) {
    char have[2048];
    cmds_error e = {0};
    if (train_ckpt_meta(final, "cmds.config_key", have, sizeof have, &e) == CMDS_OK) {
      if (train_same_model_config(have, &t->cfg)) {
        skip = train_inputs_match(env, t, final);
        if (!skip) fprintf(stderr, "[train] %s: made from other features (weights, sample cache, estimated normals or augmented samples changed): retraining\n", final);
      } else
        rc = CMDS_FAIL(err, CMDS_EINPUT,
                       "%s: a mapper trained with another configuration is already here (%s; this task: %s); "
                       "use another tag or --force",
                       final, have, key);
    }
  }
  MPI_CHECK(MPI_Bcast(&skip, 1, MPI_INT, 0, g->comm));
  rc = cmds_mpi_agree(g, err, rc);
  if (rc || skip) {
    res->status = rc ? TRAIN_FAILED : TRAIN_SKIPPED;
    res->elapsed_s = cmds_now() - t0;
    return rc;
  }

  task_state s;
  memset(&s, 0, sizeof s);
  s.online = tp.noise_sigma > 0;
  char fc_path[4200], sc_path[4200];
  rc = train_load_inputs(env, t, &tp, &s, fc_path, sc_path, err);
  if (!rc && s.online) rc = train_ensure_backbone(env, &s.fi, fc_path, err);
  uint64_t seed = task_seed(t, tp.seed);
  if (!rc) rc = train_setup_compute(env, &s, &tp, seed, err);
  if (!rc && g->rank == 0) rc = cmds_mkdir_p(dir, err);
  rc = cmds_mpi_agree(g, err, rc);
  res->est_stream = s.est_on;
  res->backbone_online = s.online;

  /* Resume: a checkpoint of the same configuration. */
  int64_t start = 0;
  if (!rc && !env->force && cmds_is_file(ckpt)) {
    char have[2048], step_s[32];
    cmds_error e = {0};
    char have_w[160], have_h[64];
    int ok = train_ckpt_meta(ckpt, "cmds.config_key", have, sizeof have, &e) == CMDS_OK && train_same_model_config(have, &t->cfg) &&
             train_ckpt_meta(ckpt, "cmds.step", step_s, sizeof step_s, &e) == CMDS_OK &&
             train_ckpt_meta(ckpt, "cmds.weights_id", have_w, sizeof have_w, &e) == CMDS_OK &&
             train_ckpt_meta(ckpt, "cmds.sample_list_hash", have_h, sizeof have_h, &e) == CMDS_OK &&
             !strcmp(have_w, s.fi.weights_id) && !strcmp(have_h, s.fi.sample_list_hash) && train_sample_cache_matches(ckpt, &s.fi) &&
             train_est_matches(ckpt, train_est_identity(s.est_on, &s.fi), train_aug_identity(s.est_on && s.aug_on, &s.fi));
    int ok_all = 0;
    MPI_CHECK(MPI_Allreduce(&ok, &ok_all, 1, MPI_INT, MPI_MIN, g->comm));
    if (ok_all) {
      mapper_model *ms[2] = {&s.model[0], &s.model[1]};
      mapper_adamw *os[2] = {&s.opt[0], &s.opt[1]};
      start = strtoll(step_s, NULL, 10);
      rc = cmds_mpi_agree(g, err, train_ckpt_load(ckpt, ms, os, prefixes, 2, err));
      s.opt[0].step = s.opt[1].step = start;
      if (!rc && g->rank == 0) fprintf(stderr, "[train] %s: resuming from the checkpoint at step %lld\n", dir, (long long)start);
    } else if (g->rank == 0) {
      fprintf(stderr, "[train] %s: ignoring a checkpoint of another configuration or other features, or an unreadable one (%s)\n",
              dir, e.code ? e.msg : "configuration or input features differ");
    }
  }
  res->start_step = start;

  cmds_record rec;
  cmds_record_begin(&rec, "train", env->argc, env->argv, g);
  char label[400];
  snprintf(label, sizeof label, "%s/%s/k%d/%s", t->dataset, t->category, t->k, t->tag);
  cmds_progress prog;
  cmds_progress_begin(&prog, g, "train", label, tp.steps - start);
  double last[4] = {0, 0, 0, 0}, first_total = -1, t_steps = cmds_now();
  const char *kill_at = getenv("CMDS_TEST_KILL_AT_STEP"), *sig_at = getenv("CMDS_TEST_SIGNAL_AT_STEP");
  int stopped = 0;
  int64_t step = start;
  for (; step < tp.steps && !rc; step++) {
    for (int m = 0; m < 2; m++) mapper_zero_grad(&s.model[m]);
    double loss[4] = {0, 0, 0, 0};
    int lrc = CMDS_OK;
    if (s.real_on) lrc = train_step_stream(env, &s, &tp, seed, step, STREAM_R, loss, err);
    if (!lrc && s.est_on) lrc = train_step_stream(env, &s, &tp, seed, step, STREAM_E, loss + 2, err);
    if (!lrc) lrc = train_allreduce_grads(env, &s, err);
    rc = cmds_mpi_agree(g, err, lrc);
    if (rc) break;
    MPI_CHECK(MPI_Allreduce(loss, last, 4, MPI_DOUBLE, MPI_SUM, g->comm));
    if (first_total < 0) first_total = last[0] + last[1] + last[2] + last[3];
    float lr = (float)mapper_cosine_lr(step, tp.steps, tp.lr, tp.lr_min);
    for (int m = 0; m < 2 && !lrc; m++) lrc = mapper_adamw_step(&s.opt[m], &s.model[m], &s.ctx, lr, err);
    if (!lrc) lrc = nn_ctx_sync(&s.ctx, err);
    rc = cmds_mpi_agree(g, err, lrc);
    if (rc) break;
    cmds_progress_step(&prog, 1);
    int64_t done = step + 1;
    if (sig_at && g->rank == 0 && done == atoll(sig_at)) raise(SIGTERM); /* test: one rank gets the signal */
    test_hold(g, label, done);
    stopped = cmds_stop_requested_any(g);
    if (done < tp.steps && (stopped || (env->checkpoint_every > 0 && done % env->checkpoint_every == 0))) {
      int crc = CMDS_OK;
      if (g->rank == 0) {
        meta_kv mk;
        train_meta_fill(&mk, t, &s, CKPT_SCHEMA, key, seed, done, tp.steps);
        mapper_model *ms[2] = {&s.model[0], &s.model[1]};
        mapper_adamw *os[2] = {&s.opt[0], &s.opt[1]};
        crc = train_ckpt_save(ckpt, ms, os, prefixes, 2, mk.kv, mk.n, err);
        if (!crc) {
          cmds_json j;
          cmds_json_init(&j, 2);
          cmds_json_object_begin(&j);
          cmds_json_kv_str(&j, "schema", CKPT_SCHEMA);
          cmds_json_kv_int(&j, "schema_version", 1);
          cmds_json_kv_str(&j, "config_key", key);
          cmds_json_kv_int(&j, "step", done);
          cmds_json_kv_int(&j, "steps", tp.steps);
          cmds_json_kv_str(&j, "task_seed", mk.seed);
          cmds_json_kv_num(&j, "loss", last[0] + last[1] + last[2] + last[3]);
          cmds_json_kv_str(&j, "reason", stopped ? "signal" : "interval");
          cmds_json_object_end(&j);
          cmds_json_raw(&j, "\n");
          crc = cmds_write_file_atomic(ckpt_json, j.buf, j.len, err);
          cmds_json_free(&j);
        }
      }
      rc = cmds_mpi_agree(g, err, crc);
    }
    if (!rc && kill_at && g->rank == 0 && done == atoll(kill_at)) raise(SIGKILL); /* test: a hard kill */
    if (!rc && stopped && done < tp.steps) {
      step++;
      rc = CMDS_FAIL(err, CMDS_EINTERRUPTED, "%s: stopped by a signal at step %lld of %lld; checkpoint written, rerun to resume",
                     label, (long long)done, (long long)tp.steps);
      break;
    }
  }
  double step_time = cmds_now() - t_steps;
  res->steps_run = step - start;
  res->final_loss = last[0] + last[1] + last[2] + last[3];
  if (!rc) {
    cmds_progress_end(&prog);
    int wrc = CMDS_OK;
    if (g->rank == 0) {
      meta_kv mk;
      train_meta_fill(&mk, t, &s, TRAIN_SCHEMA, key, seed, tp.steps, tp.steps);
      const mapper_model *ms[2] = {&s.model[0], &s.model[1]};
      wrc = mapper_save(ms, prefixes, 2, mk.kv, mk.n, final, err);
      if (!wrc) {
        cmds_json j;
        cmds_json_init(&j, 2);
        write_sidecar_json(&j, t, &s, &tp, key, seed, tp.steps, last, fc_path, env);
        cmds_json_raw(&j, "\n");
        wrc = cmds_write_file_atomic(sidecar, j.buf, j.len, err);
        cmds_json_free(&j);
      }
      if (!wrc) {
        remove(ckpt);
        remove(ckpt_json);
      }
    }
    rc = cmds_mpi_agree(g, err, wrc);
  }
  res->elapsed_s = cmds_now() - t0;
  if (!rc) {
    cmds_json *j = &rec.json;
    cmds_json_kv_str(j, "dataset", t->dataset);
    cmds_json_kv_str(j, "category", t->category);
    cmds_json_kv_int(j, "k", t->k);
    cmds_json_kv_str(j, "tag", t->tag);
    cmds_json_kv_str(j, "task_origin", t->origin);
    cmds_json_kv_str(j, "output", final);
    cmds_json_kv_str(j, "feature_cache", fc_path);
    cmds_json_kv_str(j, "sample_cache", sc_path);
    cmds_json_key(j, "config");
    cmds_config_json(&t->cfg, j, CMDS_KEYS_ALL);
    cmds_json_kv_int(j, "steps", tp.steps);
    cmds_json_kv_int(j, "resumed_from_step", start);
    cmds_json_kv_int(j, "steps_run", res->steps_run);
    cmds_json_kv_num(j, "first_loss", first_total);
    cmds_json_kv_num(j, "final_loss", res->final_loss);
    cmds_json_kv_bool(j, "real_stream", s.real_on);
    cmds_json_kv_bool(j, "est_stream", s.est_on);
    cmds_json_kv_str(j, "est_stream_note",
                     s.est_on ? "" : !tp.stream_est ? "off: train.streams=real"
                                                    : "off: the feature cache has no normals_est (no cmds-estimate run)");
    cmds_json_kv_int(j, "est_support_rows", s.est_on ? s.k : 0);
    cmds_json_kv_int(j, "est_augmented_rows", s.n_aug);
    cmds_json_kv_str(j, "est_augmented_note", s.aug_note);
    cmds_json_kv_int(j, "augmented_rows_in_cache", s.est_on ? s.fi.n[2] : 0);
    cmds_json_kv_bool(j, "augmented", s.aug_on);
    cmds_json_kv_str(j, "augmented_id", train_aug_identity(s.est_on && s.aug_on, &s.fi));
    cmds_json_kv_str(j, "sample_cache_id", s.fi.sample_cache_id);
    cmds_json_kv_bool(j, "backbone_online", s.online);
    cmds_json_kv_str(j, "backbone_note", s.online ? "RGB features recomputed every step with input noise (train.noise_sigma > 0)"
                                                  : "cached RGB features (train.noise_sigma = 0)");
    cmds_json_kv_str(j, "weights_id", s.fi.weights_id);
    cmds_json_kv_int(j, "ranks_per_task", g->size);
    cmds_json_kv_str(j, "collective", cmds_collective_backend(&env->coll));
    cmds_json_kv_str(j, "device", nn_device_name(env->device));
    cmds_json_kv_num(j, "seconds_per_step", res->steps_run ? step_time / (double)res->steps_run : 0);
    cmds_record_finish(&rec, rec_path, "ok", err);
    res->status = TRAIN_DONE;
  } else {
    cmds_json_free(&rec.json);
    res->status = rc == CMDS_EINTERRUPTED ? TRAIN_INTERRUPTED : TRAIN_FAILED;
  }
  train_task_state_free(&s);
  return rc;
}
