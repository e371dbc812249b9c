"""The image splits of a run, found from the ``data`` config section and checked so evaluation never reads
training data.

``data.source`` holds the training split ``data.train_split``. The evaluation splits (``data.val_split``, and
``data.test_split`` when set) are read from ``data.val_source`` / ``data.test_source`` when given, else:

* from ``data.source`` itself when it is a shard directory or an ``_info.json`` (the split chosen by name);
* when ``data.source`` is a shard pattern, from the ``_info.json`` that lists its shards (``data.info``, else
  the one beside them), the split chosen by name, and refused when that file or that split does not exist
  (a pattern names the training shards only: reading it for evaluation would report training accuracy as
  validation accuracy).

``data.source=synthetic`` gives generated splits instead (vitwarm.data.synthetic), each its own images.

Any evaluation split sharing a shard file (same resolved local path, or same URL) with the training split
is refused.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from omegaconf import DictConfig
from webdataset.shardlists import expand_urls

from .sources import (
    INFO_NAME,
    DataError,
    DatasetInfo,
    is_pattern,
    is_remote,
    join,
    parent,
    read_dataset_info,
    read_info,
    split_count,
)
from .synthetic import SYNTHETIC, synthetic_splits

# Evaluation roles: (config key of the split name, config key of its own source).
EVAL_ROLES = {"val": ("val_split", "val_source"), "test": ("test_split", "test_source")}


def _eval_info(data: DictConfig, role: str) -> DatasetInfo:
    split_key, source_key = EVAL_ROLES[role]
    split, own = data[split_key], data[source_key]
    if own is not None or not is_pattern(data.source):
        try:
            return read_dataset_info(own or data.source, split, data.info if own else None)
        except DataError as err:  # say which key chose the split
            raise DataError(f"data.{split_key}={split!r}: {err}") from None
    # A pattern of training shards: the evaluation split is chosen by name from the _info.json listing them.
    hint = (f"give data.{source_key} (a shard directory, {INFO_NAME} or pattern of the {split!r} shards); "
            f"data.source is a pattern of {data.train_split!r} shards, never read for evaluation")
    try:
        listing = data.info or join(parent(expand_urls(split_count(data.source)[0])[0]), INFO_NAME)
        meta = read_info(listing)
        if split not in meta["splits"]:
            raise DataError(f"it is not a split of {listing} (that has {sorted(meta['splits'])})")
        if urlparse(listing).scheme == "pipe":
            raise DataError(f"{listing!r} is a command: the locations of the shards it lists are unknown")
        return read_dataset_info(listing, split)
    except (FileNotFoundError, DataError) as err:
        raise DataError(f"data.{split_key}={split!r}: {err}; {hint}") from None


def _shard_id(url: str) -> str:
    """What makes two shard locations the same file: the resolved path (local) or the URL itself."""
    return url if is_remote(url) else os.path.realpath(url)


def read_splits(data: DictConfig) -> dict[str, DatasetInfo]:
    """``{"train": ..., "val": ..., "test": ...}`` (``test`` only when ``data.test_split`` is set) for the
    ``data`` config section; DataError when an evaluation split cannot be found or shares shards with
    training, FileNotFoundError for missing files (see ``read_dataset_info``); for ``data.source=synthetic``,
    the generated splits (vitwarm.data.synthetic)."""
    if data.source == SYNTHETIC:
        return synthetic_splits(data)
    splits = {"train": read_dataset_info(data.source, data.train_split, data.info)}
    train_shards = {_shard_id(u) for u in splits["train"].urls}
    for role, (split_key, source_key) in EVAL_ROLES.items():
        if data[split_key] is None:
            continue
        info = splits[role] = _eval_info(data, role)
        shared = [u for u in info.urls if _shard_id(u) in train_shards]
        if shared:
            raise DataError(
                f"data.{split_key}={info.split!r} ({data[source_key] or data.source}) shares {len(shared)} of its "
                f"{len(info.urls)} shard(s) with the training split {data.train_split!r}, e.g. {shared[0]}: "
                f"evaluation must never read training data; give data.{source_key} of held-out shards")
    return splits
