"""Image and mask files: reading, checking, writing, down-sampling, undistortion.

Images in memory are float32 RGB in [0, 1], [H, W, 3]; masks are bool [H, W].
A file is read as an image viewer shows it: its EXIF orientation is applied
(a portrait photo stored landscape is upright, and its size is the upright
size), and every PIL mode is converted to RGB by its meaning (palette
entries, CMYK inks, 1-bit black and white, grey repeated). Alpha is dropped
without compositing. 16-bit samples (modes ``I;16*`` and ``I``, as PNG's
16-bit grey is read) span [0, 65535]; floating-point samples (mode ``F``)
span [0, 1]. Samples outside the range are clipped; NaN or infinite samples
are an error.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from recon.errors import InputError
from recon.scene.camera import distort_normalized

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# What PIL raises on a damaged or hostile file (a bad header, truncated data, broken EXIF, a decompression bomb).
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error,
                 Image.DecompressionBombError)
EXIF_ORIENTATION = 0x0112
ROTATED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
PREMULTIPLIED = {"La": "LA", "RGBa": "RGBA"}  # PIL converts these to RGB only through their plain forms


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted((p for p in folder.iterdir() if is_image(p)), key=lambda p: p.name)


def probe_image(path: Path) -> tuple[int, int]:
    """(width, height) of an image, upright, after decoding it fully; InputError if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image file is missing")
    try:
        with Image.open(path) as im:
            im.load()
            return upright_size(im)
    except DECODE_ERRORS as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from None


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image, upright, from its header alone (pixels are checked on import)."""
    try:
        with Image.open(path) as im:
            return upright_size(im)
    except DECODE_ERRORS as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from None


def upright_size(im: Image.Image) -> tuple[int, int]:
    """The size of ``im`` once its EXIF orientation is applied."""
    w, h = im.size
    return (h, w) if im.getexif().get(EXIF_ORIENTATION, 1) in ROTATED_ORIENTATIONS else (w, h)


def stored_upright_rgb(path: Path) -> bool:
    """True when the file's pixels are already what :func:`read_image` makes of them: 8-bit RGB or grey, upright.

    Other readers (COLMAP's) can then be given the file itself; otherwise they need a converted copy.
    """
    try:
        with Image.open(path) as im:
            return im.mode in ("RGB", "L") and im.getexif().get(EXIF_ORIENTATION, 1) == 1
    except DECODE_ERRORS as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from None


def read_image(path: Path) -> np.ndarray:
    """RGB float32 [H, W, 3] in [0, 1], upright (see the module's docstring for how each mode converts)."""
    try:
        with Image.open(path) as im:
            return to_rgb(ImageOps.exif_transpose(im), path)
    except DECODE_ERRORS as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from None


def to_rgb(im: Image.Image, path: Path | str = "image") -> np.ndarray:
    """RGB float32 [H, W, 3] in [0, 1] of a PIL image in any mode; ``path`` names it in errors."""
    if im.mode in SIXTEEN_BIT_MODES or im.mode == "F":
        grey = np.asarray(im, dtype=np.float32)
        if not np.all(np.isfinite(grey)):
            raise InputError(f"{path}: image has NaN or infinite samples")
        grey = np.clip(grey / (1.0 if im.mode == "F" else 65535.0), 0.0, 1.0)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    try:
        rgb = im.convert(PREMULTIPLIED.get(im.mode, im.mode)).convert("RGB")
    except ValueError as exc:
        raise InputError(f"{path}: cannot convert image mode {im.mode} to RGB ({exc})") from None
    return np.asarray(rgb, dtype=np.float32) / 255.0


def read_mask(path: Path) -> np.ndarray:
    """Bool [H, W], upright: true where any colour channel is above half its range (alpha is ignored)."""
    try:
        with Image.open(path) as im:
            return to_rgb(ImageOps.exif_transpose(im), path).max(axis=2) > 0.5
    except DECODE_ERRORS as exc:
        raise InputError(f"{path}: cannot read mask ({exc})") from None


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(image, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def write_image(path: Path, image: np.ndarray) -> None:
    """Write float [0, 1] (or uint8) RGB as PNG/JPEG by the path's suffix."""
    arr = image if image.dtype == np.uint8 else to_uint8(image)
    Image.fromarray(arr).save(path)


def write_mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)


def downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Area-average down-sampling by an integer factor (edges that do not divide are cropped)."""
    if factor == 1:
        return image
    h, w = image.shape[0] // factor, image.shape[1] // factor
    cropped = image[: h * factor, : w * factor].astype(np.float32)
    shape = (h, factor, w, factor) + image.shape[2:]
    return cropped.reshape(shape).mean(axis=(1, 3))


def undistort(image: np.ndarray, K: np.ndarray, distortion: np.ndarray, order: int = 1) -> np.ndarray:
    """Resample an image taken with OpenCV distortion into the ideal pinhole image of the same ``K``.

    Each output pixel centre is mapped through the forward distortion model to
    where it lies in the input, which is then sampled (bilinear for images,
    ``order=0`` for masks). Pixels that map outside the input are black.
    """
    h, w = image.shape[:2]
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    x = (u - K[0, 2] - K[0, 1] * (v - K[1, 2]) / K[1, 1]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    xd = distort_normalized(np.stack([x.ravel(), y.ravel()], axis=1), distortion)
    ud = K[0, 0] * xd[:, 0] + K[0, 1] * xd[:, 1] + K[0, 2] - 0.5
    vd = K[1, 1] * xd[:, 1] + K[1, 2] - 0.5
    coords = np.stack([vd, ud])
    if image.ndim == 2:
        return ndimage.map_coordinates(image, coords, order=order, mode="constant").reshape(h, w)
    channels = [ndimage.map_coordinates(image[:, :, c], coords, order=order, mode="constant")
                for c in range(image.shape[2])]
    return np.stack(channels, axis=1).reshape(h, w, image.shape[2]).astype(image.dtype)
