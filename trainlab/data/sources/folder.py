"""Image folders (`data.name=folder`, `data.root=/path`): the ImageFolder layout.

    root/train/<class>/**/*.png|jpg|jpeg|webp|bmp     (extensions in any case)
    root/val/<class>/...                              optional, same class names
    root/test/<class>/...                             optional, same class names

Class names are the sorted folder names under train/. A missing val/ (test/) is carved out of
train/ with a stratified split: test first by data.test_fraction, then val by
data.val_fraction, both seeded by data.split_seed. Other files (other extensions, hidden
files and folders) are ignored and counted in a note on stderr.

Images decode with PIL to grey (1 channel) when every image in the set is grey, else RGB,
unless data.channels is set; data.image_size resizes at decode time. In memory, the decoded set
is cached as uint8 `.npy` (see trainlab.data.cache), so only the first run pays for decoding.
File-backed (`data.in_memory=false`, or auto when the decoded set exceeds
data.in_memory_max_gb), the splits are `FolderFiles` that decode one image per `read(i)`.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import torch

from trainlab.config.schema import DataConfig
from trainlab.data import convert
from trainlab.data.cache import CacheEntry, cache_root, content_key, note, thread_map
from trainlab.data.sources.base import (
    DataSplits,
    ImageFiles,
    register_source,
    stratified_split,
)
from trainlab.data.sources.checks import check_splits
from trainlab.data.sources.folder_layout import (
    IMAGE_EXTENSIONS,
    LAYOUT,
    SPLITS,
    Layout,
    scan_layout,
)
from trainlab.errors import ConfigError, DataError

_BAD = (OSError, SyntaxError, ValueError, EOFError)  # what PIL raises for a file it cannot read


# ---------------------------------------------------------------------------------------------
# Bad files
# ---------------------------------------------------------------------------------------------


def _reason(e: BaseException) -> str:
    if isinstance(e, PermissionError):
        return "permission denied"
    if type(e).__name__ == "UnidentifiedImageError":
        return "not an image PIL can identify (wrong extension or corrupt header)"
    return str(e) or type(e).__name__


def bad_file_error(path: Path, reason: str) -> DataError:
    """The DataError for an image that cannot be decoded, naming it and the fixes."""
    fix = (f"give this user read access (chmod a+r '{path}') or remove it"
           if reason == "permission denied" else "replace or remove the file")
    return DataError(f"Cannot read image {path}: {reason}. To go on, {fix}; or set "
                     f"data.skip_bad_files=true to skip unreadable images (they are counted "
                     f"and reported).")


def _header(path: Path) -> tuple[int, int, int] | str:
    """(grey 0/1, width, height) from the file's header, or the reason it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return int(convert.is_grey(img)), img.size[0], img.size[1]
    except _BAD as e:
        return _reason(e)


def header_scan(layout: Layout, entry: CacheEntry) -> tuple[np.ndarray, list[list]]:
    """(grey, width, height) int64 [N, 3] per file (zeros for bad files), and the bad files as
    [index, reason]; cached. Bad files recorded in the cache are retried (fixed permissions)."""
    hit = entry.get("scan", mmap=False)
    if hit is not None:
        scan, meta = hit
        if not any(isinstance(_header(layout.root / layout.files[i]), tuple)
                   for i, _ in meta["bad"]):
            return np.asarray(scan, np.int64), meta["bad"]
    paths = [layout.root / f for f in layout.files]
    scan = np.zeros((len(paths), 3), np.int64)
    bad = []
    for i, res in enumerate(thread_map(_header, paths, chunk=256)):
        if isinstance(res, str):
            bad.append([i, res])
        else:
            scan[i] = res
    entry.put("scan", scan, {"bad": bad})
    entry.mark_owner(str(layout.root.resolve()))
    entry.prune_siblings(str(layout.root.resolve()))
    return scan, bad


