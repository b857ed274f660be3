#!/usr/bin/env bash
# Issue 4 benchmark: self-supervised ViT on Fashion-MNIST, on a CPU (roughly 30 min on 2 idle
# cores by the pilot throughput; much longer when the cores are shared, see RESULTS.md).
#
#   bash benchmarks/ssl_fashion.sh [OUT_DIR]      (default /tmp/ssl-bench)
#   PY=/path/to/venv/bin/python bash benchmarks/ssl_fashion.sh   (default: .venv, else python3)
#
# The runs follow the README's self-supervised walk-through: the methods' own defaults
# (trainlab/config/method_defaults.py) for optimizer, augmentation and pooling; the commands
# name only data, model, method, label budget and lengths.
# 1. mae_pretrain   MAE on the 54k training images (labels unused)
# 2. probe_random   linear probe of the randomly initialized ViT   (20k labels)
# 3. probe_mae      linear probe of the MAE encoder, same settings (20k labels)
#    linear_pixels  a linear classifier on the raw pixels, same labels (the other baseline)
# 4. scratch_1pct   supervised from scratch on 1% of the labels
# 5. finetune_1pct  fine-tune the MAE encoder on the same 1%
# 6. probe_check.txt  the same probes fitted to convergence (benchmarks/ssl_probe_check.py)
# 7. dino_pretrain  DINO on the same images (2 global + 2 local crops, EMA teacher)
# 8. probe_dino     linear probe of the DINO teacher, same settings as 2./3. (20k labels)
# 9. knn_random, knn_mae, knn_dino   `trainlab knn` of the three encoders: the same 54k-image
#    bank (the pretraining split) and the 10k test images
# then prints a table of test accuracies and wall times. Runs that already have a summary.json
# are skipped, so an interrupted script can be started again. Not run by the test suite.
# Every size below can be overridden from the environment (the pilot used tiny values).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/ssl-bench}
PY=${PY:-python3}
[ "$PY" = python3 ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
NICE=${NICE:-nice -n 19}
MAE_EPOCHS=${MAE_EPOCHS:-5}
DINO_EPOCHS=${DINO_EPOCHS:-5}
DINO_BATCH=${DINO_BATCH:-256}
PROBE_EPOCHS=${PROBE_EPOCHS:-12}  # train.epochs' default (the issue-4 run used 3)
FT_EPOCHS=${FT_EPOCHS:-30}
RUNS=${RUNS:-all}  # or a subset, e.g. RUNS="probe_random scratch_1pct" (with OMP_NUM_THREADS=1
                   # beside a pretraining run that does not need the labels); DINO alone:
                   # RUNS="dino_pretrain probe_random probe_dino knn_random knn_dino"
PRE_FRACTION=${PRE_FRACTION:-1.0}     # share of the training images MAE sees (pilot: smaller)
PROBE_FRACTION=${PROBE_FRACTION:-0.34}  # of the 58.8k training images: 20k
mkdir -p "$OUT"

# the ViT every run shares: width 128, 6 blocks, 4 heads, 4x4 patches (49 tokens + cls);
# every method but supervised reads the mean of the patch tokens by default (model.pool=mean)
VIT="data.name=fashion-mnist model.name=vit_tiny model.patch_size=4 model.depth=6 model.dim=128
     model.heads=4"
COMMON="run.progress=false run.tensorboard=false"

run() {  # run NAME overrides...: trainlab train into $OUT/NAME, wall time into $OUT/NAME/wall_s
    local name=$1; shift
    if [ "$RUNS" != all ] && [[ " $RUNS " != *" $name "* ]]; then return; fi
    if [ -f "$OUT/$name/summary.json" ]; then echo "== $name: done already"; return; fi
    echo "== $name: $(date -u +%H:%M:%S) trainlab train $*"
    local t0; t0=$(date +%s)
    # shellcheck disable=SC2086
    $NICE "$PY" -m trainlab train $VIT $COMMON run.dir="$OUT/$name" "$@" >"$OUT/$name.log" 2>&1 \
        || { echo "$name failed; see $OUT/$name.log"; tail -20 "$OUT/$name.log"; exit 1; }
    echo $(( $(date +%s) - t0 )) >"$OUT/$name/wall_s"
    tail -1 "$OUT/$name.log"
}

# 1. MAE pretraining: mask 75%, light decoder (2 blocks, width 128), normalized-pixel targets;
# mae's defaults: AdamW 1.5e-3, betas (0.9, 0.95), weight decay 0.05, 1 warmup epoch
run mae_pretrain method.name=mae method.decoder_depth=2 data.labels_fraction="$PRE_FRACTION" \
    train.epochs="$MAE_EPOCHS" train.batch_size=256

# 2./3. linear probes; linear_probe's defaults: frozen encoder, BatchNorm + Linear head on
# mean-pooled tokens, no augmentation, AdamW 1e-2 without weight decay, 0.2 warmup epochs;
# identical except model.init
PROBE="method.name=linear_probe data.labels_fraction=$PROBE_FRACTION data.val_fraction=0.02
       train.epochs=$PROBE_EPOCHS train.batch_size=256"
# shellcheck disable=SC2086
run probe_random $PROBE
# shellcheck disable=SC2086
run probe_mae $PROBE model.init="$OUT/mae_pretrain"
# a linear classifier (an MLP without hidden layers) on the raw, normalized pixels, the same
# labels and length, no augmentation, supervised defaults otherwise
run linear_pixels method.name=supervised model.name=mlp 'model.hidden=[]' data.augment=false \
    data.labels_fraction="$PROBE_FRACTION" data.val_fraction=0.02 train.epochs="$PROBE_EPOCHS" \
    train.batch_size=256

# 4./5. 1% of the labels (class-balanced, 588 images): scratch vs MAE fine-tuning, same recipe
# except model.init and layer decay; a 2% validation split (1.2k images, also for the probes) keeps
# per-epoch evaluation cheap
FT="data.labels_fraction=0.01 data.val_fraction=0.02 optim.name=adamw optim.weight_decay=0.05
    sched.warmup_epochs=3 train.epochs=$FT_EPOCHS train.batch_size=64 train.label_smoothing=0.1
    train.grad_clip=1.0"
# shellcheck disable=SC2086
run scratch_1pct method.name=supervised $FT optim.lr=1e-3
# shellcheck disable=SC2086
run finetune_1pct method.name=finetune $FT optim.lr=1e-3 optim.layer_decay=0.75 \
    model.init="$OUT/mae_pretrain"

# 7./8. DINO: the same ViT; the method.* defaults (a 1024-prototype head 512/128 with
# BatchNorm, teacher momentum 0.996 -> 1, teacher temperature 0.04, 2 local 12x12 crops) and
# dino's defaults (AdamW 5e-4, weight decay 0.04, 1 warmup epoch, clipping 3).
# probe_dino is probe_mae with the DINO teacher as encoder.
run dino_pretrain method.name=dino data.labels_fraction="$PRE_FRACTION" \
    train.epochs="$DINO_EPOCHS" train.batch_size="$DINO_BATCH"
# shellcheck disable=SC2086
run probe_dino $PROBE model.init="$OUT/dino_pretrain"

knn() {  # knn NAME RUN: `trainlab knn` of RUN's encoder into $OUT/NAME.txt; one bank for all
    local name=$1 src=$2
    if [ "$RUNS" != all ] && [[ " $RUNS " != *" $name "* ]]; then return; fi
    if [ -s "$OUT/$name.txt" ]; then echo "== $name: done already"; return; fi
    echo "== $name: $(date -u +%H:%M:%S) trainlab knn $src"
    $NICE "$PY" -m trainlab knn "$src" data.labels_fraction="$PRE_FRACTION" data.val_fraction=0.1 \
        >"$OUT/$name.txt.tmp" 2>&1 || { echo "$name failed"; cat "$OUT/$name.txt.tmp"; exit 1; }
    mv "$OUT/$name.txt.tmp" "$OUT/$name.txt"
    cat "$OUT/$name.txt"
}
knn knn_random "$OUT/probe_random"  # the probe froze the random encoder: its weights are init
knn knn_mae "$OUT/mae_pretrain"
knn knn_dino "$OUT/dino_pretrain"

[ "$RUNS" = all ] || exit 0
if [ ! -s "$OUT/probe_check.txt" ]; then
    echo "== probe_check: $(date -u +%H:%M:%S) python benchmarks/ssl_probe_check.py $OUT"
    $NICE "$PY" benchmarks/ssl_probe_check.py "$OUT" >"$OUT/probe_check.txt.tmp"
    mv "$OUT/probe_check.txt.tmp" "$OUT/probe_check.txt"
fi
echo; cat "$OUT/probe_check.txt"; echo
"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = [("mae_pretrain", "mae", "none (54k images)"),
        ("probe_random", "linear_probe, random init", "0.34 (20k)"),
        ("probe_mae", "linear_probe, MAE init", "0.34 (20k)"),
        ("linear_pixels", "supervised linear classifier on pixels", "0.34 (20k)"),
        ("scratch_1pct", "supervised", "0.01 (590)"),
        ("finetune_1pct", "finetune, MAE init", "0.01 (590)"),
        ("dino_pretrain", "dino", "none (54k images)"),
        ("probe_dino", "linear_probe, DINO init", "0.34 (20k)")]
acc = {}
print("| run | method | labels | epochs | test acc | wall |")
print("| --- | --- | --- | --- | --- | --- |")
for name, method, labels in rows:
    s = json.loads((out / name / "summary.json").read_text())
    wall = int((out / name / "wall_s").read_text())
    acc[name] = s["test_acc"]
    a = "-" if s["test_acc"] is None else f"{s['test_acc']:.4f}"
    w = f"{wall // 60} min {wall % 60} s"
    print(f"| {name} | {method} | {labels} | {s['epochs']} | {a} | {w} |")
d_ft = 100 * (acc["finetune_1pct"] - acc["scratch_1pct"])
for enc in ("mae", "dino"):
    p = acc[f"probe_{enc}"]
    print(f"probe: {enc.upper()} - random = {100 * (p - acc['probe_random']):+.2f} points "
          f"(target >= +10); {enc.upper()} - pixels = {100 * (p - acc['linear_pixels']):+.2f} "
          f"points (target > 0)")
print(f"1% labels: fine-tune - scratch = {d_ft:+.2f} points (target > 0)")
for name in ("knn_random", "knn_mae", "knn_dino"):
    print(name, (out / f"{name}.txt").read_text().strip())
PYEOF
