"""Image data for vitwarm: shard writing (timm's webdataset layout) and deterministic train/val loaders.

The rooms: ``sources`` (where shards are, ``_info.json``; its HTTP requests in ``http_fetch``), ``reader``
(the tar reader and decoder, fault counting), ``shuffle`` (the shuffle buffer), ``streams`` (one rank's
training epoch / validation pass),
``loaders`` (the loaders and their factories), ``transforms``, ``mixup``, ``identity`` (a run's data identity);
writing: ``shards`` (tar members,
``_info.json``, publishing), one converter per source format (``fmnist``, ``folder``,
``convert_torchvision``) and ``verify``; ``synthetic`` (generated images read like shards); ``splits`` finds a
run's splits from its config, ``prepare`` the registry of data sets a run makes ready by name.
"""

from .fmnist import FMNIST_CLASSES, FMNIST_SRC, ensure_fmnist_shards, read_idx, write_fmnist_shards
from .folder import write_folder_shards
from .loaders import TrainLoader, ValLoader, make_train_loader, make_val_loader
from .mixup import make_mixup
from .prepare import (
    PREPARATIONS,
    WRITTEN,
    describe_train,
    images_are_synthetic,
    pending_preparation,
    preparation,
    prepare_data,
)
from .reader import SampleError
from .sources import DataError, DatasetInfo, is_remote, read_dataset_info
from .splits import read_splits
from .synthetic import SYNTHETIC
from .transforms import ImageTransform
from .verify import verify_shards

__all__ = [
    "FMNIST_CLASSES", "FMNIST_SRC", "PREPARATIONS", "SYNTHETIC", "WRITTEN", "DataError", "DatasetInfo",
    "ImageTransform", "SampleError", "TrainLoader", "ValLoader", "describe_train", "ensure_fmnist_shards",
    "images_are_synthetic", "is_remote", "pending_preparation", "make_mixup", "make_train_loader",
    "make_val_loader", "prepare_data",
    "preparation", "read_dataset_info", "read_idx", "read_splits", "verify_shards", "write_fmnist_shards",
    "write_folder_shards",
]
