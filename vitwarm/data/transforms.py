"""Image transforms for the training and evaluation pipelines, built with timm's ``create_transform``.

timm's transforms (RandAugment, colour jitter, random erasing) expect RGB PIL images. ``ImageTransform`` feeds
them RGB and returns the channel count the model wants: for ``in_chans == 1`` the image is first made
grayscale and then RGB (so R = G = B), transformed, and channel 0 kept; the fill colour of RandAugment's
geometric ops is the (gray) mean, so the result stays gray.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from PIL import Image
from timm.data import auto_augment, create_transform
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..config import AugConfig


def as_aug_config(aug: AugConfig | Mapping | None) -> AugConfig:
    """An AugConfig from itself, a mapping of its fields (unknown keys raise ValueError) or None (defaults)."""
    if aug is None or isinstance(aug, AugConfig):
        return aug or AugConfig()
    names = {f.name for f in dataclasses.fields(AugConfig)}
    unknown = sorted(set(aug) - names)
    if unknown:
        raise ValueError(f"unknown augmentation option(s) {unknown}; valid: {sorted(names)}")
    return AugConfig(**aug)


def channel_stats(
    in_chans: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return (mean, std) with ``in_chans`` entries; 1-entry stats are repeated, 3-entry ones averaged for 1."""
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
    mean = tuple(IMAGENET_DEFAULT_MEAN if mean is None else mean)
    std = tuple(IMAGENET_DEFAULT_STD if std is None else std)
    out = []
    for name, v in (("mean", mean), ("std", std)):
        if len(v) not in (1, 3):
            raise ValueError(f"{name} must have 1 or 3 entries, got {v}")
        if len(v) != in_chans:
            v = v * 3 if len(v) == 1 else (sum(v) / 3,)
        out.append(tuple(float(x) for x in v))
    return out[0], out[1]


def _posterize(img: Image.Image, bits_to_keep: int, **kwargs) -> Image.Image:
    # Keeping 0 bits makes the image black (what Pillow < 11 did); newer Pillow raises on it instead.
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return auto_augment.posterize(img, bits_to_keep, **kwargs)


def fix_posterize(transform) -> None:
    """Make the Posterize ops of timm's RandAugment inside ``transform`` (a Compose) accept 0 bits, in place.

    timm maps the highest magnitudes of "inc1" policies (magnitude noise reaches 10) and low magnitudes of
    the others to "keep 0 bits", which current Pillow rejects with ValueError; without this fix about one
    image in a few hundred crashes a RandAugment "rand-m9-mstd0.5-inc1" pipeline.
    """
    for t in getattr(transform, "transforms", ()):
        for op in getattr(t, "ops", ()):
            if op.aug_fn is auto_augment.posterize:
                op.aug_fn = _posterize


class ImageTransform:
    """PIL image (any mode) -> float32 tensor (in_chans, img_size, img_size), normalised."""

    def __init__(
        self, *, is_training: bool, img_size: int, in_chans: int, mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None, aug: AugConfig | Mapping | None = None, crop_pct: float | None = None,
        interpolation: str = "bicubic",
    ):
        mean, std = channel_stats(in_chans, mean, std)
        self.in_chans = in_chans
        # timm runs on 3 channels; a single-channel statistic is repeated so fill colours stay gray.
        mean3, std3 = mean * (3 // in_chans), std * (3 // in_chans)
        if is_training:
            a = as_aug_config(aug)
            self.tfm = create_transform(
                (3, img_size, img_size), is_training=True, auto_augment=a.auto_augment, re_prob=a.re_prob,
                re_mode=a.re_mode, color_jitter=a.color_jitter, interpolation=a.interpolation, hflip=a.hflip,
                scale=a.scale, ratio=a.ratio, mean=mean3, std=std3)
            fix_posterize(self.tfm)
        else:
            self.tfm = create_transform(
                (3, img_size, img_size), is_training=False, crop_pct=crop_pct, interpolation=interpolation,
                mean=mean3, std=std3)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if self.in_chans == 1:
            return self.tfm(img.convert("L").convert("RGB"))[:1]
        return self.tfm(img.convert("RGB"))

    def __repr__(self) -> str:
        return f"ImageTransform(in_chans={self.in_chans}, {self.tfm})"
