"""Which samples a batch holds, and random numbers that follow the sample, not the rank.

Both loaders yield `(images, labels, keys)`: `keys` names the batch's samples by their position
in the epoch's order (`SampleKeys`: seed, epoch, positions). A method that needs randomness per
sample (MAE masks, SimCLR views) draws it with `sample_uniform(keys, width, stream)`: the numbers
of the sample at position p are a pure function of (seed, epoch, p, stream). So they do not
depend on the number of ranks or on which rank holds the sample, two ranks draw different
numbers for their different samples, and a resumed run draws the same numbers again without any
saved generator state.

`sample_uniform` draws in blocks of `BLOCK` consecutive positions, each from its own CPU
generator (seeded by `mix_seed(seed, epoch, stream, block)`), and keeps the rows asked for: a
batch of contiguous positions costs a few generator seedings, not one per sample.

Randomness inside the model (dropout, drop-path) comes from torch's global generator, which
each rank seeds with `rank_seed(seed, rank)` once the weights are built: per rank, not per
sample, so ranks differ and a run repeats, but runs at different world sizes drop differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MASK64 = 2**64 - 1
BLOCK = 64  # positions per generator; changing it changes every drawn number


def splitmix64(z: int) -> int:
    """One SplitMix64 step: a well-mixed 64-bit integer from any 64-bit integer."""
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def mix_seed(*parts: int) -> int:
    """A seed in [0, 2**64) from integers (each taken modulo 2**64), order-sensitive."""
    z = 0
    for p in parts:
        z = splitmix64(z ^ (p & MASK64))
    return z


@dataclass(frozen=True)
class SampleKeys:
    """The samples of one (per-rank) batch: positions int64 [b] (CPU) in `epoch`'s order of a
    loader seeded with `seed`. Evaluation loaders do not shuffle, so there position = index."""

    seed: int
    epoch: int
    positions: Tensor

    def __len__(self) -> int:
        return len(self.positions)

    def with_seed(self, seed: int, epoch: int = 0) -> SampleKeys:
        """The same positions under another (seed, epoch): e.g. fixed evaluation masks."""
        return SampleKeys(seed, epoch, self.positions)


def contiguous_keys(seed: int, epoch: int, lo: int, hi: int) -> SampleKeys:
    """Keys of positions [lo, hi) of `epoch`."""
    return SampleKeys(seed, epoch, torch.arange(lo, hi, dtype=torch.int64))


def sample_uniform(keys: SampleKeys, width: int, stream: int) -> Tensor:
    """Uniform [0, 1) numbers per sample: float32 [b, width] on the CPU.

    Row r depends only on (keys.seed, keys.epoch, keys.positions[r], stream, width). Use a
    different `stream` for each independent use (e.g. MAE noise vs. SimCLR views). Under
    `torch.compile` it runs outside the graph (CPU generators, a Python loop over blocks).
    """
    if torch.compiler.is_compiling():  # traced: run it eagerly, outside the graph
        return torch.compiler.disable(_sample_uniform)(keys, width, stream)
    return _sample_uniform(keys, width, stream)  # (no decorator: that imports torch._dynamo,
    # about 1 s, in every process, compiled or not)


def _sample_uniform(keys: SampleKeys, width: int, stream: int) -> Tensor:
    pos = keys.positions.to(torch.int64).cpu()
    out = torch.empty(len(pos), width)
    if len(pos) == 0:
        return out
    blocks = torch.div(pos, BLOCK, rounding_mode="floor")
    g = torch.Generator()
    for block in torch.unique(blocks).tolist():
        g.manual_seed(mix_seed(keys.seed, keys.epoch, stream, block))
        table = torch.rand(BLOCK, width, generator=g)  # rows: positions block*BLOCK + 0..63
        rows = (blocks == block).nonzero().squeeze(1)
        out[rows] = table[pos[rows] - block * BLOCK]
    return out


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank `rank`'s global torch generator once the weights are built (dropout,
    drop-path): differs per rank, fixed by (seed, rank)."""
    return mix_seed(seed, rank, 0x5EED) & (2**63 - 1)
