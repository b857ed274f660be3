"""Listing an image folder (`data.name=folder`): which files are images of which class and split.

    root/train/<class>/**/*.png|jpg|jpeg|webp|bmp     (extensions in any case)
    root/val/<class>/...  root/test/<class>/...       optional, same class names

Symbolic links are followed, but never into a loop: every folder's real path is tracked, so a
link to a folder above it (or to itself), or to a folder already listed, is a bad entry, as are
a dangling link, a link to itself, an empty (0-byte) image file and an image name that is not a
regular file (a FIFO would block the decoder). Bad entries raise DataError naming the path,
unless data.skip_bad_files=true: then they are left out and counted (`Layout.bad`). Other files
(other extensions, hidden files and folders) are ignored and counted (`Layout.ignored`).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainlab.errors import DataError

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")
SPLITS = ("train", "val", "test")
LAYOUT = "root/train/<class>/*.png (also .jpg, .jpeg, .webp, .bmp), optional root/val/ and " \
         "root/test/ with the same class folders"


@dataclass
class Layout:
    """The image files found under a root. files: paths relative to root, train/ then val/ then
    test/, each sorted; labels: int64 [N] class ids; split_of: int64 [N] index into SPLITS."""

    root: Path
    classes: list[str]
    files: list[str]
    labels: np.ndarray
    split_of: np.ndarray
    present: tuple[str, ...]
    stats: list[tuple[str, int, int]]  # (relative path, size bytes, mtime ns) per file
    ignored: list[str]
    bad: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason), skipped


def bad_entry_error(path: Path | str, reason: str) -> DataError:
    """The DataError for a listed entry that cannot be used (broken link, loop, empty file)."""
    return DataError(f"Cannot use {path}: {reason}. To go on, remove it (or fix the link); or "
                     f"set data.skip_bad_files=true to skip such entries (they are counted and "
                     f"reported).")


def _inside(path: str, folder: str) -> bool:
    """Whether real path `path` is `folder` or below it."""
    return os.path.commonpath([path, folder]) == folder


@dataclass
class _Walk:
    """State of one listing: ignored and bad entries, and the real path of every folder seen."""

    root: Path
    skip_bad: bool
    ignored: list[str] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    seen: dict[str, str] = field(default_factory=dict)  # real path -> relative path

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    def reject(self, path: str, reason: str) -> None:
        """A bad entry: DataError now, or (data.skip_bad_files) counted and left out."""
        if not self.skip_bad:
            raise bad_entry_error(path, reason)
        self.bad.append((self.rel(path), reason))

    def entries(self, folder: Path) -> list[os.DirEntry]:
        """Non-hidden entries of `folder`, sorted by name; hidden ones go to `ignored`."""
        try:
            with os.scandir(folder) as it:
                found = sorted(it, key=lambda e: e.name)
        except OSError as e:
            raise DataError(f"Cannot list folder {folder}: {e.strerror or e}. Check that it "
                            f"exists and that you may read it (chmod a+rx).") from e
        keep = []
        for e in found:
            if e.name.startswith("."):
                self.ignored.append(self.rel(e.path))
            else:
                keep.append(e)
        return keep

    def status(self, e: os.DirEntry) -> os.stat_result | None:
        """stat of the entry, links followed; None (after `reject`) for a broken link."""
        try:
            return e.stat()
        except OSError as err:
            if err.errno == errno.ELOOP:
                reason = "a symbolic link that loops (following it leads back to itself)"
            elif e.is_symlink() and isinstance(err, FileNotFoundError):
                reason = f"a dangling symbolic link (its target {os.readlink(e.path)} is missing)"
            else:
                reason = f"cannot stat it ({err.strerror or err})"
            self.reject(e.path, reason)
            return None

    def enter(self, path: str, chain: tuple[str, ...]) -> str | None:
        """Real path of folder `path` if it is new; None (after `reject`) for a loop or a folder
        already listed. chain: real paths of the folders above it, root first."""
        real = os.path.realpath(path)
        if real in chain or (chain and _inside(chain[-1], real)):
            self.reject(path, f"a symbolic link to {real}, a folder that contains it (a loop)")
            return None
        if real in self.seen:
            self.reject(path, f"the same folder as {self.seen[real]} (reached through a "
                              f"symbolic link), so its images would be listed twice")
            return None
        self.seen[real] = self.rel(path)
        return real

    def class_dirs(self, split: Path, chain: tuple[str, ...]) -> list[tuple[str, str, str]]:
        """(name, path, real path) of the class folders in a split folder; files beside them
        are ignored, broken links and loops are bad entries."""
        out = []
        for e in self.entries(split):
            st = self.status(e)
            if st is None:
                continue
            if not stat.S_ISDIR(st.st_mode):
                self.ignored.append(self.rel(e.path))
                continue
            real = self.enter(e.path, chain)
            if real is not None:
                out.append((e.name, e.path, real))
        return out

    def images(self, folder: str, chain: tuple[str, ...]) -> list[tuple[str, int, int]]:
        """(relative path, size, mtime_ns) of the image files under `folder` (real path
        chain[-1]), recursively, sorted."""
        found = []
        for e in self.entries(Path(folder)):
            st = self.status(e)
            if st is None:
                continue
            if stat.S_ISDIR(st.st_mode):
                real = self.enter(e.path, chain)
                if real is not None:
                    found.extend(self.images(e.path, (*chain, real)))
            elif not e.name.lower().endswith(IMAGE_EXTENSIONS):
                self.ignored.append(self.rel(e.path))
            elif not stat.S_ISREG(st.st_mode):
                self.reject(e.path, "not a regular file (a FIFO, socket or device)")
            elif st.st_size == 0:
                self.reject(e.path, "an empty file (0 bytes)")
            else:
                found.append((self.rel(e.path), st.st_size, st.st_mtime_ns))
        return found


def scan_layout(root: Path, skip_bad: bool = False) -> Layout:
    """List the images under `root` (see module docstring); DataError for a wrong layout, fewer
    than two classes, or (unless `skip_bad`) a bad entry."""
    if not root.is_dir():
        raise DataError(f"data.root={root} does not exist or is not a folder. Point data.root at "
                        f"an image folder laid out as {LAYOUT}.")
    if (root / "train").is_symlink() and not (root / "train").exists():
        raise bad_entry_error(root / "train", "a broken symbolic link (dangling, or a loop)")
    if not (root / "train").is_dir():
        raise DataError(f"data.root={root} has no train/ folder. Expected {LAYOUT}; if your "
                        f"class folders sit directly in {root}, move them into {root}/train/.")
    walk = _Walk(root, skip_bad)
    top = (os.path.realpath(root),)
    present = tuple(s for s in SPLITS if (root / s).is_dir())
    dirs = {}
    for s in present:
        real = walk.enter(str(root / s), top)
        dirs[s] = walk.class_dirs(root / s, (*top, real)) if real else []
    classes = [name for name, _, _ in dirs["train"]]
    if not classes:
        raise DataError(f"{root}/train has no class folders. Expected {LAYOUT}.")
    if len(classes) == 1:
        raise DataError(
            f"{root}/train has only one class folder, {classes[0]}/; a classifier needs at least "
            f"two classes (with one, every prediction is right). Put the images of each class in "
            f"its own folder: {root}/train/<class>/ for at least two classes.")
    files: list[str] = []
    labels: list[int] = []
    split_of: list[int] = []
    stats: list[tuple[str, int, int]] = []
    for s in present:
        if not dirs[s]:
            raise DataError(
                f"{root}/{s} has no class folders, so the {s} split would be empty. Put class "
                f"folders in it ({root}/{s}/<class>/*.png, the classes of train/), or remove "
                f"it to carve the split out of train/ with data.{s}_fraction.")
        for name, path, real in dirs[s]:
            if name not in classes:
                raise DataError(
                    f"Class folder {path} is not in {root}/train/ (classes there: "
                    f"{', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''}). Every "
                    f"val/ and test/ class must also be a train/ class: add {root}/train/{name}/ "
                    f"with images, or remove or rename this folder.")
            n_bad = len(walk.bad)
            found = walk.images(path, (*top, os.path.realpath(root / s), real))
            if not found:
                skipped = len(walk.bad) - n_bad
                why = f" (data.skip_bad_files=true skipped all {skipped} of its entries)" \
                    if skipped else ""
                raise DataError(
                    f"Class folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)}){why}. "
                    f"Remove the empty folder (or add images to it).")
            label = classes.index(name)
            for rel, size, mtime_ns in found:
                files.append(rel)
                stats.append((rel, size, mtime_ns))
                labels.append(label)
                split_of.append(SPLITS.index(s))
    return Layout(root, classes, files, np.asarray(labels, np.int64),
                  np.asarray(split_of, np.int64), present, stats, walk.ignored, walk.bad)
