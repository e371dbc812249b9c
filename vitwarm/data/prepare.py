"""The data sets a run makes ready by name, behind one registry, so that the run names no data set.

An entry says what the run's training split will hold before any file exists (``describe``: samples and
classes, for the preflight's plan) and makes its images readable (``ensure``, on the main process only,
before the splits are read). The config chooses an entry: ``data.source=synthetic`` the generated images
(vitwarm.data.synthetic), which need no files; ``data.prepare=NAME`` a data set whose shards are written
to ``data.source`` when they are missing. Without either, the shards at ``data.source`` are read as they are.

A new data set that a run may write for itself: a converter module here, and an entry below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig

from ..errors import ConfigError
from .fmnist import (
    FMNIST_CLASSES,
    FMNIST_SRC,
    ensure_fmnist_shards,
    fmnist_shards_ready,
    fmnist_split_indices,
    load_fmnist,
)
from .sources import is_remote, read_dataset_info
from .synthetic import SYNTHETIC


@dataclass(frozen=True)
class Preparation:
    """How the config's data becomes readable: what its training split holds, and what makes it so."""

    describe: Callable[[DictConfig], tuple[int, int]]
    """``data`` section -> (training samples, classes), before anything is written."""
    ensure: Callable[[DictConfig], None]
    """Make the splits of the ``data`` section readable (main process only)."""
    pending: Callable[[DictConfig], str | None] = lambda data: None
    """What ``ensure`` would still write for the ``data`` section, in words (for --dry-run); None: nothing."""
    synthetic: bool = False
    """The images are generated, not any data set's: the run's accuracies are not comparable to any."""


def _describe_fmnist(data: DictConfig) -> tuple[int, int]:
    fmnist = load_fmnist()
    splits = fmnist_split_indices({part: labels for part, (_, labels) in fmnist.items()}, fraction=data.train_fraction)
    for key in ("train_split", "val_split", "test_split"):
        if data[key] is not None and data[key] not in splits:
            raise ConfigError(f"data.{key}={data[key]!r} is not a split of the Fashion-MNIST shards that "
                              f"data.prepare=fmnist writes; valid: {sorted(splits)}")
    return len(splits[data.train_split][1]), len(FMNIST_CLASSES)


PREPARATIONS = {
    "fmnist": Preparation(
        describe=_describe_fmnist,
        ensure=lambda data: ensure_fmnist_shards(data.source, fraction=data.train_fraction),
        pending=lambda data: None if fmnist_shards_ready(data.source, fraction=data.train_fraction) else (
            f"write Fashion-MNIST shards into {data.source} (data.prepare=fmnist, train fraction "
            f"{data.train_fraction}) from {FMNIST_SRC}, before the first step")),
    SYNTHETIC: Preparation(
        describe=lambda data: (data.synthetic.samples, data.synthetic.classes),
        ensure=lambda data: None,  # nothing to write: the images are made as they are read
        synthetic=True),
}
# What data.prepare may name: the entries that write shards to data.source (synthetic is a source of its own).
WRITTEN = tuple(name for name, entry in PREPARATIONS.items() if not entry.synthetic)


def preparation(data: DictConfig) -> Preparation | None:
    """The registry entry the ``data`` section chooses (see the module docstring); None: shards as they are."""
    return PREPARATIONS[SYNTHETIC] if data.source == SYNTHETIC else PREPARATIONS.get(data.prepare)


def describe_train(data: DictConfig) -> tuple[int, int]:
    """(training samples, classes) of the ``data`` section: read from the shards, or from what its
    preparation will write when they are missing. ConfigError naming ``data.source`` when neither applies."""
    prepared = preparation(data)
    if prepared is not None and prepared.synthetic:
        return prepared.describe(data)
    try:
        info = read_dataset_info(data.source, data.train_split, data.info)
        return info.num_samples, info.num_classes
    except FileNotFoundError as err:
        if is_remote(data.source):  # data.prepare writes local directories only: no hint applies to a URL
            raise ConfigError(f"data.source={data.source!r}: {err}") from None
        if prepared is None:
            raise ConfigError(f"data.source={data.source!r}: {err}; write shards with tools/make_shards.py, set "
                              f"data.prepare to one of {list(WRITTEN)}, or try the recipe on generated images "
                              f"with data.source={SYNTHETIC}") from None
    return prepared.describe(data)


def prepare_data(data: DictConfig) -> None:
    """Make the ``data`` section's splits readable (main process only; the others wait for it)."""
    prepared = preparation(data)
    if prepared is not None:
        prepared.ensure(data)


def pending_preparation(data: DictConfig) -> str | None:
    """What preparing the ``data`` section would still write, in words; None when nothing (--dry-run)."""
    prepared = preparation(data)
    return None if prepared is None else prepared.pending(data)


def images_are_synthetic(data: DictConfig) -> bool:
    """Whether the ``data`` section's images are generated (summary.json says so)."""
    prepared = preparation(data)
    return prepared is not None and prepared.synthetic
