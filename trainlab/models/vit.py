"""Vision Transformer (our own implementation; the MAE encoder reuses its parts).

Data flow, with N = (H/p)*(W/p) patches and D = dim:

    images [B, C, H, W]
      -> embed_patches   [B, N, D]     patch projection + position embedding (no cls yet)
      -> prepend_cls     [B, 1+N, D]   cls token (+ its position embedding) in front
      -> apply_blocks    [B, 1+N, D]   transformer blocks, then the final LayerNorm
      -> pool            [B, D]        cls token or mean of the patch tokens
      -> head            [B, num_classes]

MAE drops patch tokens between `embed_patches` and `prepend_cls`; `apply_blocks` takes any L.
"""

from __future__ import annotations

import torch
from torch import nn

from trainlab.config.schema import POOLS, ModelConfig
from trainlab.errors import ConfigError
from trainlab.models.layers import Block, PatchEmbed, sincos_2d
from trainlab.models.norm import resolve_norm, token_norm
from trainlab.models.registry import ImageSpec, register

VARIANTS: dict[str, tuple[int, int, int]] = {  # name: (dim, depth, heads)
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
}


class VisionTransformer(nn.Module):
    """ViT classifier: patch tokens + cls token + learned position embedding, pre-norm blocks."""

    def __init__(
        self,
        image_hw: tuple[int, int],
        patch_size: int,
        in_chans: int,
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        dropout: float = 0.0,
        pool: str = "cls",
        norm: str = "layer",
    ):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.pool = pool
        self.patch_embed = PatchEmbed(image_hw, patch_size, in_chans, dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))  # [1, 1, D]
        # [1, 1+N, D]: position 0 belongs to the cls token, 1..N to the patches (row-major)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        rates = torch.linspace(0, drop_path, depth).tolist() if depth > 1 else [drop_path] * depth
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, r, norm)
                                    for r in rates)
        self.norm = token_norm(norm, dim)  # LayerNorm, or Identity for model.norm=none
        self.num_features = dim
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # learned, but started from 2-D sin-cos codes: with a tiny random init a ViT on small
        # data is nearly blind to patch positions and sits on a loss plateau for many epochs
        with torch.no_grad():
            self.pos_embed.zero_()
            self.pos_embed[0, 1:] = sincos_2d(self.patch_embed.grid, self.pos_embed.shape[-1])
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        w = self.patch_embed.proj.weight  # [D, C, p, p]: a linear map of each flattened patch
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def num_patches(self) -> int:
        """N, the number of patch tokens per image."""
        return self.patch_embed.num_patches

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> patch tokens with position embedding [B, N, D] (no cls token)."""
        return self.patch_embed(x) + self.pos_embed[:, 1:]  # [B, N, D] + [1, N, D]

    def prepend_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [B, L, D] (all N patches, or a kept subset) -> [B, 1+L, D], cls first."""
        cls = self.cls_token + self.pos_embed[:, :1]  # [1, 1, D]
        return torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)

    def apply_blocks(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [B, L, D] -> [B, L, D] after every block and the final LayerNorm."""
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> normalized tokens [B, 1+N, D]; token 0 is the cls token."""
        return self.apply_blocks(self.prepend_cls(self.embed_patches(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> pooled features [B, D] (cls token, or mean of the N patch tokens)."""
        tokens = self.forward_tokens(x)  # [B, 1+N, D]
        return tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> logits [B, num_classes]."""
        return self.head(self.drop(self.forward_features(x)))

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """For plots (not used in training): the attention weights of every block for images
        x [B, C, H, W] -> one [B, heads, 1+N, 1+N] per block (rows sum to 1; token 0 is the
        cls token). Computed explicitly as softmax(QK^T / sqrt(d)), since the fused kernel
        never forms them."""
        tokens = self.prepend_cls(self.embed_patches(x))
        maps = []
        for block in self.blocks:
            maps.append(block.attn.attention_map(block.norm1(tokens)))
            tokens = block(tokens)
        return maps

    def num_layers(self) -> int:
        """Layer id of the head for layer-wise lr decay: blocks + 1."""
        return len(self.blocks) + 1

    def layer_id(self, name: str) -> int:
        """Depth of parameter `name` (relative to this ViT) for layer-wise lr decay:
        patch_embed, pos_embed and cls_token are 0, blocks.i is i+1, everything after the
        blocks (norm, head) is num_layers()."""
        if name.startswith(("patch_embed.", "pos_embed", "cls_token")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_layers()

    def no_weight_decay(self) -> set[str]:
        """The learned tokens: no weight decay on `pos_embed` and `cls_token`."""
        return {"pos_embed", "cls_token"}


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _check(cfg: ModelConfig, image_hw: tuple[int, int], dim: int, depth: int, heads: int) -> None:
    """Raise `ConfigError` (naming the key and the valid choices) for a ViT config impossible
    for these images or this variant (each key's own range is checked by `validate`)."""
    h, w = image_hw
    size = f"{h}x{w}"
    p = cfg.patch_size
    if h % p or w % p:
        fits = [d for d in _divisors(h) if w % d == 0]
        raise ConfigError(
            f"model.patch_size={p} does not divide the image size {size}. "
            f"Patch sizes that divide it: {', '.join(map(str, fits))} "
            "(or change model.image_size)."
        )
    if dim % heads:
        fits = [d for d in _divisors(dim) if d <= 64]
        raise ConfigError(
            f"model.heads={heads} does not divide model.dim={dim} ({cfg.name}). "
            f"Head counts that divide it: {', '.join(map(str, fits))}."
        )


def build_vit(cfg: ModelConfig, spec: ImageSpec) -> VisionTransformer:
    """Build the variant `cfg.name`; cfg.dim/depth/heads override its defaults when set.

    The image is cfg.image_size x cfg.image_size if set, else spec.height x spec.width.
    """
    dim, depth, heads = VARIANTS[cfg.name]
    dim = cfg.dim if cfg.dim is not None else dim
    depth = cfg.depth if cfg.depth is not None else depth
    heads = cfg.heads if cfg.heads is not None else heads
    image_hw = (cfg.image_size, cfg.image_size) if cfg.image_size else (spec.height, spec.width)
    _check(cfg, image_hw, dim, depth, heads)
    return VisionTransformer(
        image_hw,
        cfg.patch_size,
        spec.channels,
        spec.num_classes,
        dim=dim,
        depth=depth,
        heads=heads,
        mlp_ratio=cfg.mlp_ratio,
        drop_path=cfg.drop_path,
        dropout=cfg.dropout,
        pool=cfg.pool,
        norm=resolve_norm(cfg.norm, "vit"),
    )


@register("vit_tiny", "vit", "ViT-Tiny: dim 192, depth 12, heads 3 (~5M params)")
def vit_tiny(cfg: ModelConfig, spec: ImageSpec) -> VisionTransformer:
    """ViT-Tiny (dim 192, depth 12, heads 3) for `spec` images."""
    return build_vit(cfg, spec)


@register("vit_small", "vit", "ViT-Small: dim 384, depth 12, heads 6 (~21M params)")
def vit_small(cfg: ModelConfig, spec: ImageSpec) -> VisionTransformer:
    """ViT-Small (dim 384, depth 12, heads 6) for `spec` images."""
    return build_vit(cfg, spec)


@register("vit_base", "vit", "ViT-Base: dim 768, depth 12, heads 12 (~85M params)")
def vit_base(cfg: ModelConfig, spec: ImageSpec) -> VisionTransformer:
    """ViT-Base (dim 768, depth 12, heads 12) for `spec` images."""
    return build_vit(cfg, spec)
