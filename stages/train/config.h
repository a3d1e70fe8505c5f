/* config: the configuration keys of a task (README "Configuration keys", METHOD.md's
 * defaults), as the tasks file, --set, the sidecar and the checkpoint spell them.
 *
 * Values are kept as canonical text (integers in decimal, numbers in the shortest form that
 * reads back to the same double, enums as given), so two spellings of one value ("1e-4",
 * "0.0001") are the same configuration. train_config_key() joins the keys that change a
 * trained mapper (mapper.*, train.*, loss.*, backbone.*) into one string: a finished model or
 * a checkpoint is reused only when its key is equal. score.* keys are carried (a tasks file
 * is shared with cmds-score) but never change training. */
#ifndef CMDS_TRAIN_CONFIG_H
#define CMDS_TRAIN_CONFIG_H

#include <stdint.h>

#include "cmds_error.h"
#include "json.h"

enum {
  K_MAPPER_KIND, K_RESOLUTION, K_ADAPT_GROUPS, K_CA_REDUCTION, K_CA_GROUPS, K_SEL_HIDDEN,
  K_PROJ_HIDDEN, K_MLP_HIDDEN,
  K_STEPS, K_BATCH, K_LR, K_LR_MIN, K_WEIGHT_DECAY, K_NOISE_SIGMA, K_SEED, K_STREAMS,
  K_LAYER_WEIGHTS,
  K_SCORE_L1, K_SCORE_L2, K_SCORE_FUSION, K_SCORE_STREAMS, K_SCORE_SIGMA, K_SCORE_FG_MASK,
  K_FINAL_NORM,
  K_NKEYS
};

#define TRAIN_CFG_VALUE_MAX 96
#define TRAIN_MAX_LAYERS 8

typedef struct train_config {
  char value[K_NKEYS][TRAIN_CFG_VALUE_MAX];
} train_config;

/* The typed view of the keys training uses. */
typedef struct train_params {
  int mlp; /* mapper.kind=mlp */
  int64_t resolution, adapt_groups, ca_reduction, ca_groups, sel_hidden, proj_hidden, mlp_hidden;
  int64_t steps, batch;
  double lr, lr_min, weight_decay, noise_sigma;
  uint64_t seed;
  int stream_real, stream_est; /* from train.streams */
  int n_layer_weights;
  float layer_weights[TRAIN_MAX_LAYERS];
  int final_norm;
} train_params;

void train_config_default(train_config *c);
const char *train_config_key_name(int k);
/* Sets one key from "key=value" text. The message names the key and what is expected; an
 * unknown key lists the known ones. `where` (NULL: "--set") prefixes the message
 * ("tasks.txt:3"). */
int train_config_set(train_config *c, const char *kv, const char *where, cmds_error *err);
void train_config_params(const train_config *c, train_params *p);
/* The training-relevant keys as "k=v;k=v;..." (no quotes or backslashes: safe in JSON). */
void train_config_key(const train_config *c, char *out, size_t cap);
/* Every key as a JSON object value. */
void train_config_json(const train_config *c, cmds_json *j);

#endif
