#!/bin/sh
# cmds-run's spec reading and planning, without running any stage (--dry-run):
#  - bad specs stop with an error naming the file, the line or field, and what was expected;
#  - jobs/reproduce.yaml resolves into the paper's task counts, and scoring-only settings
#    (Table 4, Figure 5) share the trained models instead of retraining;
#  - names: tags, settings as cmds-score derives them, labels.
# Usage: test_spec.sh BIN SOURCE_DIR WORK
set -u
bin=$1; src=$2; work=$3
rm -rf "$work"; mkdir -p "$work"
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2" >&2; fi; }

# A bad spec must fail (non-zero) with a message matching $2.
bad() {
  name=$1; want=$2
  "$bin/cmds-run" "$work/$name.yaml" --dry-run >"$work/$name.out" 2>&1
  rc=$?
  [ $rc -ne 0 ] && grep -q -- "$want" "$work/$name.out"
  ok $? "$name: expected failure with '$want', got rc=$rc: $(cat "$work/$name.out")"
}
base() {
  cat <<EOS
job: t
version: 1
run: $work/run
cache: $work/cache
backbone: {random: 0}
datasets:
  - {name: mvtec3d, root: $work/data, categories: [bagel, cookie]}
shots: [1, 4]
EOS
}
# A GPU stage planned for Slurm (--no-submit): the base spec run under $work/$1 with the blocks
# $3 (printf format), planned; stage $2's job gets a GPU and its sbatch is valid bash. Sets s
# (the plan's submit.sh) for the caller's checks of the chain's order.
slurm_gpu_stage() {
  { base | sed "s|run: .*|run: $work/$1/run|"; printf "$3"; } > "$work/$1.yaml"
  "$bin/cmds-run" "$work/$1.yaml" --slurm --no-submit --slurm-dir "$src/slurm" >"$work/$1.out" 2>&1
  ok $? "$2 chain: $(tail -3 "$work/$1.out")"
  s=$work/$1/run/slurm/submit.sh
  grep -q "cmds-t-$2 .*--gpus-per-task=1 .*$2.sbatch" "$s"; ok $? "$2 job gets GPUs"
  bash -n "$work/$1/run/slurm/$2.sbatch"; ok $? "$2.sbatch is valid bash"
}

base > "$work/good.yaml"
"$bin/cmds-run" "$work/good.yaml" --dry-run >"$work/good.out" 2>&1
ok $? "good spec: $(cat "$work/good.out")"
grep -q "4 results, 4 trained models" "$work/good.out"; ok $? "good spec: 2 categories x 2 shots"

{ base; echo "shotz: [1]"; } > "$work/unknown_top.yaml"
bad unknown_top "unknown_top.yaml line 9: top level: unknown key 'shotz'"
{ base | sed 's/version: 1/version: 2/'; } > "$work/version.yaml"
bad version "reads version 1 specs, the file says 2"
{ base; printf 'config:\n  train.stepz: 10\n'; } > "$work/unknown_key.yaml"
bad unknown_key "unknown configuration key 'train.stepz'"
{ base; printf 'config:\n  score.fusion: sum\n'; } > "$work/bad_enum.yaml"
bad bad_enum "score.fusion='sum': expected one of mul|add|max|2d|3d"
{ base; printf 'config:\n  train.steps: -3\n'; } > "$work/bad_int.yaml"
bad bad_int "train.steps='-3': expected an integer >= 1"
{ base | sed 's/{name: mvtec3d/{name: mvtec/'; } > "$work/bad_ds.yaml"
bad bad_ds "datasets\[0\]: name: expected mvtec3d or eyecandies, got 'mvtec'"
{ base | sed 's|run: .*|run: ${CMDS_TEST_UNSET_VAR}/run|'; } > "$work/unset_env.yaml"
bad unset_env "environment variable CMDS_TEST_UNSET_VAR is not set"
{ base; printf 'experiments:\n  - name: a\n    shots: [2]\n'; } > "$work/bad_shot.yaml"
bad bad_shot "shot count 2 is not in the spec's shots"
{ base; printf 'experiments:\n  - name: a\n    sweep:\n      backbone.final_norm: [0, 1]\n'; } > "$work/sweep_features.yaml"
bad sweep_features "backbone.final_norm changes the feature cache"
{ base; printf 'experiments:\n  - name: a\n    settings:\n      x: {score.fusion: add}\n  - name: b\n    settings:\n      x: {score.fusion: max}\n'; } > "$work/dup_label.yaml"
bad dup_label "two different configurations make the table row 'x'"
printf 'job: t\nversion: 1\n  - broken: [\n' > "$work/not_yaml.yaml"
bad not_yaml "not valid YAML"
bad missing_file "cannot open the job spec"

