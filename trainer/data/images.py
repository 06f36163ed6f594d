"""Decode dataset images and turn them into model input tensors.

``validation`` calls ``check_image`` to prove that an archive member decodes,
``stats`` calls ``read_image_size`` to read sizes from image headers, and the
training data loader calls ``decode_image`` followed by an ``ImageTransform``
(in its worker processes, so the transform is picklable). Every decoding failure
raises ``ImageDecodeError``, a ``DatasetError`` naming the archive member.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Mapping, Sequence
from typing import IO, Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from kubeclip.trainer.errors import ConfigError, DatasetError

#: Pillow's default ``Image.MAX_IMAGE_PIXELS``, 1024 * 1024 * 1024 // 4 // 3 (checked in Pillow 13.0): about 89.5 megapixels.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
#: EXIF orientation tag. Its values 5 to 8 mean the stored image is rotated by 90 or 270 degrees.
_EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
#: Errors Pillow raises for damaged or unsupported data. Its decoders are not consistent:
#: besides OSError (including UnidentifiedImageError), plugins raise SyntaxError,
#: ValueError, EOFError, IndexError or struct.error on malformed files.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
_WHITE = (255, 255, 255)


class ImageDecodeError(DatasetError):
    """Error for an archive member that is not a decodable image, with ``reason`` and ``fix`` also stored apart.

    The message is the only positional argument, so the error pickles and can be
    rebuilt from its message, as torch does for errors raised in loader workers.
    """

    def __init__(self, message: str, *, member: str = "", reason: str = "", fix: str = "") -> None:
        super().__init__(message)
        self.member = member
        self.reason = reason
        self.fix = fix

    @classmethod
    def for_member(cls, member: str, reason: str, fix: str) -> ImageDecodeError:
        return cls(f"image {member} {reason} Fix: {fix}", member=member, reason=reason, fix=fix)


class ImageTooLargeError(ImageDecodeError):
    """An image has more pixels than the configured limit, so it may be a decompression bomb."""


def open_image(source: bytes | IO[bytes], *, member: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image and read its header only, enforcing ``max_pixels``.

    Pillow's global ``Image.MAX_IMAGE_PIXELS`` check still runs inside
    ``Image.open``. Its warning is suppressed here, and its error (above twice that
    global) is reported as ``ImageTooLargeError`` like the per-call limit.
    NOTE: ``warnings.catch_warnings`` is not thread-safe on Python 3.11, so threads
    that open images at the same time may briefly see each other's warning filters.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except Image.DecompressionBombError as err:
        raise _too_large_error(member, f"is over Pillow's own decompression bomb limit: {err}") from err
    except _DECODE_ERRORS as err:
        raise _decode_failed_error(member, err) from err
    _check_pixel_count(image, member, max_pixels)
    return image


def _check_pixel_count(image: Image.Image, member: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        reason = f"is too large ({width}x{height} = {width * height} pixels), over the limit of {max_pixels} pixels that guards against decompression bombs."
        raise _too_large_error(member, reason)


def _too_large_error(member: str, reason: str) -> ImageTooLargeError:
    fix = "Downscale the image, or raise the max image pixels setting if the image is genuine."
    return ImageTooLargeError.for_member(member, reason, fix)


def _decode_failed_error(member: str, err: BaseException) -> ImageDecodeError:
    if isinstance(err, UnidentifiedImageError):
        # Pillow's own message names only the in-memory stream object.
        reason = "the data is not in an image format Pillow can read"
    else:
        reason = str(err) or type(err).__name__
    return ImageDecodeError.for_member(
        member,
        f"cannot be decoded: {reason}.",
        "Replace it with a valid JPEG or PNG file, or remove its line from the JSONL file.",
    )


def read_image_size(source: bytes | IO[bytes], *, member: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """Return ``(width, height)`` as displayed, after EXIF orientation, from the header alone."""
    image = open_image(source, member=member, max_pixels=max_pixels)
    return _oriented_size(image)


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION_TAG)
    except _DECODE_ERRORS:
        orientation = None
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return height, width
    return width, height


def check_image(data: bytes, *, member: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """Decode an image fully but cheaply to prove it is valid, and return its displayed ``(width, height)``.

    JPEGs are decoded at 1/8 scale with ``Image.draft``, which still reads every
    compressed byte, so truncated or corrupt files fail here as they would in training.
    """
    image = open_image(data, member=member, max_pixels=max_pixels)
    size = _oriented_size(image)
    try:
        image.draft("RGB", (1, 1))
        image.load()
    except _DECODE_ERRORS as err:
        raise _decode_failed_error(member, err) from err
    return size


def decode_image(
    data: bytes,
    *,
    member: str,
    target_short_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> Image.Image:
    """Decode an image to an upright RGB ``PIL.Image``.

    With ``target_short_side``, JPEGs are decoded at the smallest reduced scale
    (1/2, 1/4 or 1/8) whose sides are still at least that many pixels, which is
    faster and loses nothing for a later resize to that size. EXIF orientation is
    applied, and every mode is converted to RGB with transparency composited on white.
    """
    image = open_image(data, member=member, max_pixels=max_pixels)
    try:
        if target_short_side is not None:
            image.draft("RGB", (target_short_side, target_short_side))
        image.load()
        upright = ImageOps.exif_transpose(image)
        return to_rgb(upright)
    except _DECODE_ERRORS as err:
        raise _decode_failed_error(member, err) from err


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB, compositing transparency on a white background.

    16-bit greyscale (``I;16`` and its byte orders) is scaled down to 8 bits, where
    Pillow's own conversion would clip it at 255. 32-bit ``I`` and ``F`` images are
    still clipped to 0-255 by Pillow, because their value range is not recorded.
    """
    if image.mode.startswith("I;16"):
        return _sixteen_bit_to_rgb(image)
    if _has_transparency(image):
        return _composite_on_white(image)
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def _has_transparency(image: Image.Image) -> bool:
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return True
    return image.mode in ("P", "L", "RGB") and "transparency" in image.info


