"""`trainlab data inspect` and `trainlab data preview-augment` on real data, real PNGs."""

from __future__ import annotations

import numpy as np
from PIL import Image

from trainlab.cli import main


def test_inspect_digits_prints_counts_and_writes_grid(capsys, tmp_path):
    out = tmp_path / "grid.png"
    assert main(["data", "inspect", "digits", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "data set digits: 10 classes, 1 channel(s), 8x8" in text
    assert "total" in text and "1294" in text and "144" in text and "359" in text
    assert "mean " in text and "std " in text
    img = np.asarray(Image.open(out))
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200  # a real picture
    assert img.std() > 10  # not blank


def test_inspect_an_image_folder(capsys, tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        d = tmp_path / "pets" / "train" / cls
        d.mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(d / f"{i}.png")
    out = tmp_path / "pets.png"
    assert main(["data", "inspect", str(tmp_path / "pets"), "data.val_fraction=0",
                 f"data.cache_dir={tmp_path / 'cache'}", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 classes, 3 channel(s), 12x12" in text and "cat" in text and "dog" in text
    assert out.is_file()


def test_preview_augment_shows_different_views(capsys, tmp_path):
    out = tmp_path / "aug.png"
    assert main(["data", "preview-augment", "data.name=digits", "--out", str(out),
                 "--images", "4", "--views", "3"]) == 0
    assert "augmentation preview" in capsys.readouterr().out
    img = np.asarray(Image.open(out).convert("L")).astype(np.float32)
    assert img.shape[0] > 100 and img.std() > 10


def test_inspect_unknown_name_is_a_clear_error(capsys):
    assert main(["data", "inspect", "imagenet-9000"]) == 2
    assert "data.name" in capsys.readouterr().err
