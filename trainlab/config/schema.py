"""Typed config schema: one frozen dataclass per component, grouped in `Config`.

Every field here is a config key (`section.field`); its type is what overrides are parsed into,
and its default is what `trainlab train` with no arguments uses. `None` means "derived from the
data or model" (the derived value is computed in one place and logged, never written back).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunConfig:
    dir: str | None = None  # output folder; None -> runs/<recipe>-<timestamp>
    seed: int = 0
    resume: str | None = None  # checkpoint file, run dir, or "auto" (latest in run.dir, if any)
    overwrite: bool = False  # start over in a run.dir that holds a run (deletes its results)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    log_every: int = 50  # optimizer steps between train-metric records
    progress: bool = True  # console progress bar (only drawn when stderr is a terminal)
    tensorboard: bool = True
    max_requeues: int = 3  # Slurm: times a run requeues itself on USR1/SIGTERM; 0 -> never
    dist_timeout_s: float = 60.0  # a rank that fails or stops responding ends the others


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"  # digits | fashion-mnist | mnist | cifar10 | cifar100 | folder | npz
    root: str | None = None  # data folder; None -> the data set's usual place
    val_fraction: float = 0.1  # of the training split, stratified, fixed seed
    test_fraction: float = 0.2  # only for data sets without an official test split (digits)
    split_seed: int = 0  # seed of the val/test carve-out (independent of run.seed)
    augment: bool = True  # master switch for training augmentation
    crop_padding: int | None = None  # random crop after zero padding, pixels; None -> data default
    flip: bool | None = None  # random horizontal flip; None -> data default (off for digits)
    rotate_deg: float | None = None  # uniform rotation in [-deg, deg]; None -> data default
    brightness: float | None = None  # factor uniform in [1-b, 1+b]; None -> data default
    contrast: float | None = None  # factor uniform in [1-c, 1+c]; None -> data default
    labels_fraction: float = 1.0  # class-balanced share of the training labels used (e.g. 0.01)
    # formats and conversion at load
    download: bool = False  # fetch the official archives (checksummed) when files are missing
    coarse_labels: bool = False  # cifar100: the 20 superclasses instead of the 100 classes
    image_size: int | None = None  # resize every image to image_size x image_size at load
    channels: int | None = None  # 1 or 3: convert grey <-> RGB at load; None -> as stored
    skip_bad_files: bool = False  # folder: skip and count unreadable images instead of failing
    cache_dir: str | None = None  # decoded-image cache; None -> $XDG_CACHE_HOME/trainlab
    # loading path
    in_memory: bool | None = None  # None -> in memory when the decoded set fits in_memory_max_gb
    in_memory_max_gb: float = 4.0
    num_workers: int | None = None  # DataLoader workers; None -> the CPUs this process may use
    # file-backed pipeline only (torchvision.transforms.v2)
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop
    auto_augment: str = "none"  # none | randaugment | trivialaugment
    random_erasing: float = 0.0  # probability of RandomErasing per image
    # batch level, both paths: soft labels
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixing weight; 0 -> off
    cutmix_alpha: float = 0.0  # Beta(alpha, alpha) box area; 0 -> off
    mix_prob: float = 1.0  # probability that a batch is mixed at all
    mix_switch_prob: float = 0.5  # with both on: probability of cutmix instead of mixup


@dataclass(frozen=True)
class ModelConfig:
    name: str = "cnn"  # see `trainlab models`
    init: str | None = None  # pretrained encoder: a checkpoint .pt or a run dir
    hidden: list[int] = field(default_factory=lambda: [512, 256])  # mlp hidden sizes
    widths: list[int] | None = None  # cnn stage widths; None -> model default
    stem_stride: int = 1  # cnn stem conv stride: 1 | 2 (2 -> stages start at half size)
    dropout: float = 0.0  # before the classifier (and between mlp layers)
    image_size: int | None = None  # None -> the data's image size
    patch_size: int = 4  # vit patch side, pixels; must divide the image size
    depth: int | None = None  # vit blocks; None -> variant default
    dim: int | None = None  # vit token width; None -> variant default
    heads: int | None = None  # vit attention heads; None -> variant default
    mlp_ratio: float = 4.0  # vit MLP hidden = mlp_ratio * dim
    pool: str = "cls"  # vit classification token: cls | mean
    drop_path: float = 0.0  # vit stochastic depth rate (max, linear over depth)


@dataclass(frozen=True)
class MethodConfig:
    name: str = "supervised"  # supervised | mae | simclr | linear_probe | finetune
    # mae: masked autoencoder (ViT backbones)
    mask_ratio: float = 0.75  # share of patches removed per image, in (0, 1)
    decoder_depth: int = 4
    decoder_dim: int = 128
    decoder_heads: int = 4
    norm_pix_loss: bool = True  # targets: per-patch normalized pixels
    # simclr: contrastive (CNN and ViT backbones)
    temperature: float = 0.2  # NT-Xent temperature
    proj_dim: int = 128  # projection head output
    proj_hidden: int = 512  # projection head hidden width
    # kNN monitor / `trainlab knn`
    knn_k: int = 20
    knn_temperature: float = 0.07
    knn_every: int = 0  # epochs between online kNN accuracy checks during pretraining; 0 -> off


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adamw"  # sgd | adam | adamw
    lr: float = 2e-3  # peak learning rate (after warmup), for the effective batch
    weight_decay: float = 0.05  # on conv/linear weights only
    momentum: float = 0.9  # sgd momentum
    nesterov: bool = False  # sgd only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam/adamw
    eps: float = 1e-8
    layer_decay: float = 1.0  # ViT layer-wise lr decay (finetune); 1 -> off


@dataclass(frozen=True)
class SchedConfig:
    name: str = "cosine"  # cosine | constant | step
    warmup_epochs: float = 1.0  # linear warmup from warmup_start_factor*lr, fractions allowed
    warmup_start_factor: float = 0.0
    min_lr_factor: float = 0.0  # cosine ends at min_lr_factor * lr
    # step: where lr *= gamma; values < 1 are fractions of training, values >= 1 are epochs
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = 0.1  # step: lr multiplier at each milestone


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    batch_size: int = 64  # images per forward pass (all processes together)
    accum_steps: int = 1  # forward passes per optimizer step; effective batch = batch_size*accum
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max global grad norm; 0 -> off
    eval_batch_size: int = 512
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 adds a GradScaler)
    channels_last: bool = False  # NHWC memory format for CNNs (faster convs on GPUs)
    compile: bool = False  # torch.compile the training forward; checkpoints keep plain keys
    ema_decay: float = 0.0  # EMA of the weights, evaluated and saved beside them; 0 -> off
    sync_bn: bool = False  # SyncBatchNorm across processes (distributed runs)
    tf32: bool = False  # allow TF32 matmuls/convolutions on NVIDIA GPUs (faster, ~1e-3 rel.)


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "method": MethodConfig,
    "optim": OptimConfig,
    "sched": SchedConfig,
    "train": TrainConfig,
}
