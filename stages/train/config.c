/* config: see config.h. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

void train_config_params(const cmds_config *c, train_params *p) {
  memset(p, 0, sizeof *p);
#define I(k) strtoll(c->value[k], NULL, 10)
#define D(k) strtod(c->value[k], NULL)
  p->mlp = !strcmp(c->value[CK_MAPPER_KIND], "mlp");
  p->resolution = I(CK_RESOLUTION);
  p->adapt_groups = I(CK_ADAPT_GROUPS);
  p->ca_reduction = I(CK_CA_REDUCTION);
  p->ca_groups = I(CK_CA_GROUPS);
  p->sel_hidden = I(CK_SEL_HIDDEN);
  p->proj_hidden = I(CK_PROJ_HIDDEN);
  p->mlp_hidden = I(CK_MLP_HIDDEN);
  p->steps = I(CK_STEPS);
  p->batch = I(CK_BATCH);
  p->lr = D(CK_LR);
  p->lr_min = D(CK_LR_MIN);
  p->weight_decay = D(CK_WEIGHT_DECAY);
  p->noise_sigma = D(CK_NOISE_SIGMA);
  p->seed = (uint64_t)I(CK_SEED);
  p->stream_real = strcmp(c->value[CK_STREAMS], "est") != 0;
  p->stream_est = strcmp(c->value[CK_STREAMS], "real") != 0;
  p->augmented = (int)I(CK_TRAIN_AUGMENTED);
  p->final_norm = (int)I(CK_FINAL_NORM);
  const char *s = c->value[CK_LAYER_WEIGHTS];
  while (*s && p->n_layer_weights < TRAIN_MAX_LAYERS) {
    char *end = NULL;
    p->layer_weights[p->n_layer_weights++] = (float)strtod(s, &end);
    s = *end == ',' ? end + 1 : end;
  }
#undef I
#undef D
}
