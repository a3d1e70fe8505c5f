/* config_names: cmds-run's names for configurations (comm/config_keys.h): the tag of a
 * training configuration relative to the spec's base, the tasks-file form of a
 * configuration, and the hash they use. */
#ifndef CMDS_JOBS_CONFIG_NAMES_H
#define CMDS_JOBS_CONFIG_NAMES_H

#include <stddef.h>

#include "config_keys.h"

/* Name of the keys of `stages` that differ from `base`: "default" when none, otherwise
 * "key-value" parts joined with "__", characters outside [A-Za-z0-9._-] replaced by '-';
 * longer than 56 characters: cut, plus "-h" and a hash of the full text. A path component
 * the stages accept (at most 63 characters of [A-Za-z0-9._-]). */
void config_name(const cmds_config *c, const cmds_config *base, unsigned stages, char *out, size_t cap);
/* "key=value key=value ..." of the keys of `stages` that differ from METHOD.md's defaults
 * (tasks-file form). */
void config_pairs(const cmds_config *c, unsigned stages, char *out, size_t cap);


#endif
