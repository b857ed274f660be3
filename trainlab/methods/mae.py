"""Masked autoencoder pretraining (MAE, He et al. 2021) for ViT backbones.

    imgs [B, C, H, W]
      -> model.embed_patches              [B, N, D]      every patch + its position embedding
      -> random_masking                   [B, L, D]      L = round(N * (1 - mask_ratio)) visible
      -> model.prepend_cls, apply_blocks  [B, 1+L, D]    the ViT encoder sees visible patches only
      -> decoder: embed                   [B, 1+L, Dd]
                  + mask tokens, restore  [B, 1+N, Dd]   back to image (row-major) patch order
                  + fixed sin-cos positions, blocks, norm, pred   [B, N, p*p*C]
      -> masked_mse(pred, patchify(imgs), mask)          mean over the removed patches only

Masks are per sample: in training the noise of the sample at position p of the epoch comes from
`sample_uniform` of the batch's keys, a function of (run.seed, epoch, p) only, so every rank
masks its own samples differently, a sample's mask does not depend on the number of ranks, and a
resume draws the same masks again. Evaluation uses the fixed seed EVAL_SEED and epoch 0 with
the validation position (= index), so the val loss of every epoch, at any world size, sees the
same mask for each image.

`method.model` is the ViT classifier itself (its head is unused and frozen here), so the
checkpoint's "model" entry loads into a classifier with `model.init`; the decoder is method
state, saved under the checkpoint's "method" entry.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from trainlab.config.schema import Config
from trainlab.data.keys import SampleKeys, contiguous_keys, sample_uniform
from trainlab.errors import ConfigError
from trainlab.methods.base import Batch, Method, batch_keys, register_method
from trainlab.methods.simclr import check_ssl_options
from trainlab.models.layers import Block, sincos_2d
from trainlab.models.vit import VisionTransformer

EVAL_SEED = 0  # fixed masks in evaluation: the val loss of every epoch sees the same patterns
NOISE_STREAM = 1  # `sample_uniform` stream of the masking noise


def patchify(imgs: Tensor, p: int) -> Tensor:
    """imgs [B, C, H, W] -> patches [B, N, p*p*C], N = (H/p)*(W/p) row-major, pixels (p, p, C)."""
    b, c, h, w = imgs.shape
    x = imgs.reshape(b, c, h // p, p, w // p, p)  # [B, C, h, p, w, p]
    x = x.permute(0, 2, 4, 3, 5, 1)  # [B, h, w, p, p, C]
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: Tensor, p: int, grid_hw: tuple[int, int], channels: int) -> Tensor:
    """patches [B, N, p*p*C] -> imgs [B, C, H, W] (the inverse of `patchify`)."""
    b = patches.shape[0]
    gh, gw = grid_hw
    x = patches.reshape(b, gh, gw, p, p, channels)  # [B, h, w, p, p, C]
    x = x.permute(0, 5, 1, 3, 2, 4)  # [B, C, h, p, w, p]
    return x.reshape(b, channels, gh * p, gw * p)


def random_masking(x: Tensor, len_keep: int, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Keep the `len_keep` patches with the smallest noise, per sample.

    x: [B, N, D] tokens, noise: [B, N] (uniform). Returns the kept tokens [B, len_keep, D] (in
    noise order), mask [B, N] (0 keep, 1 remove; in image order) and ids_restore [B, N], which
    maps the shuffled order (kept first, then removed) back to image order.
    """
    b, n, d = x.shape
    ids_shuffle = noise.argsort(dim=1)  # [B, N]: ascending noise, the first len_keep are kept
    ids_restore = ids_shuffle.argsort(dim=1)  # [B, N]
    ids_keep = ids_shuffle[:, :len_keep]  # [B, L]
    kept = x.gather(1, ids_keep[:, :, None].expand(-1, -1, d))  # [B, L, D]
    mask = torch.ones(b, n, device=x.device)
    mask[:, :len_keep] = 0
    mask = mask.gather(1, ids_restore)  # [B, N] in image order
    return kept, mask, ids_restore


