"""Mixup / CutMix and the training loss that goes with them (timm's implementations)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy


def make_mixup(
    mixup_alpha: float, cutmix_alpha: float, label_smoothing: float, num_classes: int
) -> tuple[Mixup | None, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """Return ``(mixup_fn or None, train_loss_fn)``.

    With mixup or cutmix on, ``mixup_fn(images, labels) -> (images, soft targets (B, num_classes))`` (label
    smoothing folded into the targets; the batch size must be even) and the loss is soft-target cross-entropy.
    Otherwise ``mixup_fn`` is None and the loss takes int64 labels: label-smoothing cross-entropy when
    ``label_smoothing > 0``, plain cross-entropy when it is 0.
    """
    for name, v in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if mixup_alpha > 0 or cutmix_alpha > 0:
        mixup = Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, label_smoothing=label_smoothing,
                      num_classes=num_classes)
        return mixup, SoftTargetCrossEntropy()
    if label_smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=label_smoothing)
    return None, torch.nn.CrossEntropyLoss()
