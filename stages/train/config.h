/* config: the typed view of the configuration keys training uses. The keys themselves (names,
 * defaults, checking, canonical text, the model's config_key) are comm/config_keys.h's, shared
 * with cmds-score and cmds-run; score.* keys are carried (a tasks file is shared with
 * cmds-score) but never change training. */
#ifndef CMDS_TRAIN_CONFIG_H
#define CMDS_TRAIN_CONFIG_H

#include <stdint.h>

#include "config_keys.h"

#define TRAIN_MAX_LAYERS CMDS_KEY_LIST_MAX

typedef struct train_params {
  int mlp; /* mapper.kind=mlp */
  int64_t resolution, adapt_groups, ca_reduction, ca_groups, sel_hidden, proj_hidden, mlp_hidden;
  int64_t steps, batch;
  double lr, lr_min, weight_decay, noise_sigma;
  uint64_t seed;
  int stream_real, stream_est; /* from train.streams */
  int augmented;               /* train.augmented: the E stream draws from the augmented rows */
  int n_layer_weights;
  float layer_weights[TRAIN_MAX_LAYERS];
  int final_norm;
} train_params;

void train_config_params(const cmds_config *c, train_params *p);

#endif
