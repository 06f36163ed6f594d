"""Tests of image decoding and the CLIP image transform (images.py)."""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import skimage
import torch
from PIL import Image

from kubeclip.trainer.data.images import (
    ImageTooLargeError,
    ImageTransform,
    check_image,
    decode_image,
    read_image_size,
    to_rgb,
)
from kubeclip.trainer.errors import ConfigError, DatasetError

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
#: EXIF orientation 6: the stored image must be rotated 90 degrees clockwise for display.
ROTATE_CLOCKWISE = 6


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims the given size, with an empty pixel data chunk."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"") + png_chunk(b"IEND", b"")


def half_red_half_blue(width: int, height: int) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", (width, height), "blue")
    image.paste((255, 0, 0), (0, 0, width // 2, height))
    return image


# --- decode_image: modes ---------------------------------------------------------------


def test_decode_l_mode_to_rgb() -> None:
    image = decode_image(encode(Image.new("L", (4, 3), 77), "PNG"), member="gray.png")
    assert image.mode == "RGB"
    assert image.size == (4, 3)
    assert image.getpixel((0, 0)) == (77, 77, 77)


def test_decode_palette_to_rgb() -> None:
    palette_image = Image.new("RGB", (4, 4), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    image = decode_image(encode(palette_image, "PNG"), member="palette.png")
    assert image.mode == "RGB"
    assert image.getpixel((1, 1)) == (10, 200, 30)


def test_decode_palette_transparency_on_white() -> None:
    palette_image = Image.new("P", (4, 4), 0)
    palette_image.putpalette([0, 0, 0, 255, 0, 0])
    palette_image.putpixel((0, 0), 1)
    data = encode(palette_image, "PNG", transparency=0)
    image = decode_image(data, member="transparent.png")
    assert image.getpixel((0, 0)) == (255, 0, 0)
    assert image.getpixel((3, 3)) == (255, 255, 255)


def test_decode_rgba_composites_on_white() -> None:
    rgba = Image.new("RGBA", (2, 1), (0, 0, 255, 0))
    rgba.putpixel((1, 0), (0, 0, 255, 128))
    image = decode_image(encode(rgba, "PNG"), member="alpha.png")
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)
    red, green, blue = image.getpixel((1, 0))
    assert blue == 255
    assert 120 <= red <= 135
    assert red == green


def test_decode_rgb_color_key_on_white() -> None:
    rgb = Image.new("RGB", (2, 1), (0, 0, 0))
    rgb.putpixel((1, 0), (10, 20, 30))
    image = decode_image(encode(rgb, "PNG", transparency=(0, 0, 0)), member="keyed.png")
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((1, 0)) == (10, 20, 30)


def test_decode_la_composites_on_white() -> None:
    image = decode_image(encode(Image.new("LA", (2, 2), (0, 0)), "PNG"), member="la.png")
    assert image.getpixel((0, 0)) == (255, 255, 255)


def test_decode_bilevel_to_rgb() -> None:
    bilevel = Image.new("1", (3, 3), 0)
    bilevel.putpixel((1, 1), 1)
    image = decode_image(encode(bilevel, "PNG"), member="bilevel.png")
    assert image.getpixel((0, 0)) == (0, 0, 0)
    assert image.getpixel((1, 1)) == (255, 255, 255)


def test_decode_cmyk_jpeg_to_rgb() -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    image = decode_image(encode(cmyk, "JPEG", quality=95), member="cmyk.jpg")
    assert image.mode == "RGB"
    red, green, blue = image.getpixel((4, 4))
    assert red > 240
    assert green < 15
    assert blue < 15


def test_decode_sixteen_bit_scales_to_eight_bit() -> None:
    values = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    image = decode_image(encode(Image.fromarray(values), "PNG"), member="deep.png")
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_to_rgb_keeps_rgb_image() -> None:
    image = Image.new("RGB", (2, 2))
    assert to_rgb(image) is image


# --- decode_image: orientation, limits, draft, errors --------------------------------------


def exif_rotated_jpeg() -> bytes:
    """A 40x20 JPEG, left half red, that displays as 20x40 with red on top."""
    exif = Image.Exif()
    exif[0x0112] = ROTATE_CLOCKWISE
    return encode(half_red_half_blue(40, 20), "JPEG", exif=exif.tobytes(), quality=95)


def test_decode_applies_exif_orientation() -> None:
    image = decode_image(exif_rotated_jpeg(), member="rotated.jpg")
    assert image.size == (20, 40)
    top_red, _, top_blue = image.getpixel((10, 5))
    bottom_red, _, bottom_blue = image.getpixel((10, 35))
    assert top_red > 200
    assert top_blue < 60
    assert bottom_blue > 200
    assert bottom_red < 60


def test_read_image_size_applies_orientation() -> None:
    assert read_image_size(exif_rotated_jpeg(), member="rotated.jpg") == (20, 40)
    assert check_image(exif_rotated_jpeg(), member="rotated.jpg") == (20, 40)


def test_pixel_limit_rejects_large_image() -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageTooLargeError, match=r"image big\.png is too large \(100x100 = 10000 pixels\), over the limit of 9999 pixels.*Fix:"):
        decode_image(data, member="big.png", max_pixels=9_999)
    assert decode_image(data, member="big.png", max_pixels=10_000).size == (100, 100)


def test_pillow_bomb_error_becomes_too_large() -> None:
    header = png_header_only(20_000, 10_000)
    with pytest.raises(ImageTooLargeError, match=r"image bomb\.png is over Pillow's own decompression bomb limit"):
        check_image(header, member="bomb.png", max_pixels=10**12)


def test_pixel_limit_checked_before_decoding() -> None:
    with pytest.raises(ImageTooLargeError, match=r"3000x2000 = 6000000 pixels\), over the limit of 1000000"):
        read_image_size(png_header_only(3_000, 2_000), member="huge.png", max_pixels=1_000_000)


@pytest.mark.parametrize("target", [100, 224, 399])
def test_draft_decoding_keeps_target_size(target: int) -> None:
    data = encode(Image.new("RGB", (1000, 800), "green"), "JPEG")
    image = decode_image(data, member="large.jpg", target_short_side=target)
    assert min(image.size) >= target
    assert image.size[0] < 1000


def test_draft_decoding_of_small_image_keeps_full_size() -> None:
    data = encode(Image.new("RGB", (300, 200), "green"), "JPEG")
    assert decode_image(data, member="small.jpg", target_short_side=224).size == (300, 200)


def test_decode_garbage_names_member() -> None:
    with pytest.raises(DatasetError, match=r"image photos/x\.jpg cannot be decoded.*Fix: Replace it"):
        decode_image(b"\x00not an image", member="photos/x.jpg")


def test_decode_error_pickles() -> None:
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(encode(Image.new("RGB", (10, 10)), "PNG"), member="a.png", max_pixels=50)
    restored = pickle.loads(pickle.dumps(caught.value))
    assert type(restored) is ImageTooLargeError
    assert str(restored) == str(caught.value)
    assert restored.member == "a.png"
    assert restored.fix == caught.value.fix


def test_decode_truncated_jpeg_fails() -> None:
    data = encode(Image.new("RGB", (64, 64), "green"), "JPEG")[:300]
    with pytest.raises(DatasetError, match=r"image cut\.jpg cannot be decoded"):
        decode_image(data, member="cut.jpg")
    with pytest.raises(DatasetError, match=r"image cut\.jpg cannot be decoded"):
        check_image(data, member="cut.jpg")


# --- ImageTransform -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_processor():  # type: ignore[no-untyped-def]
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor()


def real_images() -> list[Image.Image]:
    chelsea = Image.open(SKIMAGE_DATA / "chelsea.png").convert("RGB")
    return [
        Image.open(SKIMAGE_DATA / "astronaut.png").convert("RGB"),
        chelsea,
        chelsea.transpose(Image.Transpose.ROTATE_90),
        Image.open(SKIMAGE_DATA / "coffee.png").convert("RGB"),
        Image.open(SKIMAGE_DATA / "coins.png").convert("RGB"),
    ]


def test_transform_matches_clip_processor(clip_processor) -> None:  # type: ignore[no-untyped-def]
    transform = ImageTransform.from_image_processor(clip_processor)
    for image in real_images():
        expected = clip_processor(images=image, return_tensors="pt").pixel_values[0]
        actual = transform(image)
        assert actual.dtype == torch.float32
        assert actual.shape == (3, 224, 224)
        assert torch.allclose(actual, expected, atol=1e-4), f"max difference {(actual - expected).abs().max()} for size {image.size}"


def test_transform_custom_sizes_match_processor() -> None:
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 48, "width": 56}, resample=Image.Resampling.BILINEAR)
    transform = ImageTransform.from_image_processor(processor)
    image = real_images()[1]
    expected = processor(images=image, return_tensors="pt").pixel_values[0]
    actual = transform(image)
    assert actual.shape == (3, 48, 56)
    assert torch.allclose(actual, expected, atol=1e-4)


def test_transform_pickles() -> None:
    transform = ImageTransform(size=32, crop_height=32, crop_width=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    restored = pickle.loads(pickle.dumps(transform))
    image = real_images()[0]
    assert torch.equal(restored(image), transform(image))


def test_transform_converts_gray_input() -> None:
    transform = ImageTransform(size=8, crop_height=8, crop_width=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    output = transform(Image.new("L", (16, 12), 255))
    assert output.shape == (3, 8, 8)
    assert torch.allclose(output, torch.ones(3, 8, 8))


def test_transform_rejects_processor_without_crop() -> None:
    from transformers import CLIPImageProcessor

    with pytest.raises(ConfigError, match="do_center_crop=False"):
        ImageTransform.from_image_processor(CLIPImageProcessor(do_center_crop=False))


def test_transform_rejects_bad_std() -> None:
    with pytest.raises(ConfigError, match="std"):
        ImageTransform(size=8, crop_height=8, crop_width=8, mean=(0.0, 0.0, 0.0), std=(1.0, 0.0, 1.0))
