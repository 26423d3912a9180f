"""Image and mask files: reading, checking, writing, down-sampling, undistortion.

Images in memory are float32 RGB in [0, 1], [H, W, 3]; masks are bool [H, W].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from recon.errors import InputError
from recon.scene.camera import distort_normalized

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted((p for p in folder.iterdir() if is_image(p)), key=lambda p: p.name)


def probe_image(path: Path) -> tuple[int, int]:
    """(width, height) of an image after decoding it fully; InputError if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image file is missing")
    try:
        with Image.open(path) as im:
            im.load()
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from None


def read_image(path: Path) -> np.ndarray:
    """RGB float32 [H, W, 3] in [0, 1]; alpha is dropped, grey is repeated."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
            mode = im.mode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from None
    scale = 65535.0 if arr.dtype == np.uint16 or mode.startswith("I;16") else 255.0
    arr = arr.astype(np.float32) / scale
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def read_mask(path: Path) -> np.ndarray:
    """Bool [H, W]: true where any channel is above half its range."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: cannot read mask ({exc})") from None
    top = 65535.0 if arr.dtype == np.uint16 else 255.0 if arr.dtype == np.uint8 else 1.0
    if arr.ndim == 3:
        arr = arr[:, :, :3].max(axis=2)
    return arr.astype(np.float32) > 0.5 * top


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
    channels = [ndimage.map_coordinates(image[:, :, c], coords, order=order, mode="constant") for c in range(image.shape[2])]
    return np.stack(channels, axis=1).reshape(h, w, image.shape[2]).astype(image.dtype)
