"""The GPU benchmark script runs end to end on the CPU in its tiny mode, so it works the first
time it meets a GPU (timings are not asserted: benchmarks measure, tests don't)."""

import subprocess

from conftest import ROOT


def test_gpu_sh_tiny_smoke():
    p = subprocess.run(["bash", "benchmarks/gpu.sh", "--tiny"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    assert "augment crop+flip on device: exact" in out
    assert "fp16 + GradScaler: ok" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "img/s" not in line]
    models = {r.split("|")[1].strip() for r in rows}
    assert {"cnn", "resnet18", "vit_tiny"} <= models