# The estimate stage: its block, its place between prep and features, its errors.
{ base; printf 'estimate: {marigold: %s/marigold, steps: 4, seed: 3}\n' "$work"; } > "$work/est.yaml"
"$bin/cmds-run" "$work/est.yaml" --dry-run >"$work/est.out" 2>&1; ok $? "estimate spec: $(cat "$work/est.out")"
grep -q "cmds-estimate --dataset mvtec3d --cache $work/cache --marigold $work/marigold --data $work/data --device auto --steps 4 --ensemble 1 --seed 3 --category bagel,cookie" "$work/est.out"
ok $? "estimate command line: $(grep cmds-estimate "$work/est.out")"
[ "$(grep -n '^stage ' "$work/est.out" | sed -n 2p | grep -c 'stage estimate')" = 1 ] && [ "$(grep -n '^stage ' "$work/est.out" | sed -n 3p | grep -c 'stage features')" = 1 ]
ok $? "estimate runs between prep and features: $(grep '^stage ' "$work/est.out")"
! grep -q "cmds-estimate" "$work/good.out"; ok $? "no estimate block: no estimate stage"
{ base; printf 'estimate: {marigold: %s/m, source: cache}\n' "$work"; } > "$work/est_cache.yaml"
"$bin/cmds-run" "$work/est_cache.yaml" --dry-run 2>&1 | grep "cmds-estimate" | grep -vq -- "--data "; ok $? "source: cache passes no --data"
{ base; printf 'stages: [prep, estimate, features]\n'; } > "$work/est_noblock.yaml"
bad est_noblock "estimate is listed but the spec has no estimate: {marigold: DIR} block"
{ base; printf 'estimate: {marigold: /m, stepz: 4}\n'; } > "$work/est_key.yaml"
bad est_key "estimate: unknown key 'stepz'"
{ base; printf 'estimate: {marigold: /m, source: web}\n'; } > "$work/est_src.yaml"
bad est_src "estimate.source: expected dataset or cache, got 'web'"
"$bin/cmds-run" "$work/good.yaml" --stage estimate >"$work/est_stage.out" 2>&1
[ $? -ne 0 ] && grep -q "has no estimate: {marigold: DIR} block" "$work/est_stage.out"; ok $? "--stage estimate without a block: $(cat "$work/est_stage.out")"
slurm_gpu_stage estslurm estimate 'estimate: {marigold: /m}\n'
[ "$(grep -n '^# ' "$s" | grep -A1 '# prep' | tail -1 | grep -c '# estimate')" = 1 ]; ok $? "chain: prep then estimate"
rm -rf "$work/estslurm"

