"""The in-memory loader: order and augmentation are functions of (seed, epoch, position)."""

import torch

from trainlab.data.augment import AugmentSpec
from trainlab.data.loader import DeviceLoader

N, B = 103, 10
X = torch.randint(0, 256, (N, 1, 6, 6), dtype=torch.uint8)
Y = torch.arange(N)  # label = sample index, to track samples
AUG = AugmentSpec(crop_padding=1, flip=True, rotate_deg=0.0, brightness=0.2, contrast=0.0)


def loader(**kw):
    return DeviceLoader(X, Y, B, [0.5], [0.25], **{"shuffle": True, "augment": AUG, **kw})


def batches(ld, epoch, start=0):
    return [(x.clone(), y.clone()) for x, y, _ in ld.epoch(epoch, start)]


def test_train_epoch_is_a_permutation_without_repeats():
    bs = batches(loader(), 0)
    assert len(bs) == N // B  # last partial batch dropped in training
    seen = torch.cat([y for _, y in bs])
    assert len(set(seen.tolist())) == len(seen) == (N // B) * B


def test_same_seed_same_batches_other_epoch_or_seed_differs():
    a, b = batches(loader(seed=3), 1), batches(loader(seed=3), 1)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[0][1], batches(loader(seed=3), 2)[0][1])
    assert not torch.equal(a[0][1], batches(loader(seed=4), 1)[0][1])


def test_start_position_reproduces_the_rest_of_the_epoch():
    full, rest = batches(loader(), 5), batches(loader(), 5, start=4)
    assert len(rest) == len(full) - 4
    for (xa, ya), (xb, yb) in zip(full[4:], rest, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_augmentation_follows_the_sample_not_the_rank():
    """Two ranks' halves of each batch, concatenated, equal the single-process batch."""
    single = batches(loader(), 0)
    r0, r1 = batches(loader(rank=0, world_size=2), 0), batches(loader(rank=1, world_size=2), 0)
    for (x, y), (x0, y0), (x1, y1) in zip(single, r0, r1, strict=True):
        assert torch.equal(torch.cat([y0, y1]), y) and torch.equal(torch.cat([x0, x1]), x)


def test_eval_loader_covers_every_sample_once_in_order():
    ld = DeviceLoader(X, Y, B, [0.5], [0.25], shuffle=False)
    bs = batches(ld, 0)
    assert len(bs) == -(-N // B)
    assert torch.equal(torch.cat([y for _, y in bs]), Y)
    x0 = bs[0][0]
    assert torch.allclose(x0, (X[:B].float() / 255 - 0.5) / 0.25)


def test_augmentation_changes_images_per_sample():
    x_aug = batches(loader(), 0)[0][0]
    ids = batches(loader(), 0)[0][1]
    plain = (X[ids].float() / 255 - 0.5) / 0.25
    changed = (x_aug != plain).flatten(1).any(1)
    assert changed.float().mean() > 0.5


def test_grey_batches_have_channels_last_strides_with_and_without_augmentation():
    """One channel: the loader hands out channels_last strides (the same memory), so CPU
    convolutions take the same (faster) path for augmented and plain batches."""
    from trainlab.config.schema import DataConfig
    from trainlab.data.augment import resolve_augment
    from trainlab.data.loader import DeviceLoader, grey_as_channels_last

    x = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    y = torch.randint(0, 3, (64,))
    for aug in (None, resolve_augment(DataConfig(name="fashion-mnist"))):
        loader = DeviceLoader(x, y, 32, [0.5], [0.25], shuffle=True, augment=aug)
        xb = next(iter(loader.epoch(0)))[0]
        assert xb.stride() == (64, 1, 8, 1), (aug, xb.stride())
    plain = torch.arange(2 * 1 * 3 * 4.0).view(2, 1, 3, 4)
    assert torch.equal(grey_as_channels_last(plain), plain)  # same values, same memory
    assert grey_as_channels_last(plain).data_ptr() == plain.data_ptr()
    rgb = torch.zeros(2, 3, 4, 4)
    assert grey_as_channels_last(rgb).stride() == rgb.stride()
