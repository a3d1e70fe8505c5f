/* test_json: the record writer produces the exact JSON text expected (escaping, nesting,
 * commas, non-finite numbers as null, round-tripping doubles). */
#include <math.h>
#include <string.h>

#include "check.h"
#include "json.h"

int main(void) {
  cmds_json j;
  cmds_json_init(&j, 0);
  cmds_json_object_begin(&j);
  cmds_json_kv_str(&j, "s", "a\"b\\c\n\x01");
  cmds_json_kv_int(&j, "i", -42);
  cmds_json_kv_num(&j, "x", 0.1);
  cmds_json_kv_num(&j, "nan", NAN);
  cmds_json_key(&j, "arr");
  cmds_json_array_begin(&j);
  cmds_json_bool(&j, 1);
  cmds_json_null(&j);
  cmds_json_object_begin(&j);
  cmds_json_object_end(&j);
  cmds_json_array_begin(&j);
  cmds_json_array_end(&j);
  cmds_json_array_end(&j);
  cmds_json_object_end(&j);
  const char *want =
      "{\"s\":\"a\\\"b\\\\c\\n\\u0001\",\"i\":-42,\"x\":0.10000000000000001,\"nan\":null,"
      "\"arr\":[true,null,{},[]]}";
  CHECK(!strcmp(j.buf, want), "got %s", j.buf);
  cmds_json_free(&j);
  return CHECK_DONE();
}
