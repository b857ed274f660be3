"""SimCLR contrastive pretraining (Chen et al. 2020) for CNN and ViT backbones.

    images [B, C, H, W] -> two_views -> [2B, C, H, W]
      -> model.forward_features           [2B, F]
      -> projection head (Linear-BN-ReLU-Linear)  [2B, proj_dim], L2-normalized
      -> NT-Xent: each view must pick its partner among the other 2B_all - 1 embeddings

The two views of the sample at position p of the epoch come from `sample_uniform` of the batch's
keys, a function of (run.seed, epoch, p) only: ranks augment their own samples differently, a
sample's views do not depend on the number of ranks, and a resume draws them again. Evaluation
uses EVAL_SEED and epoch 0 with the validation position (= index): fixed views per image.

With torch.distributed initialized, the embeddings of every rank are gathered so the negatives
come from the whole global batch; the gather passes back to each rank the gradient of every
rank's loss with respect to its embeddings, so the averaged DDP gradient is the gradient of the
global batch's mean loss, as in one process. With `train.sync_bn=true` the projection head's
BatchNorm also takes its statistics over the global batch (SimCLR's "global BN"), so a run with
a BatchNorm-free backbone (ViT) equals a 1-process run at any world size. `method.model` is the
backbone (its classifier head is unused and frozen); the projection head is method state, saved
under the checkpoint's "method" entry.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from trainlab.config.schema import Config
from trainlab.data.keys import SampleKeys, contiguous_keys, sample_uniform
from trainlab.errors import ConfigError
from trainlab.methods.base import Batch, Method, batch_keys, register_method
from trainlab.methods.views import VIEW_COLUMNS, ViewSpec, two_views

EVAL_SEED = 0  # fixed views in evaluation: the val loss of every epoch sees the same pairs
VIEW_STREAM = 2  # `sample_uniform` stream of the two views' parameters


def _distributed() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) with a gradient: the backward pass sums the incoming gradients over
    ranks, so each rank gets the gradient of every rank's loss with respect to its input."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def sum_over_ranks(x: Tensor) -> Tensor:
    """Sum of x over ranks (same shape), differentiable (see `_SumOverRanks`)."""
    return _SumOverRanks.apply(x)


class CrossRankBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics span every rank's batch, on any device
    (nn.SyncBatchNorm needs an accelerator): [b, C] -> [b, C]. Gradients flow through the
    shared statistics to every rank. In one process, or in eval mode, it is BatchNorm1d."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        xf = x.float()
        count = torch.full((1,), float(x.shape[0]), device=x.device)
        sums = sum_over_ranks(torch.cat([xf.sum(0), count]))  # [C + 1]
        n = sums[-1]
        mean = sums[:-1] / n
        # two passes (not E[x^2] - mean^2, which cancels badly for features that barely vary)
        var = sum_over_ranks((xf - mean).pow(2).sum(0)) / n  # biased, as BatchNorm uses
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = (self.momentum if self.momentum is not None
                     else 1.0 / float(self.num_batches_tracked))
                self.running_mean.lerp_(mean, m)
                self.running_var.lerp_(var * n / (n - 1).clamp_min(1), m)  # unbiased
        out = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        return out.to(x.dtype)


class ProjectionHead(nn.Sequential):
    """Linear(in -> hidden) -> BatchNorm1d -> ReLU -> Linear(hidden -> out): [B, in] -> [B, out].

    sync_bn: the BatchNorm's statistics span every rank (`CrossRankBatchNorm1d`; same weights
    and checkpoint keys)."""

    def __init__(self, in_dim: int, hidden: int, out: int, sync_bn: bool = False) -> None:
        norm = CrossRankBatchNorm1d(hidden) if sync_bn else nn.BatchNorm1d(hidden)
        super().__init__(nn.Linear(in_dim, hidden), norm, nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


def gather_with_grad(z: Tensor) -> tuple[Tensor, int]:
    """Concatenate z [b, d] over ranks -> ([sum_r b_r, d], offset of this rank's rows).

    Differentiable across ranks: in the backward pass each rank receives, for its own rows, the
    sum over ranks of the gradients of the gathered tensor (one all-reduce of a zero-padded
    [world * max_b, d] block each way). Ranks may hold different b. A single process returns
    (z, 0).
    """
    if not _distributed():
        return z, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    n = torch.tensor([z.shape[0]], device=z.device)
    sizes_t = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes_t, n)
    sizes = [int(s.item()) for s in sizes_t]
    m = max(sizes)
    # this rank's rows in its own block of zeros: the sum over ranks is the concatenation
    block = F.pad(z, (0, 0, rank * m, (world - rank) * m - z.shape[0]))  # [world * m, d]
    total = sum_over_ranks(block)
    parts = [total[r * m:r * m + s] for r, s in enumerate(sizes)]
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
                 views: ViewSpec | None = None, sync_bn: bool = False) -> None:
        super().__init__()
        self.model = model
        model.head.requires_grad_(False)  # unused here: keep it out of the optimizer and DDP
        self.projector = ProjectionHead(model.num_features, proj_hidden, proj_dim, sync_bn)
        self.temperature = temperature
        self.views = views or ViewSpec()

    def make_views(self, x: Tensor, keys: SampleKeys | None) -> tuple[Tensor, Tensor]:
        """Two views of x [B, C, H, W] -> 2 x [B, C, H, W]: per sample from `keys`, or (None)
        from torch's global RNG."""
        u = None
        if keys is not None:
            if len(keys) != x.shape[0]:
                raise ValueError(f"{len(keys)} sample keys for a batch of {x.shape[0]} images")
            u = sample_uniform(keys, 2 * len(VIEW_COLUMNS), VIEW_STREAM)  # [B, 14]
        return two_views(x, self.views, uniform=u)

    def _loss(self, x: Tensor, keys: SampleKeys | None, gather: bool) -> dict:
        b = x.shape[0]
        v1, v2 = self.make_views(x, keys)  # 2 x [B, C, H, W]
        z = self.projector(self.model.forward_features(torch.cat([v1, v2])))  # [2B, proj_dim]
        loss, acc = nt_xent(z[:b], z[b:], self.temperature, gather=gather)
        return {"loss": loss, "contrast_acc": acc}

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Training: views per sample from the batch's keys (a bare (images, labels) batch:
        from torch's global RNG), negatives from every rank."""
        return self._loss(batch[0], batch_keys(batch), gather=True)

    @torch.no_grad()
    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        """NT-Xent on fixed views per image (EVAL_SEED, epoch 0, the positions; 0..B-1 for a
        bare batch), negatives from this rank's batch only (evaluation batches may differ in
        size or be skipped per rank: no collectives)."""
        keys = batch_keys(batch)
        b = batch[0].shape[0]
        keys = contiguous_keys(EVAL_SEED, 0, 0, b) if keys is None else keys.with_seed(EVAL_SEED)
        return self._loss(batch[0], keys, gather=False)


SELF_SUPERVISED = ("mae", "simclr", "dino")  # the methods whose options `check_ssl_options` limits


def check_ssl_options(cfg: Config) -> None:
    """Options the self-supervised methods do not support, as ConfigError."""
    if cfg.train.ema_decay > 0:
        raise ConfigError(
            f"train.ema_decay={cfg.train.ema_decay} is not supported with "
            f"method.name={cfg.method.name}: the EMA copy would average the backbone but not the "
            f"{cfg.method.name} head, so its evaluation means nothing. Set train.ema_decay=0.")
    if cfg.train.tta != "none":
        raise ConfigError(
            f"train.tta={cfg.train.tta} changes how a classifier is evaluated, but method.name="
            f"{cfg.method.name} pretrains without labels. Set train.tta=none, and use it with "
            f"the linear_probe or finetune run that follows.")


@register_method("simclr")
def _simclr(cfg: Config, model: nn.Module) -> Method:
    m = cfg.method
    _check_backbone(model, "simclr")
    check_ssl_options(cfg)
    return SimCLR(model, m.proj_hidden, m.proj_dim, m.temperature, sync_bn=cfg.train.sync_bn)
