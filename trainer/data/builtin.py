"""Datasets that ship with kubeclip, addressed as ``builtin://NAME``.

``skimage-photos`` is built from files installed with scikit-image
(``skimage/data``) and matplotlib (``mpl-data/sample_data``), with captions
written for kubeclip in the package data file ``builtin_captions.jsonl``. With
both packages installed it contains 223 images:

* 23 sample photographs, such as the astronaut, the cat and the coins.
* 200 grayscale crops of 25x25 pixels from the Labeled Faces in the Wild (LFW)
  photographs, as shipped in scikit-image's ``lfw_subset.npy``. Rows 0-99 are
  faces and rows 100-199 are non-face patches cut from the same kind of photos.

It needs no download. The trainer's dataset loading and ``kubeclip dataset
validate`` call ``materialize_builtin_dataset`` to write it as an ordinary
dataset archive.

Each line of ``builtin_captions.jsonl`` names its source with ``package`` and
``file``. A line with an ``index`` takes that row of a NumPy array of floats in
0..1 as an 8-bit grayscale image. A line without one reads an image file.

The archive is reproducible. Photographs are converted to RGB, downscaled to at
most ``MAX_IMAGE_SIDE`` pixels, and encoded as JPEG at quality 90. Array rows
keep their size and are encoded as grayscale PNG, which is lossless and, at
25x25, smaller than JPEG at quality 90 (which moves pixels by up to 19 grey
levels there, measured with Pillow 13). The same versions of Pillow, zlib, NumPy
and the two packages give the same bytes.
"""

from __future__ import annotations

import collections
import importlib.resources
import io
import json
import logging
from collections.abc import Iterator
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from kubeclip.trainer.data import archive as archive_io
from kubeclip.trainer.data.images import decode_image
from kubeclip.trainer.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

BUILTIN_SCHEME = "builtin://"
#: Built-in dataset name to its package data file in ``kubeclip.trainer.data``.
BUILTIN_DATASETS = {"skimage-photos": "builtin_captions.jsonl"}
#: Longer image side after downscaling. CLIP preprocessing resizes to a few hundred pixels anyway.
MAX_IMAGE_SIDE = 512
JPEG_QUALITY = 90
_JSONL_MEMBER = "captions.jsonl"
#: Folder of each source package's sample images, relative to the package folder.
_SAMPLE_FOLDERS = {"skimage": ("data",), "matplotlib": ("mpl-data", "sample_data")}


def parse_builtin_source(source: str) -> str:
    """Return the dataset name of a ``builtin://NAME`` source, or raise ConfigError for an unknown name."""
    if not source.startswith(BUILTIN_SCHEME):
        raise ConfigError(f"dataset source {source!r} is not a built-in dataset. Fix: write it as {BUILTIN_SCHEME}NAME.")
    name = source.removeprefix(BUILTIN_SCHEME).strip("/")
    _captions_resource(name)
    return name


def materialize_builtin_dataset(name: str, cache_dir: Path) -> Path:
    """Write the built-in dataset ``name`` to ``<cache_dir>/<name>.zip`` and return that path.

    The archive is rebuilt on every call, through a temporary file and a rename,
    so a concurrent reader never sees a partial file. Raises ConfigError for an
    unknown name, listing the known ones.
    """
    entries = _archive_entries(_captions_resource(name))
    output_path = cache_dir / f"{name}.zip"
    with archive_io.atomic_output(output_path) as temp_path:
        archive_io.write_archive(temp_path, entries)
    logger.info("wrote built-in dataset %s with %d images to %s", name, len(entries) - 1, output_path)
    return output_path


def _captions_resource(name: str) -> Traversable:
    if name not in BUILTIN_DATASETS:
        known = ", ".join(BUILTIN_SCHEME + known_name for known_name in sorted(BUILTIN_DATASETS))
        raise ConfigError(f"unknown built-in dataset {name!r}. Fix: use one of {known}.")
    return importlib.resources.files(__package__).joinpath(BUILTIN_DATASETS[name])


