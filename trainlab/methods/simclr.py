"""SimCLR contrastive pretraining (Chen et al. 2020) for CNN and ViT backbones.

    images [B, C, H, W] -> two_views -> [2B, C, H, W]
      -> model.forward_features           [2B, F]
      -> projection head (Linear-BN-ReLU-Linear)  [2B, proj_dim], L2-normalized
      -> NT-Xent: each view must pick its partner among the other 2B_all - 1 embeddings

With torch.distributed initialized, the embeddings of every rank are gathered (the local part
keeps its gradient) so the negatives come from the whole global batch. `method.model` is the
backbone (its classifier head is unused and frozen); the projection head is method state, saved
under the checkpoint's "method" entry.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from trainlab.config.schema import Config
from trainlab.errors import ConfigError
from trainlab.methods.base import Batch, Method, register_method
from trainlab.methods.views import ViewSpec, two_views

EVAL_SEED = 0  # fixed views in evaluation: the val loss of every epoch sees the same pairs


class ProjectionHead(nn.Sequential):
    """Linear(in -> hidden) -> BatchNorm1d -> ReLU -> Linear(hidden -> out): [B, in] -> [B, out]."""

    def __init__(self, in_dim: int, hidden: int, out: int) -> None:
        super().__init__(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


def gather_with_grad(z: Tensor) -> tuple[Tensor, int]:
    """Concatenate z [b, d] over ranks -> ([sum_r b_r, d], offset of this rank's rows).

    Only this rank's rows keep their gradient (the others arrive as constants). Ranks may hold
    different b (they are padded for the exchange). A single process returns (z, 0).
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return z, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    n = torch.tensor([z.shape[0]], device=z.device)
    sizes_t = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes_t, n)
    sizes = [int(s.item()) for s in sizes_t]
    padded = F.pad(z, (0, 0, 0, max(sizes) - z.shape[0]))  # [max_b, d]
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded.detach().contiguous())
    out[rank] = padded  # the local part, with its gradient
    parts = [o[:s] for o, s in zip(out, sizes, strict=True)]
    return torch.cat(parts), sum(sizes[:rank])


def nt_xent(z1: Tensor, z2: Tensor, temperature: float,
            gather: bool = True) -> tuple[Tensor, Tensor]:
    """NT-Xent loss of paired embeddings z1, z2 [b, d] (row i of each: two views of image i).

    With Z = the L2-normalized embeddings of both views over all ranks ([2n, d]), anchor i's
    loss is -log( exp(s(i, pos)/T) / sum_{k != i} exp(s(i, k)/T) ), s = cosine similarity; the
    mean over this rank's 2b anchors is returned, with the share of anchors whose partner is
    their most similar embedding (scalar, no gradient).
    """
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    b = z1.shape[0]
    if gather:
        a1, off = gather_with_grad(z1)  # [n, d]
        a2, _ = gather_with_grad(z2)
    else:
        a1, a2, off = z1, z2, 0
    n = a1.shape[0]
    cand = torch.cat([a1, a2])  # [2n, d]: candidates; view 1 at [0, n), view 2 at [n, 2n)
    anchors = torch.cat([z1, z2])  # [2b, d]
    logits = anchors @ cand.T / temperature  # [2b, 2n]
    local = torch.arange(b, device=z1.device) + off  # global row of each local image
    self_idx = torch.cat([local, local + n])  # [2b]: each anchor's own column
    pos_idx = torch.cat([local + n, local])  # [2b]: its partner's column
    rows = torch.arange(2 * b, device=z1.device)
    logits = logits.index_put((rows, self_idx), torch.tensor(float("-inf"), device=z1.device))
    loss = F.cross_entropy(logits, pos_idx)
    acc = (logits.detach().argmax(1) == pos_idx).float().mean()
    return loss, acc


def _check_backbone(model: nn.Module, name: str) -> None:
    if not hasattr(model, "forward_features") or not hasattr(model, "num_features"):
        raise ConfigError(
            f"method.name={name} needs a backbone with pooled features (forward_features and "
            f"num_features), which {type(model).__name__} lacks. Use model.name=cnn, resnet18 or "
            f"a vit_* model.")


class SimCLR(Method):
    """Contrastive pretraining of `model`'s features; see the module docstring."""

    def __init__(self, model: nn.Module, proj_hidden: int, proj_dim: int, temperature: float,
                 views: ViewSpec | None = None) -> None:
        super().__init__()
        self.model = model
        model.head.requires_grad_(False)  # unused here: keep it out of the optimizer and DDP
        self.projector = ProjectionHead(model.num_features, proj_hidden, proj_dim)
        self.temperature = temperature
        self.views = views or ViewSpec()

    def _loss(self, x: Tensor, generator: torch.Generator | None, gather: bool) -> dict:
        b = x.shape[0]
        v1, v2 = two_views(x, self.views, generator)  # 2 x [B, C, H, W]
        z = self.projector(self.model.forward_features(torch.cat([v1, v2])))  # [2B, proj_dim]
        loss, acc = nt_xent(z[:b], z[b:], self.temperature, gather=gather)
        return {"loss": loss, "contrast_acc": acc}

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Training: views from the global RNG, negatives from every rank."""
        return self._loss(batch[0], None, gather=True)

    @torch.no_grad()
    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        """NT-Xent on fixed views (seeded generator), negatives from this rank's batch only
        (evaluation batches may differ in size or be skipped per rank: no collectives)."""
        return self._loss(batch[0], torch.Generator().manual_seed(EVAL_SEED), gather=False)


SELF_SUPERVISED = ("mae", "simclr")  # the methods whose options `check_ssl_options` limits


def check_ssl_options(cfg: Config) -> None:
    """Options the self-supervised methods do not support, as ConfigError."""
    if cfg.train.ema_decay > 0:
        raise ConfigError(
            f"train.ema_decay={cfg.train.ema_decay} is not supported with "
            f"method.name={cfg.method.name}: the EMA copy would average the backbone but not the "
            f"{cfg.method.name} head, so its evaluation means nothing. Set train.ema_decay=0.")


@register_method("simclr")
def _simclr(cfg: Config, model: nn.Module) -> Method:
    m = cfg.method
    _check_backbone(model, "simclr")
    check_ssl_options(cfg)
    return SimCLR(model, m.proj_hidden, m.proj_dim, m.temperature)