# The augment stage: its block, its place between prep and estimate, its errors.
{ base; printf 'augment: {sd: %s/sd, steps: 4, images: 2, prompt: "a close-up of a {category}", checkpoint_every: 2}\n' "$work"; printf 'estimate: {marigold: %s/m}\n' "$work"; } > "$work/aug.yaml"
"$bin/cmds-run" "$work/aug.yaml" --dry-run >"$work/aug.out" 2>&1; ok $? "augment spec: $(cat "$work/aug.out")"
grep -q "cmds-augment --dataset mvtec3d --cache $work/cache --sd $work/sd --shots 1,4 --data $work/data --run $work/run --device auto --checkpoint-every 2 --set 'augment.prompt=a close-up of a {category}' --set augment.steps=4 --set augment.images=2 --category bagel,cookie" "$work/aug.out"
ok $? "augment command line (non-default keys only, in table order): $(grep cmds-augment "$work/aug.out")"
[ "$(grep '^stage ' "$work/aug.out" | sed -n 2p | grep -c 'stage augment')" = 1 ] && [ "$(grep '^stage ' "$work/aug.out" | sed -n 3p | grep -c 'stage estimate')" = 1 ]
ok $? "augment runs between prep and estimate: $(grep '^stage ' "$work/aug.out")"
! grep -q "cmds-augment" "$work/good.out"; ok $? "no augment block: no augment stage"
{ base; printf 'augment: {sd: /sd, source: cache}\n'; } > "$work/aug_cache.yaml"
"$bin/cmds-run" "$work/aug_cache.yaml" --dry-run 2>&1 | grep "cmds-augment" | grep -vq -- "--data "; ok $? "augment source: cache passes no --data"
{ base; printf 'stages: [prep, augment, features]\n'; } > "$work/aug_noblock.yaml"
bad aug_noblock "augment is listed but the spec has no augment: {sd: DIR} block"
{ base; printf 'augment: {sd: /sd, stepz: 4}\n'; } > "$work/aug_key.yaml"
bad aug_key "augment: unknown key 'stepz' (known: sd, source, checkpoint_every, prompt, rank"
{ base; printf 'augment: {sd: /sd, strength: 2}\n'; } > "$work/aug_val.yaml"
bad aug_val "augment: augment.strength='2': expected a number in \[0, 1\]"
{ base; printf 'augment: {steps: 4}\n'; } > "$work/aug_nosd.yaml"
bad aug_nosd "augment: 'sd' is required"
{ base; printf 'config:\n  augment.steps: 4\n'; } > "$work/aug_config.yaml"
bad aug_config "augment.steps: the augment stage's keys go in the spec's augment: block"
"$bin/cmds-run" "$work/good.yaml" --stage augment >"$work/aug_stage.out" 2>&1
[ $? -ne 0 ] && grep -q "has no augment: {sd: DIR} block" "$work/aug_stage.out"; ok $? "--stage augment without a block: $(cat "$work/aug_stage.out")"
slurm_gpu_stage augslurm augment 'augment: {sd: /sd}\nestimate: {marigold: /m}\n'
[ "$(grep '^# ' "$s" | grep -A1 '# prep' | tail -1 | grep -c '# augment')" = 1 ] && [ "$(grep '^# ' "$s" | grep -A1 '# augment' | tail -1 | grep -c '# estimate')" = 1 ]
ok $? "chain: prep, augment, estimate"
rm -rf "$work/augslurm"

# Env expansion with a default, and names.
{ base | sed 's|run: .*|run: ${CMDS_TEST_UNSET_VAR:-/tmp/x}/run|'; printf 'config:\n  train.steps: 10\nexperiments:\n  - name: main\n  - name: abl\n    shots: [4]\n    settings:\n      mlp: {mapper.kind: mlp}\n      add: {score.fusion: add}\n      w: {score.l1: 1e-1}\n' ; } > "$work/names.yaml"
"$bin/cmds-run" "$work/names.yaml" --dry-run >"$work/names.out" 2>&1; ok $? "names spec: $(cat "$work/names.out")"
grep -q "run /tmp/x/run" "$work/names.out"; ok $? "\${VAR:-default} not expanded"
# score.l1: 1e-1 is the base's 0.1: the same result as main (one result, row 'cmds').
grep -q "8 results, 6 trained models" "$work/names.out"; ok $? "names: 4 main + 2 mlp + 2 add results; add shares the main models; w is the base"
grep -q "mvtec3d bagel 4 mapper.kind-mlp-c[0-9a-f]\{8\} mapper.kind=mlp train.steps=10" "$work/names.out"; ok $? "tag of the mlp setting (hashed: the base moved train.steps)"
grep -q "maps.fusion-add.h5 .* setting=add" "$work/names.out"; ok $? "setting name fusion-add and label add"
grep -q "bagel/k1/default-c[0-9a-f]\{8\}/maps.default.h5 " "$work/names.out"; ok $? "default tag and setting"

