"""Small dataset archives for tests, built from photographs that ship with scikit-image.

``build_tinted_photos_zip`` tints crops of real photos with one of four colours and
captions each with its colour. A tiny randomly initialised model learns colour
within a few dozen steps and it carries over to held-out images, so tests can
demand that training improves validation figures without running for minutes.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png")
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
_CAPTION_FORMS = ("a {colour} tinted photograph", "a picture with a strong {colour} colour cast", "{colour} light over the whole scene")


def photo_paths() -> list[Path]:
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    return [folder / name for name in PHOTOS if (folder / name).exists()]


def tinted_photo(photo: Image.Image, colour: tuple[int, int, int], crop_index: int) -> Image.Image:
    width, height = photo.size
    side = min(width, height) // 2
    left = (crop_index * 37) % max(1, width - side)
    top = (crop_index * 53) % max(1, height - side)
    crop = np.asarray(photo.convert("RGB").crop((left, top, left + side, top + side)).resize((96, 96)), dtype=np.float32)
    tinted = 0.45 * crop + 0.55 * np.array(colour, dtype=np.float32)
    return Image.fromarray(tinted.clip(0, 255).astype(np.uint8))


def build_tinted_photos_zip(path: Path, count: int = 48) -> Path:
    """Write ``count`` tinted photo crops with three colour captions each; return ``path``."""
    photos = [Image.open(photo) for photo in photo_paths()]
    colours = list(COLOURS.items())
    lines = []
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(count):
            name, rgb = colours[index % len(colours)]
            image = tinted_photo(photos[index % len(photos)], rgb, index)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=90)
            member = f"images/{index:03d}.jpg"
            archive.writestr(member, buffer.getvalue())
            lines.append(json.dumps({"image": member, "captions": [form.format(colour=name) for form in _CAPTION_FORMS]}))
        archive.writestr("captions.jsonl", "\n".join(lines) + "\n")
    return path
