"""The one tar reader and sample decoder, used by the loaders and by ``make_shards.py verify`` alike, and the
fault counter beside them.

A shard is read as a stream (so URLs and ``pipe:`` commands work as well as local files): consecutive tar
members with the same key form one sample ``{"__key__", "__url__", ext: bytes, ...}``. A sample decodes to
a PIL image (the first of ``IMAGE_KEYS`` it holds) and an int label (its ``cls`` entry); ``encode`` writes
an image array and its label as those entries.

Faults: a sample that does not decode or has a bad label, and the unread rest of a truncated or unreadable
shard, are reported to a ``Faults``: in strict mode it raises ``SampleError``; otherwise it logs and counts
them (training) or lists them (verification).
"""

from __future__ import annotations

import io
import logging
import tarfile
from collections.abc import Iterator

import numpy as np
from PIL import Image
from webdataset.tariterators import base_plus_ext

from .http_fetch import DEFAULT_HTTP, HttpLimits
from .sources import INFO_NAME, DataError, open_location

log = logging.getLogger(__name__)

# Entries holding the image, in order of preference (timm's wds reader reads the same ones).
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
# A worker that fails this many samples in a row is reading garbage, not a few bad samples: stop it.
MAX_CONSECUTIVE_FAULTS = 1000


class SampleError(DataError):
    """A sample or shard could not be read (raised in strict mode, counted and skipped otherwise)."""


class Faults:
    """The faults of one process. Strict: raise at the first. Else log and count them (``take()`` returns the
    count since the last call), or, given a ``problems`` list, append each message to it instead."""

    def __init__(self, strict: bool, problems: list[str] | None = None):
        self.strict, self.problems, self.pending, self.consecutive = strict, problems, 0, 0

    def report(self, message: str) -> None:
        if self.strict:
            raise SampleError(message + " (strict=True; pass strict=False to skip and count such faults)")
        if self.problems is not None:
            self.problems.append(message)
            return
        log.warning("skipping: %s", message)
        self.pending += 1
        self.consecutive += 1
        if self.consecutive >= MAX_CONSECUTIVE_FAULTS:
            raise SampleError(f"{self.consecutive} faulty samples in a row; the shards look broken ({message})")

    def take(self) -> int:
        n, self.pending = self.pending, 0
        return n


def read_shard(url: str, expected: int | None, faults: Faults, limits: HttpLimits = DEFAULT_HTTP) -> Iterator[dict]:
    """Yield the raw samples (``{"__key__", "__url__", ext: bytes, ...}``) of one shard in file order.

    A shard that breaks off (truncated, unreadable) is reported as one fault and ends there. A shard read
    to its end whose sample count differs from ``expected`` (from ``_info.json``) raises DataError: the
    metadata is wrong, and training on it would silently change the epoch.
    """
    n, sample = 0, None
    try:
        with open_location(url, limits) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                key, ext = base_plus_ext(member.name) if member.isfile() else (None, None)
                if key is None:
                    continue
                data = tar.extractfile(member).read()
                if sample is not None and key != sample["__key__"]:
                    yield sample
                    n += 1
                    sample = None
                if sample is None:
                    sample = {"__key__": key, "__url__": url}
                sample[ext.lower()] = data
    except (tarfile.TarError, OSError, EOFError) as e:
        faults.report(f"shard {url} broke off after {n} samples ({type(e).__name__}: {e})")
        return
    if sample is not None:
        yield sample
        n += 1
    if expected is not None and n != expected:
        raise DataError(f"shard {url} holds {n} samples but {INFO_NAME} says {expected}; "
                         f"rewrite the shards or fix {INFO_NAME} (make_shards.py verify checks every shard)")


def encode(image: np.ndarray, label: int) -> dict[str, bytes]:
    """A uint8 image array ((H, W) gray or (H, W, 3) RGB) and its label as a sample's entries, the way a
    shard holds them (``png``, lossless; ``cls``, the class index as ASCII digits): what ``decode`` reads."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return {"png": buf.getvalue(), "cls": str(int(label)).encode("ascii")}


def decode(sample: dict, num_classes: int | None, faults: Faults) -> tuple[Image.Image, int] | None:
    """Raw sample -> (PIL image, label), or None (reported as a fault) when it is broken."""
    try:
        label = int(sample["cls"])
        if num_classes is not None and not 0 <= label < num_classes:
            raise ValueError(f"label {label} outside [0, {num_classes})")
        data = next(sample[k] for k in IMAGE_KEYS if k in sample)
        img = Image.open(io.BytesIO(data))
        img.load()
    except (KeyError, StopIteration, ValueError, OSError, Image.DecompressionBombError) as e:
        faults.report(f"sample {sample['__key__']} of {sample['__url__']} ({type(e).__name__}: {e})")
        return None
    faults.consecutive = 0
    return img, label
