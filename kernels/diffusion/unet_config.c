/* unet_config: reads and checks diffusers' unet/config.json for unet.c (unet_parse_config in
 * unet_internal.h): every key this implementation depends on, and a refusal naming the key
 * and value for anything it does not implement (see unet.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "unet_internal.h"

static const char *jv_describe(const cmds_jv *v, char *buf, size_t n) {
  switch (v->type) {
    case CMDS_JV_STR: snprintf(buf, n, "\"%.64s\"", v->str); break;
    case CMDS_JV_NUM: snprintf(buf, n, "%.17g", v->num); break;
    case CMDS_JV_BOOL: snprintf(buf, n, "%s", v->b ? "true" : "false"); break;
    default: snprintf(buf, n, "%s", cmds_jv_type_name(v->type)); break;
  }
  return buf;
}

/* The key must be absent or null (a feature this implementation does not have). */
static int cfg_null(const cmds_jv *c, const char *what, const char *key, cmds_error *err) {
  const cmds_jv *v = cmds_jv_member(c, key);
  if (!v || v->type == CMDS_JV_NULL) return 0;
  char b[96];
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s' = %s is not supported by this UNet (only null)", what, key,
                   jv_describe(v, b, sizeof b));
}

/* Absent/null or the one supported string. */
static int cfg_str(const cmds_jv *c, const char *what, const char *key, const char *only, cmds_error *err) {
  const cmds_jv *v = cmds_jv_member(c, key);
  if (!v || v->type == CMDS_JV_NULL) return 0;
  if (v->type == CMDS_JV_STR && strcmp(v->str, only) == 0) return 0;
  char b[96];
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s' = %s is not supported by this UNet (only \"%s\")", what, key,
                   jv_describe(v, b, sizeof b), only);
}

/* Absent/null or the one supported number. */
static int cfg_num(const cmds_jv *c, const char *what, const char *key, double only, cmds_error *err) {
  const cmds_jv *v = cmds_jv_member(c, key);
  if (!v || v->type == CMDS_JV_NULL) return 0;
  if (v->type == CMDS_JV_NUM && v->num == only) return 0;
  char b[96];
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s' = %s is not supported by this UNet (only %g)", what, key,
                   jv_describe(v, b, sizeof b), only);
}

/* Absent/null, false, or a list of false. */
static int cfg_false(const cmds_jv *c, const char *what, const char *key, cmds_error *err) {
  const cmds_jv *v = cmds_jv_member(c, key);
  if (!v || v->type == CMDS_JV_NULL || (v->type == CMDS_JV_BOOL && !v->b)) return 0;
  if (v->type == CMDS_JV_ARR) {
    int ok = 1;
    for (int64_t i = 0; i < v->n; i++) ok &= v->items[i].type == CMDS_JV_BOOL && !v->items[i].b;
    if (ok) return 0;
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s': a list with a value other than false is not supported by this UNet",
                     what, key);
  }
  char b[96];
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s' = %s is not supported by this UNet (only false)", what, key,
                   jv_describe(v, b, sizeof b));
}

