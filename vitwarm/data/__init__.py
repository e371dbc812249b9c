"""Image data for vitwarm: shard writing (timm's webdataset layout) and deterministic train/val loaders."""

from .mixup import make_mixup
from .pipeline import (
    DatasetInfo,
    SampleError,
    TrainLoader,
    ValLoader,
    make_train_loader,
    make_val_loader,
    read_dataset_info,
)
from .shards import (
    FMNIST_CLASSES,
    FMNIST_SRC,
    ensure_fmnist_shards,
    read_idx,
    verify_shards,
    write_fmnist_shards,
    write_folder_shards,
)
from .sources import DataError
from .splits import read_splits
from .transforms import ImageTransform

__all__ = [
    "FMNIST_CLASSES", "FMNIST_SRC", "DataError", "DatasetInfo", "ImageTransform", "SampleError", "TrainLoader",
    "ValLoader", "ensure_fmnist_shards", "make_mixup", "make_train_loader", "make_val_loader",
    "read_dataset_info", "read_idx", "read_splits", "verify_shards", "write_fmnist_shards", "write_folder_shards",
]