# The full reproduction: 2 datasets x 10 categories x k=1,2,4 (60), Table 3 (+30 results,
# +30 models: real only, est only, MLP), Table 4 (+40 results, no model), Figure 5 (11 points,
# 0.1 is the base: +600 results, no model).
CMDS_DATA=/nonexistent CMDS_WEIGHTS=/nonexistent/w.safetensors CMDS_MARIGOLD=/nonexistent/marigold CMDS_SD=/nonexistent/sd "$bin/cmds-run" "$src/jobs/reproduce.yaml" --dry-run >"$work/repro.out" 2>&1
ok $? "reproduce.yaml: $(head -5 "$work/repro.out")"
grep -q "730 results, 90 trained models" "$work/repro.out"; ok $? "reproduce: 730 results from 90 models"
grep -q "experiment table4: 50 results from 10 models" "$work/repro.out"; ok $? "table4 must not retrain"
grep -q "experiment figure5: 660 results from 60 models" "$work/repro.out"; ok $? "figure5 must not retrain"
grep -q "experiment table3: 40 results from 40 models" "$work/repro.out"; ok $? "table3: 4 settings x 10 categories"
[ "$(grep -c '^mvtec3d .* train.streams=real$' "$work/repro.out")" = 10 ]; ok $? "real-only training tasks"
grep -q "maps.l1-0.3_l2-0.3.h5 .* score.l1=0.3 score.l2=0.3" "$work/repro.out"; ok $? "figure5 settings and labels"
grep -q "cmds-estimate --dataset eyecandies .* --marigold /nonexistent/marigold --data /nonexistent/eyecandies " "$work/repro.out"; ok $? "reproduce: Marigold normals on the original images"
grep -q "cmds-augment --dataset mvtec3d --cache .* --sd /nonexistent/sd --shots 1,2,4 --data /nonexistent/mvtec_3d_anomaly_detection --run .* --device auto --category bagel," "$work/repro.out"; ok $? "reproduce: augmentation with METHOD.md's settings from the original support images"
# The demo spec resolves with the Makefile's variables.
DEMO_OUT=$work/demo NP=3 "$bin/cmds-run" "$src/jobs/demo.yaml" --dry-run >"$work/demo.out" 2>&1; ok $? "demo.yaml"
grep -q "mpiexec -n 3 " "$work/demo.out"; ok $? "demo: NP sets the ranks"
DEMO_OUT=$work/demo "$bin/cmds-run" "$src/jobs/demo.yaml" --dry-run -n 4 | grep -q "mpiexec -n 4 "; ok $? "-n overrides the spec"
# Nothing was written by the dry runs.
[ ! -e "$work/run" ] && [ ! -e "$work/demo" ]; ok $? "--dry-run wrote files"
# The Slurm chain (written, not submitted): afterok chain, arrays over the 8 demo units, GPUs only on GPU stages.
DEMO_OUT=$work/demo "$bin/cmds-run" "$src/jobs/demo.yaml" --slurm --no-submit --slurm-dir "$src/slurm" >"$work/slurm.out" 2>&1; ok $? "--slurm --no-submit: $(tail -3 "$work/slurm.out")"
s=$work/demo/run/slurm/submit.sh
grep -q -- "--array=0-7 " "$s"; ok $? "train/score arrays over 8 units"
[ "$(grep -c -- '--gpus-per-task=1' "$s")" = 3 ]; ok $? "GPUs only for features, train, score"
grep -q 'dependency=afterok:\$prev' "$s"; ok $? "afterok chain"
grep -q "%x-%A_%a.out" "$s"; ok $? "array output names"
bash -n "$s"; ok $? "submit.sh is valid bash"
for t in "$work"/demo/run/slurm/*.sbatch; do bash -n "$t"; ok $? "$t is valid bash"; done
grep -q "^#SBATCH --requeue" "$work/demo/run/slurm/train.sbatch" && grep -q "^#SBATCH --signal=B:USR1@120" "$work/demo/run/slurm/train.sbatch"
ok $? "train requeues on USR1"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