def _handle_bad(layout: Layout, bad: list[list], skip: bool) -> None:
    if bad and not skip:
        i, reason = bad[0]
        raise bad_file_error(layout.root / layout.files[i], reason)


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def decode_all(layout: Layout, idx: np.ndarray, channels: int, image_size: int | None,
               hw: tuple[int, int], entry: CacheEntry, skip: bool
               ) -> tuple[np.ndarray, np.ndarray, list[list]]:
    """Decode files `idx` (listing indices) to uint8 [M, C, H, W], via the cache.

    Returns (images, kept, skipped): kept, the listing indices of the M rows, is idx minus the
    files that fail to decode (`skipped`, as [index, reason]), which raise DataError unless
    `skip`. The array is memory-mapped when it came from (or went into) the cache.
    """
    name = f"x-size{image_size or 0}-ch{channels}"
    hit = entry.get(name)
    if hit is not None:
        arr, meta = hit
        skipped = meta["skipped"]
        kept = np.setdiff1d(idx, [i for i, _ in skipped])
        same_rows = meta.get("rows") == _rows_id(kept) and arr.shape[1:] == (channels, *hw)
        if same_rows and not any(_decodes(layout, i, channels, image_size) for i, _ in skipped):
            _handle_bad(layout, skipped, skip)
            return arr, kept, skipped
    t0 = time.perf_counter()
    note(f"decoding {len(idx):,} images under {layout.root} "
         f"(once; cached in {entry.folder if entry.usable else 'memory only'})")
    out = np.empty((len(idx), channels, *hw), np.uint8)

    def work(j: int) -> list | None:
        i = int(idx[j])
        try:
            img = convert.decode_image(layout.root / layout.files[i], channels, image_size)
        except _BAD as e:
            return [i, _reason(e)]
        if img.shape != out.shape[1:]:
            return [i, f"decoded to {tuple(img.shape)} but its header said {out.shape[1:]} "
                       f"(did the file change while loading?)"]
        out[j] = img
        return None

    skipped = []
    with closing(thread_map(work, range(len(idx)))) as results:
        for res in results:
            if res is not None:
                _handle_bad(layout, [res], skip)  # raises unless skip: stops the pool
                skipped.append(res)
    keep_mask = ~np.isin(idx, [i for i, _ in skipped])
    kept = idx[keep_mask]
    if skipped:
        out = out[keep_mask]
    meta = {"skipped": skipped, "rows": _rows_id(kept), "seconds": time.perf_counter() - t0}
    if entry.put(name, out, meta):
        hit = entry.get(name)
        if hit is not None:
            del out
            return hit[0], kept, skipped
    return out, kept, skipped


def _rows_id(kept: np.ndarray) -> str:
    """A short id of which listing indices the rows of a decoded array are."""
    return hashlib.sha1(np.asarray(kept, np.int64).tobytes()).hexdigest()


def _decodes(layout: Layout, i: int, channels: int, image_size: int | None) -> bool:
    try:
        convert.decode_image(layout.root / layout.files[i], channels, image_size)
    except _BAD:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# File-backed splits
# ---------------------------------------------------------------------------------------------


class FolderFiles(ImageFiles):
    """Image files of one split, decoded on demand with the set's conversion. Picklable.

    shape = (N, C, H, W) after conversion; H = W = 0 when the sizes vary and no data.image_size
    is set. `read(i)` -> uint8 [C, H_i, W_i].
    """

    def __init__(self, root: Path, files: list[str], channels: int, image_size: int | None,
                 hw: tuple[int, int]) -> None:
        self.root = Path(root)
        self.files = list(files)
        self.channels = channels
        self.image_size = image_size
        self.shape = (len(self.files), channels, *hw)

    def __len__(self) -> int:
        return len(self.files)

    def path(self, i: int) -> Path:
        return self.root / self.files[i]

    def read(self, i: int) -> torch.Tensor:
        """Image i as uint8 [C, H, W]; DataError naming the file if it cannot be decoded."""
        try:
            img = convert.decode_image(self.path(i), self.channels, self.image_size)
        except _BAD as e:
            raise bad_file_error(self.path(i), _reason(e)) from e
        return torch.from_numpy(img)


# ---------------------------------------------------------------------------------------------
# The source
# ---------------------------------------------------------------------------------------------


def _common_size(scan: np.ndarray, ok: np.ndarray) -> tuple[int, int] | None:
    """(H, W) shared by every readable image, or None (sizes vary)."""
    wh = scan[ok, 1:]
    if (wh == wh[0]).all():
        return int(wh[0, 1]), int(wh[0, 0])
    return None


def _mixed_sizes_error(layout: Layout, scan: np.ndarray, ok: np.ndarray) -> DataError:
    wh = scan[ok, 1:]
    other = int(np.flatnonzero((wh != wh[0]).any(axis=1))[0])
    a, b = ok[0], ok[other]
    side = int(np.median(wh.min(axis=1)))
    return DataError(
        f"Images under {layout.root} have different sizes, e.g. {layout.files[a]} is "
        f"{wh[0, 0]}x{wh[0, 1]} and {layout.files[b]} is {wh[other, 0]}x{wh[other, 1]} "
        f"(width x height). An in-memory data set needs one size: set data.image_size=N to "
        f"resize every image to N x N at load (e.g. data.image_size={side}); or set "
        f"data.in_memory=false to keep the files on disk and decode them per batch.")