int unet_parse_config(unet_config *cfg, const cmds_jv *c, const char *what, cmds_error *err) {
  memset(cfg, 0, sizeof *cfg);
  int rc = 0;
  const cmds_jv *cls = cmds_jv_member(c, "_class_name");
  if (cls && cls->type == CMDS_JV_STR && strcmp(cls->str, "UNet2DConditionModel") != 0)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: key '_class_name' = \"%.64s\": a UNet2DConditionModel expected", what,
                     cls->str);
  static const char *must_be_null[] = {
      "class_embed_type", "addition_embed_type", "num_class_embeds", "encoder_hid_dim", "encoder_hid_dim_type",
      "time_embedding_dim", "time_embedding_act_fn", "timestep_post_act", "time_cond_proj_dim",
      "projection_class_embeddings_input_dim", "addition_time_embed_dim", "cross_attention_norm",
      "num_attention_heads", "reverse_transformer_layers_per_block"};
  for (size_t i = 0; i < sizeof must_be_null / sizeof *must_be_null; i++)
    if ((rc = cfg_null(c, what, must_be_null[i], err))) return rc;
  static const char *must_be_false[] = {"center_input_sample", "dual_cross_attention", "class_embeddings_concat",
                                        "resnet_skip_time_act", "only_cross_attention",
                                        "mid_block_only_cross_attention"};
  for (size_t i = 0; i < sizeof must_be_false / sizeof *must_be_false; i++)
    if ((rc = cfg_false(c, what, must_be_false[i], err))) return rc;
  if ((rc = cfg_str(c, what, "act_fn", "silu", err)) || (rc = cfg_str(c, what, "time_embedding_type", "positional", err)) ||
      (rc = cfg_str(c, what, "resnet_time_scale_shift", "default", err)) ||
      (rc = cfg_str(c, what, "attention_type", "default", err)) ||
      (rc = cfg_num(c, what, "conv_in_kernel", 3, err)) || (rc = cfg_num(c, what, "conv_out_kernel", 3, err)) ||
      (rc = cfg_num(c, what, "downsample_padding", 1, err)) ||
      (rc = cfg_num(c, what, "mid_block_scale_factor", 1, err)) ||
      (rc = cfg_num(c, what, "resnet_out_scale_factor", 1, err)))
    return rc;
  /* mid_block_type: absent means diffusers' default, the cross-attention mid block; null
   * would mean no mid block at all */
  const cmds_jv *mid = cmds_jv_member(c, "mid_block_type");
  if (mid && !(mid->type == CMDS_JV_STR && strcmp(mid->str, "UNetMidBlock2DCrossAttn") == 0)) {
    char b[96];
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'mid_block_type' = %s is not supported by this UNet (only "
                     "\"UNetMidBlock2DCrossAttn\")", what, jv_describe(mid, b, sizeof b));
  }

  double vals[UNET_MAX_BLOCKS + 1];
  int nb = 0;
  if ((rc = cmds_jv_get_nums(c, what, "block_out_channels", 1, UNET_MAX_BLOCKS + 1, vals, &nb, err))) return rc;
  if (nb < 1 || nb > UNET_MAX_BLOCKS)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'block_out_channels': 1 to %d entries expected, got %d", what,
                     UNET_MAX_BLOCKS, nb);
  cfg->n_blocks = nb;
  for (int i = 0; i < nb; i++) {
    if (vals[i] != floor(vals[i]) || vals[i] < 1)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'block_out_channels': entry %d = %g is not a positive integer", what,
                       i, vals[i]);
    cfg->block_out_channels[i] = (int64_t)vals[i];
  }
  const char *types[UNET_MAX_BLOCKS + 1];
  int nt = 0;
  if ((rc = cmds_jv_get_strs(c, what, "down_block_types", 1, UNET_MAX_BLOCKS + 1, types, &nt, err))) return rc;
  if (nt != nb)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'down_block_types': %d entries, but block_out_channels has %d", what,
                     nt, nb);
  for (int i = 0; i < nb; i++) {
    if (strcmp(types[i], "CrossAttnDownBlock2D") == 0) cfg->down_attn[i] = 1;
    else if (strcmp(types[i], "DownBlock2D") != 0)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'down_block_types': entry %d = \"%.64s\" is not supported by this "
                       "UNet (CrossAttnDownBlock2D or DownBlock2D)", what, i, types[i]);
  }
  if ((rc = cmds_jv_get_strs(c, what, "up_block_types", 1, UNET_MAX_BLOCKS + 1, types, &nt, err))) return rc;
  if (nt != nb)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'up_block_types': %d entries, but block_out_channels has %d", what, nt,
                     nb);
  for (int i = 0; i < nb; i++) {
    if (strcmp(types[i], "CrossAttnUpBlock2D") == 0) cfg->up_attn[i] = 1;
    else if (strcmp(types[i], "UpBlock2D") != 0)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'up_block_types': entry %d = \"%.64s\" is not supported by this "
                       "UNet (UpBlock2D or CrossAttnUpBlock2D)", what, i, types[i]);
  }
  int64_t cross[UNET_MAX_BLOCKS];
  if ((rc = cmds_jv_get_int(c, what, "in_channels", 0, 4, &cfg->in_channels, err)) ||
      (rc = cmds_jv_get_int(c, what, "out_channels", 0, 4, &cfg->out_channels, err)) ||
      (rc = cmds_jv_get_ints(c, what, "layers_per_block", 0, 2, nb, cfg->layers_per_block, err)) ||
      (rc = cmds_jv_get_ints(c, what, "transformer_layers_per_block", 0, 1, nb, cfg->transformer_layers, err)) ||
      (rc = cmds_jv_get_ints(c, what, "attention_head_dim", 0, 8, nb, cfg->heads, err)) ||
      (rc = cmds_jv_get_ints(c, what, "cross_attention_dim", 0, 1280, nb, cross, err)) ||
      (rc = cmds_jv_get_int(c, what, "norm_num_groups", 0, 32, &cfg->norm_num_groups, err)) ||
      (rc = cmds_jv_get_num(c, what, "norm_eps", 0, 1e-5, &cfg->norm_eps, err)) ||
      (rc = cmds_jv_get_bool(c, what, "use_linear_projection", 0, 0, &cfg->use_linear_projection, err)) ||
      (rc = cmds_jv_get_bool(c, what, "flip_sin_to_cos", 0, 1, &cfg->flip_sin_to_cos, err)) ||
      (rc = cmds_jv_get_num(c, what, "freq_shift", 0, 0, &cfg->freq_shift, err)))
    return rc;
  const cmds_jv *g = cmds_jv_member(c, "norm_num_groups");
  if (g && g->type == CMDS_JV_NULL)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'norm_num_groups' = null (no output norm) is not supported by this UNet",
                     what);
  if (cfg->in_channels < 1 || cfg->out_channels < 1)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: keys 'in_channels' / 'out_channels' must be positive (%lld, %lld)", what,
                     (long long)cfg->in_channels, (long long)cfg->out_channels);
  if (cfg->norm_num_groups < 1 || !(cfg->norm_eps > 0))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: keys 'norm_num_groups' (%lld) / 'norm_eps' (%g) must be positive", what,
                     (long long)cfg->norm_num_groups, cfg->norm_eps);
  for (int i = 0; i < nb; i++) {
    if (cross[i] != cross[0])
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'cross_attention_dim': different values per block (%lld, %lld) are "
                       "not supported (every block attends to the same encoder states)", what, (long long)cross[0],
                       (long long)cross[i]);
    if (cfg->layers_per_block[i] < 1)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'layers_per_block': entry %d = %lld must be positive", what, i,
                       (long long)cfg->layers_per_block[i]);
    if (cfg->transformer_layers[i] < 1)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'transformer_layers_per_block': entry %d = %lld must be positive",
                       what, i, (long long)cfg->transformer_layers[i]);
    if (cfg->heads[i] < 1 || cfg->heads[i] > cfg->block_out_channels[i])
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'attention_head_dim' (the head count per block here): entry %d = "
                       "%lld must be in 1..%lld", what, i, (long long)cfg->heads[i],
                       (long long)cfg->block_out_channels[i]);
    if (cfg->block_out_channels[i] % cfg->norm_num_groups)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'block_out_channels': entry %d = %lld is not a multiple of "
                       "norm_num_groups %lld", what, i, (long long)cfg->block_out_channels[i],
                       (long long)cfg->norm_num_groups);
  }
  if (cross[0] < 1)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'cross_attention_dim' = %lld must be positive", what, (long long)cross[0]);
  cfg->cross_attention_dim = cross[0];
  cfg->time_embed_dim = 4 * cfg->block_out_channels[0];
  return 0;
}
