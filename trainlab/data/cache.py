"""Decode cache: images decoded once into uint8 `.npy` files, reused while the source is unchanged.

Layout: `<cache_dir>/folder/<key>/` per image folder, where `key` is `content_key(...)`, a
SHA-256 over the sorted (relative path, size in bytes, mtime in ns) of every listed file plus
the Pillow version and a format version. The folder holds the header scan and one decoded
array per conversion setting (data.image_size, data.channels), each `.npy` beside a `.json`
written last, so an entry without its `.json` is incomplete and ignored.

Why (path, size, mtime_ns) is enough: every ordinary way of changing a file (an editor, `cp`,
a re-export, a download) rewrites it and so sets its mtime to the time of the write, with
nanosecond resolution; an added, removed or renamed file changes the list of paths. What it
does not see is a file rewritten with the same size and its old mtime put back on purpose
(`touch -d`, `rsync -t` over an equal-sized file): delete the cache folder after doing that.
Not hashing the bytes keeps a cache hit at one `stat` per file instead of reading the whole
data set. The root's own path is not part of the key, so a moved folder (`mv`, or a copy that
keeps mtimes) still hits.

Writes are atomic (temp file + rename), so concurrent runs (a Slurm array on the same data)
never see half-written files; a corrupt or unreadable cache file is treated as a miss and
rebuilt. When the cache folder cannot be written, loading goes on without a cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from trainlab.files import atomic_write_bytes

CACHE_VERSION = 1
T = TypeVar("T")
R = TypeVar("R")


def note(message: str) -> None:
    """One line for the user on stderr, prefixed `trainlab: ` (counts of ignored files...)."""
    print(f"trainlab: {message}", file=sys.stderr, flush=True)


def cache_root(cache_dir: str | None) -> Path:
    """`data.cache_dir`, else `$XDG_CACHE_HOME/trainlab`, else `~/.cache/trainlab`."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "trainlab"


def content_key(entries: Iterable[tuple[str, int, int]], extra: dict[str, Any]) -> str:
    """SHA-256 hex of sorted (relative path, size, mtime_ns) entries and `extra` settings."""
    from PIL import __version__ as pil_version

    h = hashlib.sha256()
    head = {"version": CACHE_VERSION, "pillow": pil_version, **extra}
    h.update(json.dumps(head, sort_keys=True).encode())
    for rel, size, mtime_ns in sorted(entries):
        h.update(f"\n{rel}\0{size}\0{mtime_ns}".encode())
    return h.hexdigest()


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a Slurm allocation)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def thread_map(fn: Callable[[T], R], items: Sequence[T], chunk: int = 32) -> Iterator[R]:
    """fn(item) for every item, in order, on a thread pool sized to `cpu_count()`.

    Meant for image decoding: PIL releases the GIL while it decodes, so threads run in
    parallel without pickling the decoded arrays. Items go to the pool in chunks of `chunk`.
    Stopping early (an exception, or the caller stops iterating) cancels the rest.
    """
    workers = min(cpu_count(), max(1, -(-len(items) // chunk)))
    if workers == 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="trainlab-decode")
    try:
        futures = [pool.submit(lambda part: [fn(it) for it in part], items[s:s + chunk])
                   for s in range(0, len(items), chunk)]
        for fut in futures:
            yield from fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class CacheEntry:
    """One cache folder `<root>/<kind>/<key>/`: named arrays (`.npy`) with metadata (`.json`).

    `usable` is False when the folder cannot be created; `get` then misses and `put` does
    nothing, so callers need no special case.
    """

    def __init__(self, root: Path, kind: str, key: str) -> None:
        self.folder = root / kind / key
        self.usable = True
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self.usable = False
            note(f"cannot create the decode cache folder {self.folder} ({e.strerror or e}); "
                 f"decoding without a cache. Set data.cache_dir to a writable folder.")

    def get(self, name: str, mmap: bool = True) -> tuple[np.ndarray, dict[str, Any]] | None:
        """(array, metadata) saved as `name`, memory-mapped read-only; None on a miss.

        A corrupt or truncated file, or one whose shape/dtype disagrees with its metadata, is
        reported as a miss, so it gets rebuilt (and atomically replaced by `put`).
        """
        if not self.usable:
            return None
        arr_path, meta_path = self.folder / f"{name}.npy", self.folder / f"{name}.json"
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            arr = np.load(arr_path, mmap_mode="r" if mmap else None, allow_pickle=False)
            if list(arr.shape) != meta["shape"] or str(arr.dtype) != meta["dtype"]:
                raise ValueError(f"shape {arr.shape} {arr.dtype} != metadata")
        except (OSError, ValueError, EOFError, KeyError, TypeError) as e:
            note(f"decode cache file {arr_path} is unreadable ({e}); rebuilding it.")
            return None
        return arr, meta

    def put(self, name: str, arr: np.ndarray, meta: dict[str, Any]) -> bool:
        """Save `arr` and `meta` (JSON) as `name`, atomically; False (with a note) on failure."""
        if not self.usable:
            return False
        full = {**meta, "shape": list(arr.shape), "dtype": str(arr.dtype)}
        try:
            atomic_write_bytes(self.folder / f"{name}.npy", lambda f: np.save(f, arr))
            atomic_write_bytes(self.folder / f"{name}.json",
                          lambda f: f.write(json.dumps(full).encode()))
        except OSError as e:
            note(f"could not write the decode cache {self.folder / name}.npy ({e.strerror or e}); "
                 f"going on without it. Free disk space or set data.cache_dir elsewhere.")
            return False
        return True

    def prune_siblings(self, owner: str) -> None:
        """Delete other entries of the same kind whose metadata `owner` file says `owner`.

        Called after writing a new entry for a data folder, so that editing a data set does
        not leave its stale decoded copies behind.
        """
        try:
            siblings = list(self.folder.parent.iterdir()) if self.usable else []
        except OSError:
            siblings = []
        for other in siblings:
            if other == self.folder or not other.is_dir():
                continue
            try:
                stale = json.loads((other / "owner.json").read_text()).get("owner") == owner
            except (OSError, ValueError, AttributeError):
                continue
            if stale:
                shutil.rmtree(other, ignore_errors=True)

    def mark_owner(self, owner: str) -> None:
        """Record which data folder this entry belongs to (used by `prune_siblings`)."""
        if self.usable:
            try:
                atomic_write_bytes(self.folder / "owner.json",
                              lambda f: f.write(json.dumps({"owner": owner}).encode()))
            except OSError:
                pass