def restore_order(kept: Tensor, mask_token: Tensor, ids_restore: Tensor) -> Tensor:
    """Append mask tokens and un-shuffle: kept [B, L, D], mask_token [1, 1, D], ids_restore
    [B, N] -> [B, N, D] in image order (mask tokens where patches were removed)."""
    b, n_keep, d = kept.shape
    n = ids_restore.shape[1]
    full = torch.cat([kept, mask_token.expand(b, n - n_keep, d)], dim=1)  # [B, N, D] shuffled
    return full.gather(1, ids_restore[:, :, None].expand(-1, -1, d))


def patch_targets(patches: Tensor, norm_pix: bool) -> Tensor:
    """patches [B, N, P] -> targets [B, N, P]; norm_pix: per-patch zero mean, unit variance."""
    if not norm_pix:
        return patches
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + 1e-6).sqrt()


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over removed patches only: pred, target [B, N, P], mask [B, N]
    (0 keep, 1 remove) -> scalar (per-patch mean over P, then mean over removed patches)."""
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)  # [B, N]
    return (per_patch * mask).sum() / mask.sum()


class MAEDecoder(nn.Module):
    """Light transformer decoder: encoder tokens [B, 1+L, D] -> pixel predictions [B, N, P]."""

    def __init__(self, enc_dim: int, grid_hw: tuple[int, int], patch_pixels: int, dim: int,
                 depth: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        n = grid_hw[0] * grid_hw[1]
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        pos = torch.zeros(1, n + 1, dim)  # position 0: the cls token
        pos[0, 1:] = sincos_2d(grid_hw, dim)
        self.register_buffer("pos_embed", pos, persistent=False)  # fixed, as in MAE
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch_pixels)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """latent [B, 1+L, D] (cls first), ids_restore [B, N] -> predictions [B, N, P]."""
        x = self.embed(latent)  # [B, 1+L, Dd]
        patches = restore_order(x[:, 1:], self.mask_token, ids_restore)  # [B, N, Dd]
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos_embed  # [B, 1+N, Dd]
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, 1:]  # drop the cls token: [B, N, P]


class MAE(Method):
    """Masked autoencoder around a `VisionTransformer`; see the module docstring."""

    def __init__(self, model: VisionTransformer, mask_ratio: float, decoder_dim: int,
                 decoder_depth: int, decoder_heads: int, norm_pix_loss: bool) -> None:
        super().__init__()
        self.model = model
        model.head.requires_grad_(False)  # unused here: keep it out of the optimizer and DDP
        pe = model.patch_embed
        self.patch_size, self.grid = pe.patch_size, pe.grid
        self.channels = pe.proj.in_channels
        self.len_keep = round(pe.num_patches * (1 - mask_ratio))
        self.norm_pix_loss = norm_pix_loss
        self.decoder = MAEDecoder(model.num_features, pe.grid, pe.patch_size ** 2 * self.channels,
                                  decoder_dim, decoder_depth, decoder_heads)

    def no_weight_decay(self) -> set[str]:
        """The decoder's mask token gets no weight decay."""
        return {"decoder.mask_token"}

    def _run(self, imgs: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """imgs [B, C, H, W], noise [B, N] -> (pred [B, N, P], target [B, N, P], mask [B, N])."""
        tokens = self.model.embed_patches(imgs)  # [B, N, D]
        kept, mask, ids_restore = random_masking(tokens, self.len_keep, noise)  # [B, L, D]
        latent = self.model.apply_blocks(self.model.prepend_cls(kept))  # [B, 1+L, D]
        pred = self.decoder(latent, ids_restore)  # [B, N, P]
        target = patch_targets(patchify(imgs, self.patch_size), self.norm_pix_loss)
        return pred, target, mask

    def _noise(self, imgs: Tensor, keys: SampleKeys | None) -> Tensor:
        """Masking noise uniform [B, N] on imgs' device: per sample from `keys`, or (a bare
        batch without keys) from torch's global RNG."""
        if keys is None:
            return torch.rand(imgs.shape[0], self.grid[0] * self.grid[1], device=imgs.device)
        if len(keys) != imgs.shape[0]:
            raise ValueError(f"{len(keys)} sample keys for a batch of {imgs.shape[0]} images")
        return sample_uniform(keys, self.grid[0] * self.grid[1], NOISE_STREAM).to(imgs.device)

    @staticmethod
    def eval_keys(keys: SampleKeys | None, batch_size: int) -> SampleKeys:
        """Keys of fixed evaluation masks: EVAL_SEED, epoch 0, the batch's positions (or
        0..B-1 for a bare batch)."""
        if keys is None:
            return contiguous_keys(EVAL_SEED, 0, 0, batch_size)
        return keys.with_seed(EVAL_SEED, 0)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Training: a new random mask per sample, from the batch's keys (see the module
        docstring); a bare (images, labels) batch draws from torch's global RNG instead."""
        imgs = batch[0]
        pred, target, mask = self._run(imgs, self._noise(imgs, batch_keys(batch)))
        return {"loss": masked_mse(pred, target, mask)}

    @torch.no_grad()
    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        """Masked-patch loss with fixed masks per image (`eval_keys`), comparable across epochs
        and world sizes."""
        imgs = batch[0]
        keys = self.eval_keys(batch_keys(batch), imgs.shape[0])
        pred, target, mask = self._run(imgs, self._noise(imgs, keys))
        return {"loss": masked_mse(pred, target, mask)}

    @torch.no_grad()
    def reconstruct(self, imgs: Tensor, keys: SampleKeys | None = None) -> tuple[Tensor, Tensor]:
        """For pictures: imgs [B, C, H, W] -> (reconstruction [B, C, H, W] in the input's units,
        mask [B, 1, H, W] with 1 on removed pixels). Masks as in `evaluate` (for the first
        validation images, without keys: the same masks as their val loss). With norm_pix_loss
        the predicted patches are mapped back with each true patch's mean and std (as the MAE
        demo does)."""
        pred, _, mask = self._run(imgs, self._noise(imgs, self.eval_keys(keys, imgs.shape[0])))
        pred = pred.float()
        if self.norm_pix_loss:
            patches = patchify(imgs, self.patch_size).float()  # [B, N, P]
            mean = patches.mean(dim=-1, keepdim=True)
            std = (patches.var(dim=-1, keepdim=True) + 1e-6).sqrt()
            pred = pred * std + mean
        p, c = self.patch_size, self.channels
        recon = unpatchify(pred, p, self.grid, c)  # [B, C, H, W]
        mask_px = unpatchify(mask[:, :, None].expand(-1, -1, p * p), p, self.grid, 1)
        return recon, mask_px


