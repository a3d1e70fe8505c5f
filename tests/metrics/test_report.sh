#!/bin/sh
# cmds-report on hand-written result CSVs (tests/fixtures/metrics/report): the Markdown and
# CSV tables must equal the expected files cell for cell (values and means checked by
# hand: e.g. cmds 1-shot mean I-AUROC (0.8 + 0.7) / 2 = 0.750, AUPRO@30% (0.9 + 0.95) / 2
# = 0.925; a missing category gives '-' and a mean marked '*'; an empty metric 'n/a').
# With gnuplot, the PRO-curve and parameter plots must be PNG files; without it the test
# checks that the tables are still written and the program says why.
# Usage: test_report.sh BIN FIXTURES OUT
set -u
bin=$1; fx=$2; out=$3
rm -rf "$out"
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2" >&2; fi; }
"$bin/cmds-report" --out "$out" --param l1 --metric aupro_30 "$fx" >"$out.log" 2>&1
ok $? "cmds-report failed: $(cat "$out.log")"
for f in results.md main_mvtec3d.csv strict_mvtec3d.csv; do
  diff "$fx/expected_$f" "$out/$f" >&2; ok $? "$f differs from the expected table"
done
if command -v gnuplot >/dev/null 2>&1; then
  for p in pro_curves.png param_l1.png; do
    [ "$(head -c 8 "$out/$p" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]
    ok $? "$p is not a PNG"
  done
else
  grep -q "gnuplot not found" "$out.log"; ok $? "no message about the missing gnuplot"
fi
# duplicates are refused, naming both files
mkdir -p "$out/dup"; cp "$fx/cmds_bagel_1.csv" "$out/dup/a.csv"; cp "$fx/cmds_bagel_1.csv" "$out/dup/b.csv"
"$bin/cmds-report" --out "$out/dup_out" "$out/dup" >"$out/dup.log" 2>&1
[ $? -ne 0 ] && grep -q "a.csv and .*b.csv" "$out/dup.log"; ok $? "duplicate results not refused"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