def _archive_entries(captions_resource: Traversable) -> dict[str, bytes | Path]:
    entries: dict[str, bytes | Path] = {}
    jsonl_lines = []
    # Image arrays already loaded, by package and file, so each .npy file is read once.
    arrays: dict[tuple[str, str], np.ndarray] = {}
    for record, source_file in _available_records(captions_resource):
        stem = PurePosixPath(source_file.name).stem
        if "index" in record:
            array_key = (record["package"], record["file"])
            if array_key not in arrays:
                arrays[array_key] = _load_image_array(source_file)
            index = _checked_row_index(record["index"], arrays[array_key], source_file, captions_resource)
            member = f"images/{stem}_{index:03d}.png"
            entries[member] = _encode_array_row(arrays[array_key], index)
        else:
            member = f"images/{stem}.jpg"
            entries[member] = _encode_jpeg(source_file, member)
        jsonl_lines.append(json.dumps({"image": member, "captions": record["captions"]}, ensure_ascii=False))
    entries[_JSONL_MEMBER] = ("\n".join(jsonl_lines) + "\n").encode("utf-8")
    return entries


def _available_records(captions_resource: Traversable) -> Iterator[tuple[dict[str, Any], Traversable]]:
    """Yield each caption record with its source file, leaving out files that are not installed.

    A missing file is logged once, with the number of records left out, because
    one array file contains the images of many records.
    """
    left_out: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in captions_resource.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        source_file = _sample_file(record["package"], record["file"])
        if source_file is None:
            left_out[(record["package"], record["file"])] += 1
            continue
        yield record, source_file
    for (package, file_name), count in sorted(left_out.items()):
        logger.warning(
            "built-in dataset: %s is not installed with %s, so its %d image(s) are left out", file_name, package, count
        )


def _sample_file(package: str, file_name: str) -> Traversable | None:
    try:
        folder = importlib.resources.files(package).joinpath(*_SAMPLE_FOLDERS[package])
    except ModuleNotFoundError:
        return None
    source_file = folder.joinpath(file_name)
    return source_file if source_file.is_file() else None


def _encode_jpeg(source_file: Traversable, member: str) -> bytes:
    image = decode_image(source_file.read_bytes(), member=member)
    image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _load_image_array(source_file: Traversable) -> np.ndarray:
    """Load a stack of grayscale images (rows x height x width, floats in 0..1) from a .npy file.

    Raises DatasetError when the array has another shape, type or value range,
    because converting it to 8-bit pixels would then give wrong images.
    """
    with source_file.open("rb") as file:
        array = np.load(file, allow_pickle=False)
    if array.ndim != 3 or not np.issubdtype(array.dtype, np.floating):
        raise DatasetError(
            f"built-in dataset source {source_file.name} is invalid: it contains a {array.dtype} array of shape "
            f"{array.shape}, but a float array of shape (images, height, width) is expected. "
            "Fix: reinstall the package that ships it."
        )
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise DatasetError(
            f"built-in dataset source {source_file.name} is invalid: its values range from {array.min()} to "
            f"{array.max()}, but values from 0 to 1 are expected. Fix: reinstall the package that ships it."
        )
    return array


def _checked_row_index(
    index: object, array: np.ndarray, source_file: Traversable, captions_resource: Traversable
) -> int:
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(array):
        return index
    raise DatasetError(
        f"{captions_resource.name}: index {index!r} into {source_file.name} is invalid, because that file contains "
        f"rows 0 to {len(array) - 1}. Fix: correct the index in {captions_resource.name}."
    )


def _encode_array_row(array: np.ndarray, index: int) -> bytes:
    """Encode row ``index`` of an image array as an 8-bit grayscale PNG at its native size."""
    pixels = np.round(array[index] * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
