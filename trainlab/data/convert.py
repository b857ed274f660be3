"""Conversion at load: `data.image_size` (resize) and `data.channels` (grey <-> RGB).

The same two operations serve every source: `convert_images` on in-memory uint8 tensors (after
a source has loaded them) and `decode_image` for image files (PIL decode, then the same
conversion, so a folder's decode cache already holds converted images).

Order: when the channel count shrinks (RGB -> grey) the channels are converted first, then the
image is resized; otherwise it is resized first, then the channel is replicated. Both are the
cheaper order, and replicating commutes exactly with resizing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trainlab.errors import ConfigError

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B for RGB -> grey
_CHUNK_BYTES = 256 * 2**20  # float32 working memory per resize chunk

# PIL modes whose pixels are one grey value; "P" counts when its palette is grey (r == g == b)
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_SIXTEEN_BIT = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def to_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    """x: uint8 [N, C, H, W] -> uint8 [N, channels, H, W]; a no-op for None or the same C.

    1 -> 3 replicates the grey channel; 3 -> 1 is round(0.299 R + 0.587 G + 0.114 B).
    """
    c = x.shape[1]
    if channels is None or channels == c:
        return x
    if c == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        weights = torch.tensor(LUMA, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        out = torch.empty((x.shape[0], 1, *x.shape[2:]), dtype=torch.uint8, device=x.device)
        step = max(1, _CHUNK_BYTES // max(1, 12 * x[0].numel()))
        for s in range(0, x.shape[0], step):
            grey = (x[s:s + step].float() * weights).sum(dim=1, keepdim=True)
            out[s:s + step] = grey.round_().clamp_(0, 255).to(torch.uint8)
        return out
    raise ConfigError(
        f"data.channels={channels} cannot be made from images with {c} channels; only grey "
        f"(1) <-> RGB (3) conversion is supported. Leave data.channels unset for this data set."
    )


def resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """x: uint8 [N, C, H, W] -> uint8 [N, C, size, size], antialiased bilinear.

    Computed in float32 (torch `F.interpolate(..., antialias=True)`), rounded and clamped back
    to 0..255, in chunks of about 256 MiB of float memory. A no-op when already size x size.
    """
    n, c, h, w = x.shape
    if size is None or (h, w) == (size, size):
        return x
    out = torch.empty((n, c, size, size), dtype=torch.uint8, device=x.device)
    step = max(1, _CHUNK_BYTES // (4 * c * max(h * w, size * size)))
    for s in range(0, n, step):
        part = F.interpolate(x[s:s + step].float(), size=(size, size), mode="bilinear",
                             align_corners=False, antialias=True)
        out[s:s + step] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def convert_images(
    x: torch.Tensor, image_size: int | None, channels: int | None
) -> torch.Tensor:
    """x: uint8 [N, C, H, W] -> uint8 [N, channels or C, image_size or H, image_size or W].

    Returns `x` itself when nothing changes. See the module docstring for the order.
    """
    if channels is not None and channels < x.shape[1]:
        return resize(to_channels(x, channels), image_size)
    return to_channels(resize(x, image_size), channels)


# ---------------------------------------------------------------------------------------------
# Image files
# ---------------------------------------------------------------------------------------------


def is_grey(img: object) -> bool:
    """Whether a PIL image (header opened, not necessarily decoded) holds grey pixels only."""
    mode = img.mode  # type: ignore[attr-defined]
    if mode in GREY_MODES:
        return True
    if mode == "P":
        pal = img.getpalette() or []  # type: ignore[attr-defined]
        rgb = np.asarray(pal[: len(pal) // 3 * 3], dtype=np.int64).reshape(-1, 3)
        return bool((rgb == rgb[:, :1]).all())
    return False


def decode_image(
    path: str | Path, channels: int | None, image_size: int | None
) -> np.ndarray:
    """Decode an image file to uint8 [C, H, W], converted like `convert_images`.

    Grey files ("1", "L", "LA", "I;16"..., grey-palette "P") decode to one channel (16-bit
    values scaled to 0..255, alpha dropped); anything else to RGB. `channels` None keeps that
    natural channel count. The result is a new, writable array. Raises OSError
    (PermissionError included), SyntaxError or ValueError from PIL for an unreadable, corrupt
    or truncated file; the caller names the file.
    """
    from PIL import Image

    with Image.open(path) as img:
        if img.mode in _SIXTEEN_BIT:
            wide = np.asarray(img, dtype=np.int64)  # 0..65535 stored values
            grey = ((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
            arr = grey[None]  # [1, H, W]
        elif is_grey(img):
            arr = np.array(img.convert("L"))[None]  # [1, H, W]
        else:
            arr = np.array(img.convert("RGB")).transpose(2, 0, 1)  # [3, H, W]
    if (channels is None or channels == arr.shape[0]) and (
        image_size is None or arr.shape[1:] == (image_size, image_size)
    ):
        return np.ascontiguousarray(arr)
    out = convert_images(torch.from_numpy(np.ascontiguousarray(arr))[None], image_size, channels)
    return out[0].numpy()
