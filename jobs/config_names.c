/* config_names: see config_names.h. */
#include "config_names.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "hash.h"

void config_name(const cmds_config *c, const cmds_config *base, unsigned stages, char *out, size_t cap) {
  char buf[4096];
  size_t len = 0;
  buf[0] = 0;
  for (int i = 0; i < CK_NKEYS; i++) {
    if (!(cmds_keys[i].stage & stages) || !strcmp(c->value[i], base->value[i])) continue;
    len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s-%s", len ? "__" : "", cmds_keys[i].name, c->value[i]);
    if (len >= sizeof buf) len = sizeof buf - 1;
  }
  if (!len) {
    snprintf(out, cap, "default");
    return;
  }
  for (char *p = buf; *p; p++)
    if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-') *p = '-';
  /* Stages keep names under 64 characters: long ones are cut and made unique by a hash. */
  if (len > 56) {
    unsigned long long h = cmds_fnv64(CMDS_FNV64_INIT, buf, len);
    snprintf(out, cap, "%.38s-h%016llx", buf, h);
  } else {
    snprintf(out, cap, "%s", buf);
  }
}

void config_pairs(const cmds_config *c, unsigned stages, char *out, size_t cap) {
  size_t len = 0;
  out[0] = 0;
  for (int i = 0; i < CK_NKEYS; i++) {
    if (!(cmds_keys[i].stage & stages) || !strcmp(c->value[i], cmds_keys[i].def)) continue;
    len += (size_t)snprintf(out + len, cap - len, "%s%s=%s", len ? " " : "", cmds_keys[i].name, c->value[i]);
    if (len >= cap) len = cap - 1;
  }
}
