"""Transformer building blocks shared by the ViT and (later) the MAE encoder/decoder."""

from __future__ import annotations

import torch
from torch import nn

from trainlab.models.norm import token_norm


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a whole sample's residual branch with probability p.

    Kept samples are scaled by 1/(1-p) so the expectation is unchanged; identity in eval mode.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, ...] -> [B, ...]."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # [B, 1, ...]
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


class PatchEmbed(nn.Module):
    """Cut an image into non-overlapping p x p patches and project each to a `dim` token.

    A Conv2d with kernel = stride = patch_size is exactly a linear map of each flattened patch.
    """

    def __init__(self, image_hw: tuple[int, int], patch_size: int, in_chans: int, dim: int):
        super().__init__()
        self.image_hw = image_hw
        self.patch_size = patch_size
        self.grid = (image_hw[0] // patch_size, image_hw[1] // patch_size)  # (H/p, W/p)
        self.num_patches = self.grid[0] * self.grid[1]
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> patch tokens [B, N, dim], N = (H/p)*(W/p), row-major patch order."""
        if tuple(x.shape[-2:]) != self.image_hw:
            raise ValueError(f"expected images of size {self.image_hw}, got {tuple(x.shape[-2:])}")
        x = self.proj(x)  # [B, dim, H/p, W/p]
        return x.flatten(2).transpose(1, 2)  # [B, dim, N] -> [B, N, dim]


class Attention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention` (fused kernels)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, attn_drop: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads={heads} must divide dim={dim}")
        self.heads = heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: [B, L, D] -> q, k, v, each [B, heads, L, D/heads]."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads)  # [B, L, 3, h, D/h]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B, h, L, D/h]
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, L, D] -> [B, L, D]."""
        b, n, d = x.shape
        q, k, v = self._qkv(x)
        drop = self.attn_drop if self.training else 0.0
        out = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # [B, h, L, D/h]
        out = out.transpose(1, 2).reshape(b, n, d)  # [B, L, h, D/h] -> [B, L, D]
        return self.proj(out)

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights for plots. x: [B, L, D] -> [B, heads, L, L], rows sum to 1."""
        q, k, _ = self._qkv(x)
        scale = q.shape[-1] ** -0.5
        return (q @ k.transpose(-2, -1) * scale).softmax(dim=-1)  # [B, h, L, L]


class Mlp(nn.Module):
    """Linear(dim -> hidden) -> GELU -> Linear(hidden -> dim), dropout after each."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, L, dim] -> [B, L, dim]."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)); stochastic depth."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 norm: str = "layer"):
        super().__init__()
        self.norm1 = token_norm(norm, dim)  # LayerNorm, or Identity for norm none
        self.attn = Attention(dim, heads)
        self.norm2 = token_norm(norm, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, L, dim] -> [B, L, dim] (any token count L)."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def sincos_2d(grid_hw: tuple[int, int], dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes [H/p * W/p, dim] (row-major patches, as MAE).

    A quarter of the channels each encode sin(y), cos(y), sin(x), cos(x) at geometric
    frequencies; dims that do not divide by 4 are zero-padded.
    """
    gh, gw = grid_hw
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float32),
                            torch.arange(gw, dtype=torch.float32), indexing="ij")
    q = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(q, dtype=torch.float32) / max(q, 1))  # [q]
    parts = []
    for pos in (ys.flatten(), xs.flatten()):  # [N] each
        angle = pos[:, None] * omega[None]  # [N, q]
        parts += [angle.sin(), angle.cos()]
    pe = torch.cat(parts, dim=1)  # [N, 4q]
    return torch.nn.functional.pad(pe, (0, dim - pe.shape[1]))  # [N, dim]
