"""Typed config schema: one frozen dataclass per component, grouped in `Config`.

Every field here is a config key (`section.field`); its type is what overrides are parsed into,
its default is what `trainlab train` with no arguments uses (methods other than supervised
fill some keys left unset from their own defaults: `trainlab.config.method_defaults`), and its
rule (`trainlab.config.rules`: range, choices or pattern, with a suggestion) is the one place
its allowed values are stated; `trainlab.config.validate` checks them. `None` means "derived
from the data or model" (the derived value is computed in one place and logged, never written
back) and is always allowed where the type is optional. No float key takes nan or inf: each
has a finite meaning (0 is the "off" value where there is one; "no limit" has its own switch,
e.g. data.in_memory=true).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainlab.config.rules import INT64_MAX, choices, free, key, pattern, rng

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "constant", "step")
PRECISIONS = ("fp32", "bf16", "fp16")
POOLS = ("cls", "mean")
AUTO_AUGMENTS = ("none", "randaugment", "trivialaugment")
NORMS = ("batch", "layer", "group", "none")
NORMALIZES = ("channel", "none")
LOSSES = ("cross_entropy", "mse")
TTAS = ("none", "flip")  # train.tta: test-time augmentation at evaluation

_SWITCH = "a switch: true and false are both valid"
_PATH = "a path, checked when it is used"
_SEED = "any integer from 0 to 2**63-1 (seeds are 64-bit), e.g. 0"
_PROB = "it is a probability"
_JITTER = "0 turns it off, 0.2 is usual"


@dataclass(frozen=True)
class RunConfig:
    dir: str | None = key(None, free(_PATH))  # output folder; None -> runs/<recipe>-<timestamp>
    seed: int = key(0, rng(0, INT64_MAX, hint=_SEED))
    # checkpoint file, run dir, or "auto" (latest in run.dir, if any)
    resume: str | None = key(None, free("a checkpoint, run folder or auto, checked at start"))
    overwrite: bool = key(False, free(_SWITCH))  # start over in a run.dir holding a run
    device: str = key("auto", pattern(r"auto|cpu|mps|cuda(:[0-9]+)?",
                                      "auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps",
                                      "auto picks cuda, then mps, then cpu"))
    log_every: int = key(50, rng(1, hint="optimizer steps between train records, e.g. 50"))
    progress: bool = key(True, free(_SWITCH))  # progress bar (only drawn when stderr is a tty)
    tensorboard: bool = key(True, free(_SWITCH))
    report: bool = key(True, free(_SWITCH))  # write report.html at the end of training
    # Slurm: times a run requeues itself on USR1/SIGTERM; 0 -> never
    max_requeues: int = key(3, rng(0, hint="0 never requeues"))
    # a rank that fails or stops responding ends the others
    dist_timeout_s: float = key(60.0, rng(0, lo_open=True, hint="seconds, e.g. 60"))
    # intra-op CPU threads; None -> the CPUs this process may use, divided among the ranks on
    # this node, local sweep points and other trainlab runs on the same CPUs
    threads: int | None = key(None, rng(1, hint="e.g. 2; leave unset to share the CPUs"))


@dataclass(frozen=True)
class DataConfig:
    # digits | fashion-mnist | mnist | cifar10 | cifar100 | folder | npz (checked by the registry)
    name: str = key("digits", free("a data set name, checked against the registered data sets"))
    root: str | None = key(None, free(_PATH))  # data folder; None -> the data set's usual place
    val_fraction: float = key(0.1, rng(0, 1, hi_open=True,  # of the training split, stratified
                                       hint="0 means no validation split, 0.1 is usual"))
    # only for data sets without an official test split (digits)
    test_fraction: float = key(0.2, rng(0, 1, lo_open=True, hi_open=True, hint="e.g. 0.2"))
    split_seed: int = key(0, rng(0, INT64_MAX, hint=_SEED))  # val/test carve-out (not run.seed)
    augment: bool = key(True, free(_SWITCH))  # master switch for training augmentation
    # random crop after zero padding, pixels; None -> data default
    crop_padding: int | None = key(None, rng(0, hint="0 turns it off; null = data default"))
    flip: bool | None = key(None, free(_SWITCH))  # random horizontal flip; None -> data default
    # uniform rotation in [-deg, deg]; None -> data default
    rotate_deg: float | None = key(None, rng(0, 180, hint="degrees; 0 turns it off"))
    # factor uniform in [1-b, 1+b]; None -> data default
    brightness: float | None = key(None, rng(0, 1, hi_open=True, hint=_JITTER))
    # factor uniform in [1-c, 1+c]; None -> data default
    contrast: float | None = key(None, rng(0, 1, hi_open=True, hint=_JITTER))
    # RGB only: saturation factor uniform in [1-s, 1+s]; None -> data default (0 = off)
    saturation: float | None = key(None, rng(0, 1, hi_open=True, hint=_JITTER + " (RGB only)"))
    # RGB only: hue shift uniform in [-h, h] turns of the colour wheel; None -> data default
    hue: float | None = key(None, rng(0, 0.5, hint="0 turns it off, 0.05 is usual (RGB only)"))
    # input normalization: per-channel mean/std of the training split, or raw [0, 1] pixels
    normalize: str = key("channel", choices(*NORMALIZES,
                                            hint="none feeds raw [0, 1] pixels"))
    # class-balanced share of the training labels used (e.g. 0.01)
    labels_fraction: float = key(1.0, rng(0, 1, lo_open=True,
                                          hint="1 uses every label, 0.01 keeps 1% per class"))
    # formats and conversion at load
    download: bool = key(False, free(_SWITCH))  # fetch the official archives when missing
    # cifar100: the 20 superclasses instead of the 100 classes (only with data.name=cifar100)
    coarse_labels: bool = key(False, free(_SWITCH))
    # resize every image to image_size x image_size at load
    image_size: int | None = key(None, rng(1, hint="pixels, e.g. 32; null keeps the stored size"))
    # convert grey <-> RGB at load; None -> as stored
    channels: int | None = key(None, choices(1, 3, hint="1 is grey, 3 is RGB, null keeps them"))
    skip_bad_files: bool = key(False, free(_SWITCH))  # folder: skip and count unreadable images
    cache_dir: str | None = key(None, free(_PATH))  # decoded-image cache; None -> XDG cache
    # loading path
    in_memory: bool | None = key(None, free(_SWITCH))  # None -> by in_memory_max_gb
    in_memory_max_gb: float = key(4.0, rng(0, hint="GB of decoded images; 0 keeps files on disk"))
    # DataLoader workers; None -> the CPUs this process may use
    num_workers: int | None = key(None, rng(0, hint="0 loads in the training process"))
    # file-backed pipeline only (torchvision.transforms.v2)
    crop_scale: list[float] = key([0.08, 1.0], rng(  # RandomResizedCrop area [min, max]
        0, 1, lo_open=True, length=(2, 2), ascending=True,
        hint="two area fractions [min, max] with 0 < min <= max <= 1, e.g. [0.08, 1.0]"))
    auto_augment: str = key("none", choices(*AUTO_AUGMENTS, hint="none turns it off"))
    random_erasing: float = key(0.0, rng(0, 1, hint=_PROB + " per image; 0 turns it off"))
    # batch level, both paths: soft labels
    mixup_alpha: float = key(0.0, rng(0, hint="Beta(alpha, alpha); 0 turns it off, 0.2 is usual"))
    cutmix_alpha: float = key(0.0, rng(0, hint="Beta(alpha, alpha); 0 turns it off, 1 is usual"))
    mix_prob: float = key(1.0, rng(0, 1, hint=_PROB + " that a batch is mixed"))
    # with both on: probability of cutmix instead of mixup
    mix_switch_prob: float = key(0.5, rng(0, 1, hint=_PROB + " of CutMix over Mixup"))


@dataclass(frozen=True)
class ModelConfig:
    name: str = key("cnn", free("a model name, checked against `trainlab models`"))
    init: str | None = key(None, free(_PATH))  # pretrained encoder: checkpoint .pt or run dir
    hidden: list[int] = key([512, 256], rng(  # mlp hidden sizes ([] = a linear classifier)
        1, hint="each a positive layer width, e.g. model.hidden=[512,256]"))
    widths: list[int] | None = key(None, rng(  # cnn stage widths; None -> model default
        1, length=(1, None), hint="at least one positive stage width, e.g. [32,64,128]"))
    # cnn stem conv stride (2 -> stages start at half size)
    stem_stride: int = key(1, choices(1, 2, hint="2 starts the stages at half size"))
    # normalization layers; auto -> the model's own (cnn/resnet batch, mlp none, vit layer).
    # Not null: "none" is a value here, and a null-able key would read `none` as null.
    norm: str = key("auto", choices("auto", *NORMS, hint="auto keeps the model's own"))
    # before the classifier (and between mlp layers)
    dropout: float = key(0.0, rng(0, 1, hi_open=True, hint="0 turns it off, 0.1 is usual"))
    image_size: int | None = key(None, rng(1, hint="pixels; null = the data's image size"))
    # vit patch side, pixels; must divide the image size
    patch_size: int = key(4, rng(1, hint="pixels, a divisor of the image size, e.g. 4"))
    depth: int | None = key(None, rng(1, hint="vit blocks; null = the variant's"))
    dim: int | None = key(None, rng(1, hint="vit token width; null = the variant's"))
    heads: int | None = key(None, rng(1, hint="vit attention heads; null = the variant's"))
    # vit MLP hidden = mlp_ratio * dim
    mlp_ratio: float = key(4.0, rng(0, lo_open=True, hint="4 is usual"))
    pool: str = key("cls", choices(*POOLS, hint="the cls token or the mean of patch tokens"))
    # vit stochastic depth rate (max, linear over depth)
    drop_path: float = key(0.0, rng(0, 1, hi_open=True, hint="0 turns it off, 0.1 is usual"))


@dataclass(frozen=True)
class MethodConfig:
    # supervised | mae | simclr | dino | linear_probe | finetune (checked by the registry)
    name: str = key("supervised", free("a method name, checked against the registered methods"))
    # mae: masked autoencoder (ViT backbones); share of patches removed per image
    mask_ratio: float = key(0.75, rng(0, 1, lo_open=True, hi_open=True, hint="MAE uses 0.75"))
    decoder_depth: int = key(4, rng(1, hint="decoder blocks, e.g. 4"))
    decoder_dim: int = key(128, rng(1, hint="decoder token width, e.g. 128"))
    decoder_heads: int = key(4, rng(1, hint="a divisor of method.decoder_dim, e.g. 4"))
    norm_pix_loss: bool = key(True, free(_SWITCH))  # targets: per-patch normalized pixels
    # simclr: contrastive (CNN and ViT backbones); NT-Xent temperature
    temperature: float = key(0.2, rng(0, lo_open=True, hint="SimCLR uses 0.1 to 0.5"))
    proj_dim: int = key(128, rng(1, hint="projection output width, e.g. 128"))
    proj_hidden: int = key(512, rng(1, hint="projection hidden width, e.g. 512"))
    # dino: self-distillation (ViT backbones); proj_hidden / proj_dim are its head's hidden and
    # bottleneck widths. Width of the prototype layer (softmax over out_dim scores)
    out_dim: int = key(1024, rng(1, hint="prototypes, e.g. 1024 on small data (DINO: 65536)"))
    # teacher softmax temperature after the warmup, and where the warmup starts
    teacher_temp: float = key(0.04, rng(0, lo_open=True, hint="DINO uses 0.04 to 0.07"))
    warmup_teacher_temp: float = key(0.04, rng(0, lo_open=True, hint="DINO uses 0.04"))
    # linear warmup of the teacher temperature, epochs (fractions allowed); 0 -> off
    warmup_teacher_temp_epochs: float = key(0.0, rng(0, hint="0 turns it off; DINO uses 30 "
                                                     "of 100+ epochs with teacher_temp=0.07"))
    student_temp: float = key(0.1, rng(0, lo_open=True, hint="DINO uses 0.1"))
    # EMA momentum of the center of the teacher outputs (per forward pass)
    center_momentum: float = key(0.9, rng(0, 1, hi_open=True, hint="DINO uses 0.9"))
    # EMA momentum of the teacher at step 0, cosine to 1 at the end of training
    teacher_momentum: float = key(0.996, rng(0, 1, hi_open=True, hint="DINO uses 0.996"))
    local_crops: int = key(2, rng(0, hint="small crops per image, 0 turns them off; DINO: 8"))
    global_crop_scale: list[float] = key([0.4, 1.0], rng(  # area [min, max] of the 2 crops
        0, 1, lo_open=True, length=(2, 2), ascending=True,
        hint="two area fractions [min, max] with 0 < min <= max <= 1, e.g. [0.4, 1.0]"))
    local_crop_scale: list[float] = key([0.05, 0.4], rng(  # area [min, max] of local crops
        0, 1, lo_open=True, length=(2, 2), ascending=True,
        hint="two area fractions [min, max] with 0 < min <= max <= 1, e.g. [0.05, 0.4]"))
    # BatchNorm in the head's hidden layers (DINO's use_bn_in_head; keeps small runs from
    # collapsing)
    head_bn: bool = key(True, free(_SWITCH))
    # local crop side, pixels, a multiple of model.patch_size; None -> about 3/7 of the image
    local_crop_size: int | None = key(None, rng(1, hint="pixels, a multiple of model.patch_size"))
    # kNN monitor / `trainlab knn`
    knn_k: int = key(20, rng(1, hint="neighbours per query, 20 is usual"))
    knn_temperature: float = key(0.07, rng(0, lo_open=True, hint="0.07 is usual"))
    # epochs between online kNN accuracy checks during pretraining; 0 -> off
    knn_every: int = key(0, rng(0, hint="0 turns the monitor off"))


@dataclass(frozen=True)
class OptimConfig:
    name: str = key("adamw", choices(*OPTIMIZERS, hint="adamw is the default"))
    # peak learning rate (after warmup), for the effective batch
    lr: float = key(2e-3, rng(0, lo_open=True, hint="try 1e-3 for adamw, 0.1 for sgd"))
    # on conv/linear weights only
    weight_decay: float = key(0.05, rng(0, hint="0 turns it off; 0.05 (adamw), 5e-4 (sgd)"))
    momentum: float = key(0.9, rng(0, 1, hi_open=True, hint="sgd momentum, 0.9 is usual"))
    nesterov: bool = key(False, free(_SWITCH))  # sgd with optim.momentum > 0 only
    betas: list[float] = key([0.9, 0.999], rng(  # adam/adamw
        0, 1, hi_open=True, length=(2, 2), hint="two numbers, e.g. [0.9, 0.999]"))
    eps: float = key(1e-8, rng(0, lo_open=True, hint="1e-8 is usual"))
    # ViT layer-wise lr decay (finetune); 1 -> off
    layer_decay: float = key(1.0, rng(0, 1, lo_open=True,
                                      hint="1 turns it off; ViT fine-tuning uses 0.65 to 0.75"))


@dataclass(frozen=True)
class SchedConfig:
    name: str = key("cosine", choices(*SCHEDULES, hint="cosine is the default"))
    # linear warmup from warmup_start_factor*lr, fractions allowed; at most train.epochs
    warmup_epochs: float = key(1.0, rng(0, hint="0 turns warmup off"))
    warmup_start_factor: float = key(0.0, rng(0, 1, hint="warmup starts at this share of the lr"))
    # cosine ends at min_lr_factor * lr
    min_lr_factor: float = key(0.0, rng(0, 1, hint="0 ends the cosine at zero"))
    # step: where lr *= gamma; values < 1 are fractions of training, values >= 1 are epochs
    milestones: list[float] = key([0.5, 0.75], rng(
        0, lo_open=True, hint="fractions of training (< 1) or epochs below train.epochs"))
    gamma: float = key(0.1, rng(0, 1, lo_open=True, hint="the lr multiplier, 0.1 is usual"))


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = key(12, rng(1, hint="e.g. train.epochs=12"))
    # images per forward pass (all processes together)
    batch_size: int = key(64, rng(1, hint="try train.batch_size=128"))
    # forward passes per optimizer step; effective batch = batch_size*accum
    accum_steps: int = key(1, rng(1, hint="1 steps after every batch"))
    label_smoothing: float = key(0.0, rng(0, 1, hi_open=True, hint="0.1 is a common choice"))
    # supervised loss: cross-entropy, or squared error of the logits against the target
    loss: str = key("cross_entropy", choices(*LOSSES, hint="cross_entropy is the default"))
    # evaluation of supervised runs: flip averages the logits of each image and its mirror
    tta: str = key("none", choices(*TTAS, hint="flip needs a model trained with flips"))
    # max global grad norm; 0 -> off
    grad_clip: float = key(0.0, rng(0, hint="0 turns it off, 1.0 is usual"))
    eval_batch_size: int = key(512, rng(1, hint="e.g. 512"))
    # autocast; fp16 adds a GradScaler
    precision: str = key("fp32", choices(*PRECISIONS, hint="bf16 also works on CPUs"))
    channels_last: bool = key(False, free(_SWITCH))  # NHWC memory format for CNNs
    compile: bool = key(False, free(_SWITCH))  # torch.compile the training forward
    # EMA of the weights, evaluated and saved beside them; 0 -> off
    ema_decay: float = key(0.0, rng(0, 1, hi_open=True, hint="0 turns it off, 0.999 is usual"))
    sync_bn: bool = key(False, free(_SWITCH))  # SyncBatchNorm across processes
    tf32: bool = key(False, free(_SWITCH))  # TF32 matmuls/convolutions on NVIDIA GPUs


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Not config keys (never saved, compared or validated): what `build_config` filled in from
    # the method's defaults for keys the recipe and command line left unset, and what it
    # skipped because of a key they set (`trainlab.config.method_defaults` Applied / Skipped
    # records); the run header prints them.
    method_defaults: tuple[Any, ...] = field(default=(), compare=False, repr=False)
    method_defaults_skipped: tuple[Any, ...] = field(default=(), compare=False, repr=False)


SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "method": MethodConfig,
    "optim": OptimConfig,
    "sched": SchedConfig,
    "train": TrainConfig,
}
