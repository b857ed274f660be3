"""Fetch the official files of mnist, fashion-mnist, cifar10 and cifar100 (`data.download=true`).

Where files go: `data.root`, or when that is unset `default_root(name)` =
`$XDG_CACHE_HOME/trainlab/data/<name>` (`~/.cache/trainlab/data/<name>` when XDG_CACHE_HOME is
unset); the sources look there too, so a set fetched once is found again without
`data.download`. Each file is fetched only when missing, checked against the MD5 published for
the data set (the sums torchvision lists in torchvision/datasets/mnist.py and cifar.py) and
written atomically (temp file in the same folder, then rename). CIFAR archives are unpacked
member by member after checking every name: no absolute paths, no `..`, no links or devices.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from trainlab.errors import DataError

TIMEOUT_S = 30.0  # per network operation (connect, each read), seconds
_CHUNK = 1 << 20  # bytes per read while streaming and hashing


@dataclass(frozen=True)
class Remote:
    """Where a data set's official files live. URL of a file = mirror + file name."""

    title: str
    mirrors: tuple[str, ...]  # URL prefixes, tried in order
    files: tuple[tuple[str, str], ...]  # (file name, MD5 hex digest)
    extract_to: str | None = None  # for an archive: the folder it unpacks to, inside root
    layout: str = ""  # what the sources need, for the "put the files here" message


_MNIST_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_IDX_LAYOUT = ("the four files " + ", ".join(_MNIST_NAMES)
               + " (gunzipped copies work too)")

