"""Random erasing on the training device (vitwarm.data.transforms.OnDevice) against the CPU erasing the loader
workers did before batches left them as uint8: the same statistics of boxes and fill, and the same boxes
again for the same (seed, step)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp
from timm.data import create_transform

from vitwarm.data import ImageTransform
from vitwarm.seeds import derive_seed, seed_step, seeded

SIZE, N, RE = 32, 600, dict(re_prob=0.25, re_mode="pixel")
# No RandAugment, so that a constant image stays constant outside the erased box.
PLAIN = dict(auto_augment=None, color_jitter=None, hflip=0.5, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))


def boxes(images: torch.Tensor) -> tuple[list[float], list[float], torch.Tensor, int]:
    """Of a batch of constant images (B, C, S, S) with erased boxes: each box's area (fraction of the image),
    its log aspect ratio log(h / w), the fill values of all boxes, and how many images have a box."""
    areas, log_aspects, fills = [], [], []
    for img in images:
        # (S, S): pixels off their channel's constant (a normal fill never hits it exactly)
        erased = (img != img.flatten(1).mode(dim=1).values[:, None, None]).any(dim=0)
        if not erased.any():
            continue
        rows, cols = erased.any(dim=1).nonzero()[:, 0], erased.any(dim=0).nonzero()[:, 0]
        h, w = int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1
        assert int(erased.sum()) == h * w  # one rectangle
        areas.append(h * w / SIZE**2)
        log_aspects.append(float(np.log(h / w)))
        fills.append(img[:, erased].flatten())
    return areas, log_aspects, torch.cat(fills), len(areas)


def cpu_erased() -> torch.Tensor:
    """What the workers shipped before: timm's float ending, RandomErasing after Normalize, per sample."""
    tfm = create_transform((3, SIZE, SIZE), is_training=True, use_prefetcher=False, **PLAIN, **RE)
    gray = Image.new("RGB", (48, 40), (120, 120, 120))
    out = []
    for i in range(N):
        with seeded(derive_seed(1, "augment", i)):
            out.append(tfm(gray))
    return torch.stack(out)


def device_erased() -> torch.Tensor:
    """Now: uint8 from the workers, normalised and erased per batch where the model is, seeded per step."""
    ours = ImageTransform(is_training=True, img_size=SIZE, in_chans=3, **PLAIN, **RE)
    gray = Image.new("RGB", (48, 40), (120, 120, 120))
    shipped = torch.stack([ours(gray) for _ in range(N // 10)])
    assert shipped.dtype == torch.uint8
    out = []
    for step in range(10):
        seed_step(1, "image", step, 0)
        out.append(ours.on_device(shipped.clone()))
    return torch.cat(out)


def test_device_erasing_has_the_cpu_erasings_statistics():
    cpu, dev = boxes(cpu_erased()), boxes(device_erased())
    for areas, _, fills, n in (cpu, dev):
        assert abs(n / N - 0.25) < 0.07  # binomial sd 0.018 at N = 600
        assert min(areas) > 0.02 - 1e-3 and max(areas) < 1 / 3 + 0.05  # timm's area range (boxes rounded)
        assert abs(fills.mean()) < 0.05 and abs(fills.std() - 1) < 0.05  # 'pixel': standard normal fill
    for i in (0, 1):  # the area and aspect distributions: the same (two-sample Kolmogorov-Smirnov)
        assert ks_2samp(cpu[i], dev[i]).pvalue > 1e-3


@pytest.mark.parametrize("in_chans", [1, 3])
def test_device_erasing_is_the_same_for_the_same_seed_and_step(in_chans):
    batch = torch.randint(0, 256, (16, in_chans, SIZE, SIZE), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    on_device = ImageTransform(is_training=True, img_size=SIZE, in_chans=in_chans, **PLAIN, **RE).on_device

    def erased(seed: int, step: int) -> torch.Tensor:
        seed_step(seed, "image", step, 0)
        return on_device(batch.clone())

    plain = ImageTransform(is_training=True, img_size=SIZE, in_chans=in_chans, **PLAIN).on_device(batch)
    first = erased(3, 7)
    assert (first != plain).any(dim=(1, 2, 3)).sum() >= 1  # some image was erased
    assert torch.equal(erased(3, 7), first)
    assert not torch.equal(erased(3, 8), first) and not torch.equal(erased(4, 7), first)
    evaluation = ImageTransform(is_training=False, img_size=SIZE, in_chans=in_chans, **RE).on_device
    assert evaluation.erase is None  # evaluation never erases
