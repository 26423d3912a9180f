"""What a photo's EXIF says about its camera: the model and the focal length in pixels.

Structure from motion groups photos into cameras by size and by these facts
(photos of one size from one camera model at one focal length share
intrinsics) and takes the focal length as its prior. Where EXIF is missing or
incomplete, each fact is ``None`` and the photos are grouped by size alone.

The focal length in pixels comes from, in order of preference:

* ``FocalLengthIn35mmFilm``: the 35 mm-equivalent focal length refers to the
  diagonal of a 36 x 24 mm frame (CIPA DC-008), so ``f_px = f35 * diagonal_px / 43.27``;
* ``FocalLength`` (mm) with ``FocalPlaneXResolution`` and its unit: the
  sensor's pixels per millimetre, scaled when the photo was resized from the
  ``PixelXDimension`` the camera wrote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

_EXIF_IFD = 0x8769
_MAKE, _MODEL = 0x010F, 0x0110
_FOCAL_LENGTH, _FOCAL_35MM = 0x920A, 0xA405
_FOCAL_PLANE_X_RESOLUTION, _FOCAL_PLANE_UNIT = 0xA20E, 0xA210
_PIXEL_X_DIMENSION = 0xA002
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # EXIF resolution units: inch, cm, mm, micrometre
_FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)


@dataclass(frozen=True)
class ExifCamera:
    """The camera facts of one photo: ``model`` ("make model", or None) and ``focal_px`` (or None)."""

    model: str | None
    focal_px: float | None


def read_camera(path: Path, width: int, height: int) -> ExifCamera:
    """The EXIF camera facts of the photo at ``path``, which is ``width`` x ``height`` pixels."""
    try:
        with Image.open(path) as im:
            exif = im.getexif()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return ExifCamera(None, None)
    tags = {**dict(exif), **dict(exif.get_ifd(_EXIF_IFD))}
    model = " ".join(str(tags[t]).strip().strip("\x00") for t in (_MAKE, _MODEL) if t in tags) or None
    return ExifCamera(model, _focal_px(tags, width, height))


def _focal_px(tags: dict, width: int, height: int) -> float | None:
    f35 = _number(tags.get(_FOCAL_35MM))
    if f35:
        return f35 * math.hypot(width, height) / _FULL_FRAME_DIAGONAL_MM
    f_mm = _number(tags.get(_FOCAL_LENGTH))
    resolution = _number(tags.get(_FOCAL_PLANE_X_RESOLUTION))
    unit = _UNIT_MM.get(int(_number(tags.get(_FOCAL_PLANE_UNIT)) or 2))
    if not (f_mm and resolution and unit):
        return None
    pixels_per_mm = resolution / unit
    written_width = _number(tags.get(_PIXEL_X_DIMENSION))
    resized = width / written_width if written_width else 1.0
    return f_mm * pixels_per_mm * resized


def _number(value) -> float | None:
    """An EXIF number (int, float or rational) as a positive float, else None."""
    try:
        out = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return out if math.isfinite(out) and out > 0 else None
