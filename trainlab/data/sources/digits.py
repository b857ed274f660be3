"""UCI handwritten digits, shipped inside scikit-learn (no download)."""

from __future__ import annotations

import numpy as np

from trainlab.config.schema import DataConfig
from trainlab.data.sources.base import (
    DataSplits,
    make_splits,
    register_source,
    stratified_split,
)


@register_source(
    "digits",
    dict(crop_padding=1, flip=False, rotate_deg=10.0, brightness=0.2, contrast=0.2),
    "UCI handwritten digits (scikit-learn), 1,797 images 1x8x8, 10 classes",
)
def load_digits(cfg: DataConfig) -> DataSplits:
    """UCI digits from scikit-learn: 1,797 images 1x8x8, values 0..16 rescaled to 0..255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [1797, 1, 8, 8]
    y = bunch.target.astype(np.int64)
    rest, test = stratified_split(y, cfg.test_fraction, cfg.split_seed)
    names = [str(i) for i in range(10)]
    return make_splits("digits", x[rest], y[rest], x[test], y[test], cfg, names,
                       carved=("test", "val"))