def check_mae(cfg: Config, model: nn.Module) -> None:
    """ConfigError for a backbone or method.* values MAE cannot use with this model (each
    key's own range, and decoder_heads dividing decoder_dim, are checked by `validate`)."""
    m = cfg.method
    if not isinstance(model, VisionTransformer):
        raise ConfigError(
            f"method.name=mae needs a Vision Transformer backbone (it drops patch tokens), but "
            f"model.name={cfg.model.name} is a {type(model).__name__}. Use model.name=vit_tiny "
            f"(or vit_small / vit_base), or method.name=simclr for CNNs.")
    n = model.num_patches
    keep = round(n * (1 - m.mask_ratio))
    if not 0 < keep < n:
        raise ConfigError(
            f"method.mask_ratio={m.mask_ratio} keeps {keep} of the {n} patches per image; at "
            f"least one patch must stay visible and one be removed. Use a ratio between "
            f"{1.5 / n:.3g} and {1 - 1.5 / n:.3g}, or smaller patches (model.patch_size).")
    pixels = model.patch_embed.patch_size ** 2 * model.patch_embed.proj.in_channels
    if m.norm_pix_loss and pixels < 2:
        raise ConfigError(
            "method.norm_pix_loss=true normalizes each patch to zero mean and unit variance, "
            "which is meaningless for one-pixel patches (model.patch_size=1 on one channel). "
            "Set method.norm_pix_loss=false or use a larger model.patch_size.")


@register_method("mae")
def _mae(cfg: Config, model: nn.Module) -> Method:
    check_mae(cfg, model)
    check_ssl_options(cfg)
    m = cfg.method
    return MAE(model, m.mask_ratio, m.decoder_dim, m.decoder_depth, m.decoder_heads,
               m.norm_pix_loss)