def _split_indices(layout: Layout, kept: np.ndarray, cfg: DataConfig) -> dict[str, np.ndarray]:
    """Listing indices of train/val/test: the split folders, carving missing ones from train."""
    parts = {s: kept[layout.split_of[kept] == SPLITS.index(s)] for s in SPLITS}
    if "test" not in layout.present:
        rest, test = stratified_split(layout.labels[parts["train"]], cfg.test_fraction,
                                      cfg.split_seed)
        parts["train"], parts["test"] = parts["train"][rest], parts["train"][test]
    if "val" not in layout.present:
        keep, val = stratified_split(layout.labels[parts["train"]], cfg.val_fraction,
                                     cfg.split_seed)
        parts["train"], parts["val"] = parts["train"][keep], parts["train"][val]
    return parts


def _use_memory(cfg: DataConfig, scan: np.ndarray, ok: np.ndarray, channels: int) -> bool:
    """data.in_memory, or (auto) whether the decoded set fits data.in_memory_max_gb (1e9 B)."""
    if cfg.in_memory is not None:
        return cfg.in_memory
    if cfg.image_size:
        pixels = len(ok) * cfg.image_size**2
    else:
        pixels = int((scan[ok, 1] * scan[ok, 2]).sum())
    gb = channels * pixels / 1e9
    if gb <= cfg.in_memory_max_gb:
        return True
    note(f"{len(ok):,} images decode to {gb:.1f} GB > data.in_memory_max_gb="
         f"{cfg.in_memory_max_gb:g}: reading them from disk as needed (file-backed). Set "
         f"data.in_memory=true to hold them in memory anyway.")
    return False


@register_source(
    "folder",
    dict(crop_padding=4, flip=True, rotate_deg=0.0, brightness=0.0, contrast=0.0),
    "image folder data.root/train/<class>/*.png|jpg|webp|bmp (+ optional val/, test/)",
)
def load_folder(cfg: DataConfig) -> DataSplits:
    """Load an ImageFolder-style data set (see module docstring) from `cfg.root`."""
    if not cfg.root:
        raise ConfigError(f"data.name=folder needs data.root=/path/to/images, a folder laid out "
                          f"as {LAYOUT}.")
    layout = scan_layout(Path(cfg.root).expanduser(), cfg.skip_bad_files)
    if layout.ignored:
        note(f"ignored {len(layout.ignored):,} non-image or hidden entries under {layout.root} "
             f"(images are {', '.join(IMAGE_EXTENSIONS)}), e.g. {layout.ignored[0]}")
    carved = tuple(s for s in ("test", "val") if s not in layout.present)
    if not cfg.skip_bad_files:  # every listed image must load: check the splits before reading
        parts = _split_indices(layout, np.arange(len(layout.files)), cfg)
        check_splits({s: layout.labels[i] for s, i in parts.items()}, layout.classes, carved,
                     cfg)
    key = content_key(layout.stats, {"classes": layout.classes})
    entry = CacheEntry(cache_root(cfg.cache_dir), "folder", key)
    scan, bad = header_scan(layout, entry)
    _handle_bad(layout, bad, cfg.skip_bad_files)
    ok = np.setdiff1d(np.arange(len(layout.files)), [i for i, _ in bad])
    if len(ok) == 0:
        raise DataError(f"No readable image under {layout.root}; the first one, "
                        f"{layout.files[bad[0][0]]}, failed with: {bad[0][1]}.")
    channels = cfg.channels or (1 if scan[ok, 0].all() else 3)
    common = _common_size(scan, ok)
    hw = (cfg.image_size, cfg.image_size) if cfg.image_size else common or (0, 0)
    skipped = layout.bad + [(layout.files[i], r) for i, r in bad]
    parts = _split_indices(layout, ok, cfg)
    if _use_memory(cfg, scan, ok, channels):
        if hw == (0, 0):
            raise _mixed_sizes_error(layout, scan, ok)
        arr, kept, failed = decode_all(layout, ok, channels, cfg.image_size, hw, entry,
                                       cfg.skip_bad_files)
        skipped += [(layout.files[i], r) for i, r in failed]
        row_of = np.full(len(layout.files), -1, np.int64)
        row_of[kept] = np.arange(len(kept))
        parts = _split_indices(layout, kept, cfg)
        xs = {s: torch.from_numpy(np.asarray(arr[row_of[idx]])) for s, idx in parts.items()}
    else:
        xs = {s: FolderFiles(layout.root, [layout.files[i] for i in idx], channels,
                             cfg.image_size, hw) for s, idx in parts.items()}
    if skipped:
        note(f"data.skip_bad_files=true: skipped {len(skipped):,} unreadable images or bad "
             f"entries under {layout.root}, e.g. {skipped[0][0]} ({skipped[0][1]})")
    ys = {s: torch.from_numpy(layout.labels[idx]) for s, idx in parts.items()}
    return DataSplits("folder", xs["train"], ys["train"], xs["val"], ys["val"], xs["test"],
                      ys["test"], list(layout.classes), carved)
