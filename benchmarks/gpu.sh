#!/usr/bin/env bash
# Everything GPU-specific in one short run (< 8 min on one H100/H200): device checks, training
# images/s per model and precision (bare step vs trainlab's loop), the card's bf16 matmul rate,
# ViT-S/16 224 px MFU, ResNet-50 images/s, and Fashion-MNIST time to 94% (markdown on stdout).
# With more than one GPU it also runs a short DDP job through torchrun.
# `bash benchmarks/gpu.sh --tiny` is the CPU smoke test (run by the test suite), so this script
# works the first time it meets a GPU. FASHION=DIR points at the Fashion-MNIST .gz files
# (default: the Debian package's folder; on a GPU machine without it, carry a copy).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
FASHION=${FASHION:-/usr/share/datasets/fashion-mnist}
date -u +"date: %Y-%m-%d %H:%M UTC"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader || echo "nvidia-smi: not found (CPU run)"
"$PY" benchmarks/gpu_bench.py "$@"
echo
"$PY" benchmarks/gpu_big.py "$@"
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -gt 0 ] && [ -f "$FASHION/train-images-idx3-ubyte.gz" ]; then
    echo
    echo "Fashion-MNIST on one GPU (target: val >= 0.94; test read once at the end):"
    echo "| command | test acc | best val | epoch val>=0.94 | train s to 0.94 | train s | process s |"
    echo "|---|---|---|---|---|---|---|"
    for extra in "" "train.epochs=24"; do
        "$PY" benchmarks/fashion_gpu.py recipes/fashion_gpu.yaml data.root="$FASHION" $extra
    done
fi
if [ "$NGPU" -gt 1 ]; then
    echo "DDP over $NGPU GPUs (torchrun, digits, cnn):"
    "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NGPU" -m trainlab train \
        run.dir="$(mktemp -d)/ddp" run.progress=false run.tensorboard=false \
        train.batch_size=$((64 * NGPU)) train.precision=bf16 | tail -2
fi
