#!/usr/bin/env bash
# Everything GPU-specific in one short run (< 8 min on one H100): device checks, then training
# images/s per model for fp32 / bf16 / bf16+channels_last / bf16+torch.compile, bare step vs
# trainlab's loop, as a markdown table on stdout. With more than one GPU it also runs a short
# DDP job through torchrun. `bash benchmarks/gpu.sh --tiny` is the CPU smoke test (run by the
# test suite) so this script works the first time it meets a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
date -u +"date: %Y-%m-%d %H:%M UTC"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader || echo "nvidia-smi: not found (CPU run)"
"$PY" benchmarks/gpu_bench.py "$@"
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -gt 1 ]; then
    echo "DDP over $NGPU GPUs (torchrun, digits, cnn):"
    "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NGPU" -m trainlab train \
        run.dir="$(mktemp -d)/ddp" run.progress=false run.tensorboard=false \
        train.batch_size=$((64 * NGPU)) train.precision=bf16 | tail -2
fi
