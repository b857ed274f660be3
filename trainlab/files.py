"""Files a run writes: atomic writes that honour the umask, and timestamped output folders.

A leaf (floor 1): every other layer writes through here, so "a crash never leaves a half-written
file" and "teammates can read my results" are stated once.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, then put it back
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write(fileobj)` on a temp file next to `path`, fsync, then rename over `path`.

    The file gets mode 0666 minus the umask, like any file the user creates (mkstemp alone
    would leave 0600), so results on a shared cluster file system stay readable by the group.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json_dict(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when the file is missing, unreadable, not JSON, or
    holds something other than an object (result files a run may not have written yet)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):  # ValueError: bad JSON or bad UTF-8
        return None
    return data if isinstance(data, dict) else None


def timestamped_dir(parent: str | Path, name: str) -> Path:
    """`parent/<name>-YYYYmmdd-HHMMSS` that does not exist yet (`-1`, `-2`... when several
    start in the same second). Only the name is chosen; nothing is created."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(parent) / f"{name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def recipe_name(recipe: str | Path | None) -> str:
    """The name runs of a recipe are filed under: the YAML file's stem, or "default"."""
    if recipe is None:
        return "default"
    return re.sub(r"[^\w.-]+", "_", Path(recipe).stem) or "default"