REMOTES: dict[str, Remote] = {
    "mnist": Remote(
        "MNIST",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        tuple(zip(_MNIST_NAMES, ("f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                 "d53e105ee54ea40749a09fcbcd1e9432",
                                 "9fb629c4189551a2d022fa330f9573f3",
                                 "ec29112dd5afa0611ce80d1b7f02629c"), strict=True)),
        layout=_IDX_LAYOUT,
    ),
    "fashion-mnist": Remote(
        "Fashion-MNIST",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        tuple(zip(_MNIST_NAMES, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                 "25c81989df183df01b3e8a0aad5dffbe",
                                 "bef4ecab320f06d8554ea6380940ec79",
                                 "bb300cfdad3c16e7a12a480ee83cd310"), strict=True)),
        layout=_IDX_LAYOUT,
    ),
    "cifar10": Remote(
        "CIFAR-10",
        ("https://www.cs.toronto.edu/~kriz/",),
        (("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        extract_to="cifar-10-batches-py",
        layout="cifar-10-python.tar.gz, or the folder cifar-10-batches-py/ it unpacks to "
        "(data_batch_1 ... data_batch_5, test_batch, batches.meta),",
    ),
    "cifar100": Remote(
        "CIFAR-100",
        ("https://www.cs.toronto.edu/~kriz/",),
        (("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
        extract_to="cifar-100-python",
        layout="cifar-100-python.tar.gz, or the folder cifar-100-python/ it unpacks to "
        "(train, test, meta),",
    ),
}


def default_root(name: str) -> Path:
    """The folder a data set is downloaded to when `data.root` is unset (see module docstring)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "trainlab" / "data" / name


def md5sum(path: Path) -> str:
    """MD5 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, dest: Path, timeout_s: float) -> None:
    """Stream `url` (http, https or file) into the file `dest`. Raises OSError/URLError on
    network trouble; the caller removes a partial `dest`."""
    request = urllib.request.Request(url, headers={"User-Agent": "trainlab"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response, open(dest, "wb") as f:
        shutil.copyfileobj(response, f, _CHUNK)


def _present(root: Path, file_name: str) -> bool:
    """True if the file, or its gunzipped copy (`x.gz` -> `x`), is already in `root`."""
    return (root / file_name).is_file() or (
        file_name.endswith(".gz") and (root / file_name[:-3]).is_file()
    )


def _download(remote: Remote, file_name: str, md5: str, root: Path) -> list[str]:
    """Fetch one file into `root` from the first mirror that delivers the right bytes.

    Returns [] on success, else one line per mirror saying what went wrong.
    """
    problems = []
    for mirror in remote.mirrors:
        url = mirror + file_name
        tmp = root / f".{file_name}.{os.getpid()}.part"  # per process: ranks may race
        try:
            print(f"trainlab: downloading {url} -> {root / file_name}", file=sys.stderr)
            fetch(url, tmp, TIMEOUT_S)
            got = md5sum(tmp)
            if got != md5:
                problems.append(f"{url}: checksum mismatch (MD5 {got}, expected {md5}); the "
                                "downloaded file was removed")
                continue
            os.replace(tmp, root / file_name)
            return []
        except (OSError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors
            reason = getattr(e, "reason", None) or e
            problems.append(f"{url}: {reason}")
        finally:
            tmp.unlink(missing_ok=True)
    return problems


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    """Refuse archive members that could write outside the target folder."""
    parts = PurePosixPath(member.name).parts
    bad = (member.name.startswith(("/", "\\")) or ".." in parts
           or not (member.isfile() or member.isdir()))
    if bad:
        kind = "link or special file" if not (member.isfile() or member.isdir()) else "path"
        raise DataError(
            f"Refusing to extract {archive}: member {member.name!r} is an unsafe {kind} (absolute, "
            "with '..', or not a plain file/folder), so the archive is not the official one. "
            "Delete it and download it again (data.download=true), or extract a trusted copy "
            "by hand."
        )


def extract_tar(archive: Path, root: Path) -> None:
    """Unpack a .tar.gz into `root` safely: every member checked first (see `_check_member`),
    unpacked into a temp folder inside `root`, then each file moved into place atomically."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(archive, member)
            with tempfile.TemporaryDirectory(prefix=".extract-", dir=root) as tmp:
                for member in members:
                    target = Path(tmp, *PurePosixPath(member.name).parts)
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(member)
                    assert source is not None  # regular file, checked above
                    with source, open(target, "wb") as out:
                        shutil.copyfileobj(source, out, _CHUNK)
                    final = root.joinpath(*PurePosixPath(member.name).parts)
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(target, final)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(
            f"Cannot extract {archive} ({e}). The archive is truncated or corrupt: delete it and "
            "download it again (data.download=true)."
        ) from e


def _failed_error(remote: Remote, root: Path, problems: list[str]) -> DataError:
    urls = " ".join(remote.mirrors[0] + f for f, _ in remote.files)
    return DataError(
        f"Downloading {remote.title} failed:\n  " + "\n  ".join(problems)
        + f"\nTo fetch the files by hand (e.g. on a machine with network access): get {urls} and "
        f"put {remote.layout} in {root}, then run again."
    )


def ensure_downloaded(name: str, root: str | Path) -> Path:
    """Fetch (and for CIFAR extract) the official files of `name` into `root`; returns `root`.

    Files already present are kept (an archive is checked: a wrong MD5 is a DataError). An
    archive is unpacked into root (over a partial folder, if any) and then removed.
    Raises DataError listing each URL's failure and where to put the files by hand.
    """
    if name not in REMOTES:
        raise DataError(f"data.download=true is not supported for data.name={name!r}; it works "
                        f"for {', '.join(sorted(REMOTES))}. Put the files in data.root yourself.")
    remote, root = REMOTES[name], Path(root).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"Cannot create the download folder {root} ({e.strerror or e}). Set "
                        "data.root to a writable folder.") from e
    missing = [(f, md5) for f, md5 in remote.files if not _present(root, f)]
    for file_name, md5 in missing:
        if problems := _download(remote, file_name, md5, root):  # stop at the first failure
            raise _failed_error(remote, root, problems)
    if remote.extract_to:
        for file_name, md5 in remote.files:
            archive = root / file_name
            if (got := md5sum(archive)) != md5:
                raise DataError(f"{archive} does not match the published checksum (MD5 {got}, "
                                f"expected {md5}): it is not the official archive or it is "
                                "damaged. Delete it and run again with data.download=true.")
            extract_tar(archive, root)
            archive.unlink()
        if not (root / remote.extract_to).is_dir():
            raise DataError(f"The {remote.title} archive unpacked in {root} did not contain the "
                            f"folder {remote.extract_to}/; it is not the official archive.")
    return root
