"""Image transforms for the training and evaluation pipelines, built with timm's ``create_transform``.

timm's transforms (RandAugment, colour jitter, random erasing) expect RGB PIL images. ``ImageTransform`` feeds
them RGB and returns the channel count the model wants: for ``in_chans == 1`` the image is first made
grayscale and then RGB (so R = G = B), transformed, and channel 0 kept; the fill colour of RandAugment's
geometric ops is the (gray) mean, so the result stays gray.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from PIL import Image
from timm.data import auto_augment, create_transform
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.data.random_erasing import RandomErasing

# ImageTransform's training augmentation options: what ``make_train_loader(aug=...)`` accepts by name.
AUG_OPTIONS = ("auto_augment", "re_prob", "re_mode", "color_jitter", "interpolation", "hflip", "scale", "ratio")


def aug_options(aug: Mapping | None) -> dict:
    """``aug`` (options by name, or None for the defaults) as a dict; ValueError naming unknown options."""
    unknown = sorted(set(aug or {}) - set(AUG_OPTIONS))
    if unknown:
        raise ValueError(f"unknown augmentation option(s) {unknown}; valid: {sorted(AUG_OPTIONS)}")
    return dict(aug or {})


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


class OnDevice:
    """What the training device does to the uint8 batches (B, C, H, W) in [0, 255] the workers ship, as timm's
    prefetcher does: normalise to float32 ``(x / 255 - mean) / std`` (the very operations of torchvision's
    ToTensor + Normalize in their order, so the same pixels as normalising in the workers), then, for training
    with ``re_prob > 0``, timm's ``RandomErasing`` on the normalised batch. Erasing draws its boxes from
    Python's ``random`` and its fill from the device's torch generator, both seeded at every step
    (vitwarm.seeds.seed_step), so a resumed run erases alike.

    ``to(device)`` puts mean and std on the device once, when the loaders open: a step copies nothing from
    the host. The CPU is the device until then.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], re_prob: float = 0.0, re_mode: str = "pixel"):
        self.mean, self.std, self.re_prob, self.re_mode = tuple(mean), tuple(std), re_prob, re_mode
        self.to(torch.device("cpu"))

    def to(self, device: torch.device | str) -> OnDevice:
        device = torch.device(device)
        # (C, 1, 1) each, broadcast over the batch.
        self._mean, self._std = (torch.tensor(v, dtype=torch.float32, device=device).view(-1, 1, 1)
                                 for v in (self.mean, self.std))
        self.erase = RandomErasing(self.re_prob, mode=self.re_mode, device=device) if self.re_prob > 0 else None
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"expected a uint8 batch from the loader workers, got {images.dtype}")
        images = images.float().div_(255).sub_(self._mean).div_(self._std)
        return images if self.erase is None else self.erase(images)


class ImageTransform:
    """PIL image (any mode) -> uint8 tensor (in_chans, img_size, img_size); ``on_device`` (an ``OnDevice``)
    turns a batch of them into normalised (and, training with ``re_prob > 0``, erased) float32 on the
    training device.

    Training (``is_training``) applies timm's augmentation with the options of ``AUG_OPTIONS`` (defaults:
    those of the config's ``data.aug``; ``interpolation`` also serves evaluation); evaluation resizes and
    centre-crops ``crop_pct`` (None: timm's 0.875). The workers ship uint8 in every case, a quarter of the
    bytes of float32 through shared memory, pinning and the host-to-device copy; random erasing, which
    needs the normalised image, runs on the device (``OnDevice``).
    """

    def __init__(
        self, *, is_training: bool, img_size: int, in_chans: int, mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None, crop_pct: float | None = None, interpolation: str = "bicubic",
        auto_augment: str | None = None, re_prob: float = 0.0, re_mode: str = "pixel",
        color_jitter: float | None = None, hflip: float = 0.5, scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
    ):
        mean, std = channel_stats(in_chans, mean, std)
        self.in_chans = in_chans
        # timm runs on 3 channels; a single-channel statistic is repeated so fill colours stay gray.
        mean3, std3 = mean * (3 // in_chans), std * (3 // in_chans)
        self.on_device = OnDevice(mean, std, re_prob=re_prob if is_training else 0.0, re_mode=re_mode)
        # timm's use_prefetcher: the pipeline ends in PILToTensor (uint8, no scaling) and leaves normalisation and
        # random erasing to the consumer (here OnDevice).
        if is_training:
            self.tfm = create_transform(
                (3, img_size, img_size), is_training=True, auto_augment=auto_augment, color_jitter=color_jitter,
                interpolation=interpolation, hflip=hflip, scale=scale, ratio=ratio, mean=mean3, std=std3,
                use_prefetcher=True)
            fix_posterize(self.tfm)
        else:
            self.tfm = create_transform(
                (3, img_size, img_size), is_training=False, crop_pct=crop_pct, interpolation=interpolation,
                mean=mean3, std=std3, use_prefetcher=True)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if self.in_chans == 1:
            return self.tfm(img.convert("L").convert("RGB"))[:1]
        return self.tfm(img.convert("RGB"))

    def __repr__(self) -> str:
        return f"ImageTransform(in_chans={self.in_chans}, {self.tfm})"
