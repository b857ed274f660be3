"""DINO self-distillation with no labels (Caron et al. 2021) for ViT backbones.

    images [B, C, H, W] -> 2 global crops [2B, C, H, W] + L local crops [LB, C, s, s]
      teacher (EMA of the student, no gradients): global crops only
        -> ViT features [2B, D] -> DINOHead [2B, K] -> centre, sharpen: softmax((t - c) / T_t)
      student: every crop (local crops with the position embedding resized to their grid)
        -> ViT features [(2+L)B, D] -> DINOHead [(2+L)B, K] -> log_softmax(s / T_s)
      loss: cross-entropy of each teacher global crop against every *other* student crop,
            averaged over the 2(2+L) - 2 pairs

DINOHead: MLP (D -> hidden -> hidden -> bottleneck, GELU; BatchNorm after the hidden layers
with method.head_bn), L2-normalization, then a weight-normalized linear layer to K =
method.out_dim prototypes (each prototype's weight vector has norm 1, no bias; DINO's
`norm_last_layer=True`). The BatchNorm matters on small images: a small randomly initialized
ViT maps every image to nearly the same features (cosine ~0.99 between digits), and without it
the teacher's targets lose all dependence on the image within an epoch or two (both heads then
output one distribution for every image, uniform or peaked).

After every optimizer step (`end_step`) the teacher (backbone and head) moves toward the
student: teacher = m * teacher + (1 - m) * student, with m cosine from method.teacher_momentum
at step 0 to 1 at the last step. The teacher temperature warms up linearly from
method.warmup_teacher_temp to method.teacher_temp over method.warmup_teacher_temp_epochs
(`begin_step`). Both are pure functions of the optimizer step the trainer passes in. The centre
c [1, K] is an EMA (method.center_momentum) of the teacher outputs' batch mean over all ranks,
updated after each training forward pass; it is a buffer of the method, checkpointed.

Crops are drawn per sample: the crops of the sample at position p of the epoch come from
`sample_uniform` of the batch's keys, a function of (run.seed, epoch, p) only (as SimCLR's
views): ranks crop their own samples differently, a sample's crops do not depend on the number
of ranks, and a resume draws them again. Evaluation uses EVAL_SEED and epoch 0, the final
teacher temperature, and leaves the centre alone.

DINO evaluates the teacher, so `method.model` IS the teacher's backbone (a plain ViT
classifier whose head is unused): the checkpoint's "model" entry is the teacher, which
`model.init`, `trainlab knn`, the kNN monitor and the attention maps read. The student, both
heads and the centre are method state (the checkpoint's "method" entry): a resume restores
them all.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from trainlab.config.schema import Config
from trainlab.data.keys import SampleKeys, contiguous_keys, sample_uniform
from trainlab.errors import ConfigError
from trainlab.methods.base import Batch, Method, batch_keys, register_method
from trainlab.methods.simclr import CrossRankBatchNorm1d, check_ssl_options
from trainlab.methods.views import VIEW_COLUMNS, ViewSpec, apply_view, view_params
from trainlab.models.vit import VisionTransformer

EVAL_SEED = 0  # fixed crops in evaluation: the val loss of every epoch sees the same crops
VIEW_STREAM = 3  # `sample_uniform` stream of the crops' parameters (MAE 1, SimCLR 2)


def teacher_momentum_at(step: int, total_steps: int, base: float) -> float:
    """EMA momentum after optimizer step `step` (0-based): cosine from `base` at step 0 to 1 at
    `total_steps`, 1 - (1 - base) * (1 + cos(pi * step / total_steps)) / 2 (DINO's)."""
    t = min(1.0, step / max(1, total_steps))
    return 1.0 - (1.0 - base) * 0.5 * (1.0 + math.cos(math.pi * t))


def teacher_temp_at(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Teacher temperature at optimizer step `step`: linear from `start` (step 0) to `end`
    (step `warmup_steps`), then `end`."""
    if step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


def default_local_size(image_hw: tuple[int, int], patch: int) -> int:
    """Local crop side, pixels: about 3/7 of the shorter image side (DINO: 96 of 224), rounded
    to a multiple of the patch size, at least one patch."""
    return max(patch, round(min(image_hw) * 3 / 7 / patch) * patch)


def dino_loss(student_out: Tensor, teacher_out: Tensor, center: Tensor, student_temp: float,
              teacher_temp: float | Tensor, n_crops: int) -> tuple[Tensor, Tensor]:
    """DINO's loss: student_out [n_crops * B, K] (crop-major: every image's crop 0, then crop
    1...; crops 0 and 1 are the global ones), teacher_out [2B, K] (the two global crops),
    center [1, K].

    Teacher targets q = softmax((teacher_out - center) / teacher_temp) (centring, then
    sharpening); each pair (teacher crop i, student crop v != i) contributes the cross-entropy
    sum_k -q_k log softmax(student_out / student_temp)_k, averaged over the batch; the loss is
    the mean over the pairs. Returns (loss, teacher probabilities q [2B, K], no gradient).
    """
    logp = F.log_softmax(student_out.float() / student_temp, dim=-1).chunk(n_crops)
    q = F.softmax((teacher_out.float() - center) / teacher_temp, dim=-1).detach()
    total, pairs = student_out.new_zeros((), dtype=torch.float32), 0
    for i, qi in enumerate(q.chunk(2)):
        for v, lp in enumerate(logp):
            if v != i:
                total = total + (-qi * lp).sum(dim=-1).mean()
                pairs += 1
    return total / pairs, q


class DINOHead(nn.Module):
    """MLP -> L2-normalize -> weight-normalized linear: [B, in_dim] -> [B, out_dim].

    bn: BatchNorm1d after each hidden Linear (DINO's `use_bn_in_head`; `CrossRankBatchNorm1d`
    over every rank's batch with sync_bn)."""

    def __init__(self, in_dim: int, hidden: int, bottleneck: int, out_dim: int,
                 bn: bool = False, sync_bn: bool = False) -> None:
        super().__init__()

        def norm() -> list[nn.Module]:
            if not bn:
                return []
            return [CrossRankBatchNorm1d(hidden) if sync_bn else nn.BatchNorm1d(hidden)]

        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), *norm(), nn.GELU(),
                                 nn.Linear(hidden, hidden), *norm(), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        # prototypes [out_dim, bottleneck]: only their directions count (normalized in forward)
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, in_dim] -> scores [B, out_dim], each the cosine of x's bottleneck embedding
        with one prototype."""
        z = F.normalize(self.mlp(x), dim=-1)  # [B, bottleneck]
        return z @ F.normalize(self.prototypes, dim=-1).T


def vit_features(vit: VisionTransformer, x: Tensor) -> Tensor:
    """Pooled ViT features of x [B, C, h, w] -> [B, D] at any size whose sides are multiples of
    the patch size: the patch position embedding is resized (bicubic) to the crop's patch grid,
    as DINO does for its small local crops. The ViT's own size takes its usual path."""
    if tuple(x.shape[-2:]) == tuple(vit.patch_embed.image_hw):
        return vit.forward_features(x)
    p, (gh, gw) = vit.patch_embed.patch_size, vit.patch_embed.grid
    tokens = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)  # [B, n, D], n = (h/p)(w/p)
    d = tokens.shape[-1]
    pos = vit.pos_embed[:, 1:].reshape(1, gh, gw, d).permute(0, 3, 1, 2)  # [1, D, gh, gw]
    pos = F.interpolate(pos, size=(x.shape[-2] // p, x.shape[-1] // p), mode="bicubic",
                        align_corners=False)
    pos = pos.permute(0, 2, 3, 1).reshape(1, -1, d)  # [1, n, D]
    out = vit.apply_blocks(vit.prepend_cls(tokens + pos))  # [B, 1+n, D]
    return out[:, 0] if vit.pool == "cls" else out[:, 1:].mean(dim=1)


def _distributed() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


class DINO(Method):
    """Self-distillation of a ViT; see the module docstring. `model` becomes the teacher."""

    def __init__(self, model: VisionTransformer, cfg: Config) -> None:
        super().__init__()
        m = cfg.method
        # the student first: it is the ViT that trains (and the one `optim.layer_decay` finds)
        self.student = copy.deepcopy(model)
        self.student.head.requires_grad_(False)  # unused here: out of the optimizer and DDP
        self.model = model.requires_grad_(False)  # the teacher: EMA of the student only
        d = model.num_features
        self.student_head = DINOHead(d, m.proj_hidden, m.proj_dim, m.out_dim, m.head_bn,
                                     cfg.train.sync_bn)
        self.teacher_head = copy.deepcopy(self.student_head).requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, m.out_dim))  # checkpointed
        # teacher temperature of the current step (a tensor: no recompiles as it changes)
        self.register_buffer("teacher_temp_now", torch.tensor(float(m.warmup_teacher_temp)
                                                              if m.warmup_teacher_temp_epochs > 0
                                                              else float(m.teacher_temp)),
                             persistent=False)
        self.student_temp, self.teacher_temp = m.student_temp, m.teacher_temp
        self.warmup_temp, self.warmup_epochs = m.warmup_teacher_temp, m.warmup_teacher_temp_epochs
        self.center_momentum, self.teacher_momentum = m.center_momentum, m.teacher_momentum
        self.local_crops = m.local_crops
        pe = model.patch_embed
        self.global_hw = tuple(pe.image_hw)
        size = m.local_crop_size or default_local_size(self.global_hw, pe.patch_size)
        self.local_hw = (size, size)
        self.global_views = ViewSpec(scale=tuple(m.global_crop_scale))
        self.local_views = ViewSpec(scale=tuple(m.local_crop_scale))

    @property
    def n_crops(self) -> int:
        return 2 + self.local_crops

    def train(self, mode: bool = True) -> DINO:
        """Both heads follow `mode` (in training the teacher head's BatchNorm, if any, uses
        batch statistics, as DINO's teacher does); the teacher backbone always stays in eval
        mode (no dropout or drop-path)."""
        super().train(mode)
        self.model.eval()
        return self

    # ------------------------------------------------------------------ step hooks
    def begin_step(self, step: int, steps_per_epoch: int, total_steps: int) -> None:
        """Set the teacher temperature of optimizer step `step` (warmup in epochs)."""
        warmup = round(self.warmup_epochs * steps_per_epoch)
        self.teacher_temp_now.fill_(teacher_temp_at(step, warmup, self.warmup_temp,
                                                    self.teacher_temp))

    @torch.no_grad()
    def end_step(self, step: int, steps_per_epoch: int, total_steps: int) -> None:
        """Teacher EMA after optimizer step `step`: t = m t + (1 - m) s, m from
        `teacher_momentum_at` (backbone and head)."""
        m = teacher_momentum_at(step, total_steps, self.teacher_momentum)
        teacher = [*self.model.parameters(), *self.teacher_head.parameters()]
        student = [*self.student.parameters(), *self.student_head.parameters()]
        torch._foreach_mul_(teacher, m)
        torch._foreach_add_(teacher, [p.detach() for p in student], alpha=1.0 - m)

    # ------------------------------------------------------------------ crops and passes
    def make_crops(self, x: Tensor, keys: SampleKeys | None) -> tuple[Tensor, Tensor | None]:
        """x [B, C, H, W] -> (global crops [2B, C, H, W], local crops [LB, C, s, s] or None),
        crop-major. Per sample from `keys`, or (None) from torch's global RNG."""
        n, b = len(VIEW_COLUMNS), x.shape[0]
        if keys is None:
            u = torch.rand(b, self.n_crops * n, device=x.device)
        else:
            if len(keys) != b:
                raise ValueError(f"{len(keys)} sample keys for a batch of {b} images")
            u = sample_uniform(keys, self.n_crops * n, VIEW_STREAM).to(x.device)  # [B, V*7]

        def crop(i: int, spec: ViewSpec, hw: tuple[int, int]) -> Tensor:
            return apply_view(x, view_params(spec, u[:, i * n:(i + 1) * n]), hw)

        glob = torch.cat([crop(i, self.global_views, self.global_hw) for i in range(2)])
        if self.local_crops == 0:
            return glob, None
        local = torch.cat([crop(i, self.local_views, self.local_hw)
                           for i in range(2, self.n_crops)])
        return glob, local

    def student_out(self, glob: Tensor, local: Tensor | None) -> Tensor:
        """Student scores of every crop: [(2+L)B, K], crop-major."""
        feats = [vit_features(self.student, glob)]
        if local is not None:
            feats.append(vit_features(self.student, local))
        return self.student_head(torch.cat(feats))

    @torch.no_grad()
    def teacher_out(self, glob: Tensor) -> Tensor:
        """Teacher scores of the global crops: [2B, K] float32, no gradient."""
        return self.teacher_head(vit_features(self.model, glob)).float()

    @torch.no_grad()
    def update_center(self, teacher_out: Tensor) -> None:
        """center = m * center + (1 - m) * mean of teacher_out [n, K] over every rank's rows."""
        total = torch.cat([teacher_out.float().sum(0),
                           teacher_out.new_full((1,), teacher_out.shape[0], dtype=torch.float32)])
        if _distributed():
            dist.all_reduce(total)
        mean = (total[:-1] / total[-1]).unsqueeze(0)  # [1, K]
        self.center.mul_(self.center_momentum).add_(mean, alpha=1.0 - self.center_momentum)

    def _run(self, x: Tensor, keys: SampleKeys | None,
             teacher_temp: float | Tensor) -> tuple[dict[str, Tensor], Tensor]:
        glob, local = self.make_crops(x, keys)
        t = self.teacher_out(glob)  # [2B, K]
        s = self.student_out(glob, local)  # [VB, K]
        loss, q = dino_loss(s, t, self.center, self.student_temp, teacher_temp, self.n_crops)
        with torch.no_grad():
            entropy = -(q * q.clamp_min(1e-12).log()).sum(-1).mean()
            mean_q = q.mean(0)  # [K]: how the batch spreads over the prototypes
            batch_entropy = -(mean_q * mean_q.clamp_min(1e-12).log()).sum()
            t_top = q.argmax(-1).chunk(2)
            s_top = s.detach()[:2 * x.shape[0]].argmax(-1).chunk(2)
            agree = ((t_top[0] == s_top[1]).float().mean()
                     + (t_top[1] == s_top[0]).float().mean()) / 2
        return {"loss": loss, "teacher_entropy": entropy, "batch_entropy": batch_entropy,
                "agreement": agree}, t

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Training: crops per sample from the batch's keys (a bare batch: torch's global RNG),
        the current step's teacher temperature; then the centre moves. Metrics (nats): the mean
        entropy of the teacher's targets `teacher_entropy` (log(out_dim): collapsed to uniform)
        and the entropy of their batch mean `batch_entropy` (0: collapsed to one prototype);
        `agreement`, the share of images whose student picks the teacher's prototype of the
        other global crop."""
        out, t = self._run(batch[0], batch_keys(batch), self.teacher_temp_now)
        self.update_center(t)
        return out

    @torch.no_grad()
    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        """The loss on fixed crops per image (EVAL_SEED, epoch 0, the positions; 0..B-1 for a
        bare batch) at the final teacher temperature; the centre is left alone."""
        keys, b = batch_keys(batch), batch[0].shape[0]
        keys = contiguous_keys(EVAL_SEED, 0, 0, b) if keys is None else keys.with_seed(EVAL_SEED)
        return self._run(batch[0], keys, self.teacher_temp)[0]


def check_dino(cfg: Config, model: nn.Module) -> None:
    """ConfigError for a backbone or method.* values DINO cannot use with this model."""
    if not isinstance(model, VisionTransformer):
        raise ConfigError(
            f"method.name=dino needs a Vision Transformer backbone (the student reads the small "
            f"local crops with a resized position embedding), but model.name="
            f"{cfg.model.name} is a {type(model).__name__}. Use model.name=vit_tiny (or "
            f"vit_small / vit_base), or method.name=simclr for CNNs.")
    size, p = cfg.method.local_crop_size, model.patch_embed.patch_size
    side = min(model.patch_embed.image_hw)
    if size is not None and (size % p or size > side):
        fits = [s for s in range(p, side + 1, p)]
        raise ConfigError(
            f"method.local_crop_size={size} must be a multiple of model.patch_size={p} no larger "
            f"than the image side {side}; valid sizes: {', '.join(map(str, fits))} (or null: "
            f"{default_local_size(model.patch_embed.image_hw, p)} here).")


@register_method("dino")
def _dino(cfg: Config, model: nn.Module) -> Method:
    check_dino(cfg, model)
    check_ssl_options(cfg)
    return DINO(model, cfg)