def _composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.uint16)
    eight_bit = (values >> 8).astype(np.uint8)
    return Image.fromarray(eight_bit).convert("RGB")


class ImageTransform:
    """The CLIP image preprocessing: resize the shortest side, center crop, rescale, normalize.

    It turns an RGB ``PIL.Image`` into a float32 tensor of shape ``(3, crop_height,
    crop_width)``, matching ``CLIPImageProcessor`` (Pillow backend). Only plain
    numbers are stored, so instances pickle into data loader worker processes.
    """

    def __init__(
        self,
        *,
        size: int,
        crop_height: int,
        crop_width: int,
        mean: Sequence[float],
        std: Sequence[float],
        resample: int = int(Image.Resampling.BICUBIC),
        rescale_factor: float = 1 / 255,
    ) -> None:
        if size < 1 or crop_height < 1 or crop_width < 1:
            raise ConfigError(f"image size {size} and crop {crop_height}x{crop_width} must be positive")
        if len(mean) != 3 or len(std) != 3 or any(value <= 0 for value in std):
            raise ConfigError(f"image mean {list(mean)} and std {list(std)} must have 3 values each, with std above 0")
        self.size = size
        self.crop_height = crop_height
        self.crop_width = crop_width
        self.mean = tuple(float(value) for value in mean)
        self.std = tuple(float(value) for value in std)
        self.resample = int(resample)
        self.rescale_factor = float(rescale_factor)

    @classmethod
    def from_image_processor(cls, processor: Any) -> ImageTransform:
        """Build the transform from a transformers ``CLIPImageProcessor``'s settings.

        Reads ``size.shortest_edge``, ``crop_size.height``/``width``, ``image_mean``,
        ``image_std``, ``resample`` and ``rescale_factor``. ``size`` and ``crop_size``
        may be transformers 5 ``SizeDict`` objects or plain dicts (transformers 4).
        Raises ConfigError for a processor that does not resize by shortest edge and center crop.
        """
        _require_clip_pipeline(processor)
        do_normalize = getattr(processor, "do_normalize", True)
        return cls(
            size=int(_size_field(processor.size, "shortest_edge")),
            crop_height=int(_size_field(processor.crop_size, "height")),
            crop_width=int(_size_field(processor.crop_size, "width")),
            mean=processor.image_mean if do_normalize else (0.0, 0.0, 0.0),
            std=processor.image_std if do_normalize else (1.0, 1.0, 1.0),
            resample=int(processor.resample),
            rescale_factor=processor.rescale_factor if getattr(processor, "do_rescale", True) else 1.0,
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        resized = self._resize_shortest_side(to_rgb(image))
        cropped = self._center_crop(resized)
        pixels = np.asarray(cropped, dtype=np.float32) * np.float32(self.rescale_factor)
        normalized = (pixels - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(normalized.transpose(2, 0, 1)))

    def _resize_shortest_side(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        # Same rounding as transformers: the long side is truncated, not rounded.
        if width <= height:
            new_size = (self.size, int(self.size * height / width))
        else:
            new_size = (int(self.size * width / height), self.size)
        return image.resize(new_size, resample=self.resample)

    def _center_crop(self, image: Image.Image) -> Image.Image:
        # Floor division puts the extra pixel of an odd margin at the bottom/right.
        # A crop larger than the image pads with black, as transformers does.
        left = (image.width - self.crop_width) // 2
        top = (image.height - self.crop_height) // 2
        return image.crop((left, top, left + self.crop_width, top + self.crop_height))

    def __repr__(self) -> str:
        return (
            f"ImageTransform(size={self.size}, crop={self.crop_height}x{self.crop_width}, "
            f"mean={self.mean}, std={self.std}, resample={self.resample})"
        )


def _require_clip_pipeline(processor: Any) -> None:
    if not getattr(processor, "do_resize", True) or not getattr(processor, "do_center_crop", True):
        raise ConfigError(
            f"image processor {type(processor).__name__} does not resize and center crop "
            f"(do_resize={getattr(processor, 'do_resize', None)}, do_center_crop={getattr(processor, 'do_center_crop', None)}), "
            "but only the CLIP preprocessing is supported. Fix: use a CLIPImageProcessor configuration."
        )


def _size_field(size: Any, key: str) -> Any:
    value = size.get(key) if isinstance(size, Mapping) or hasattr(size, "get") else getattr(size, key, None)
    if value is None:
        raise ConfigError(
            f"image processor size setting {size!r} has no {key!r}. Only shortest-edge resizing with a "
            "height x width center crop is supported. Fix: use a CLIPImageProcessor configuration."
        )
    return value
