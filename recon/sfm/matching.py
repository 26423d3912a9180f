"""SIFT features of a few photos and verified matches between every pair (COLMAP through pycolmap).

Photos are read at their own resolution, capped at ``max_image_size`` on the
long side (COLMAP resizes for detection and returns keypoints in the photo's
own pixels), whatever size the views are trained at. Photos that share a
camera (one size, one EXIF model and focal length) share intrinsics: recon
writes each camera to COLMAP's database with its focal-length prior, then
extracts every camera's photos against it. A mask, where a view has one,
limits features to the object (dilated by 2% of the long side): on a
turntable the background stands still and would match as a camera that did
not move.

Matching is exhaustive (few photos), with COLMAP's two-view verification
(fundamental, essential and homography matrices; the configuration that
explains the inliers best). The scratch folder holds COLMAP's database and
links to the photos; nothing of COLMAP's leaks out but :class:`Correspondences`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from recon.io import exif as exif_io
from recon.io import images as image_io

# Two-view configurations whose inliers carry geometry; the others (degenerate, watermark) are dropped.
USABLE = {"CALIBRATED", "UNCALIBRATED", "PLANAR", "PANORAMIC", "PLANAR_OR_PANORAMIC", "MULTIPLE"}
MASK_DILATION = 0.02


@dataclass(frozen=True)
class CameraPrior:
    """One camera's intrinsics before SfM: its photos' size and a focal length in pixels.

    ``from_exif`` says the focal length was read from EXIF; otherwise it is
    COLMAP's default guess (1.2 times the long side) and only a starting point.
    """

    width: int
    height: int
    focal: float
    from_exif: bool


@dataclass(frozen=True)
class Photo:
    """One photo for SfM: the file at its own resolution, an optional mask of where features may lie, its camera."""

    path: Path
    mask: Path | None
    camera: int  # index into the list of CameraPrior


@dataclass(frozen=True)
class FeatureOptions:
    """How features are detected and matched; see :class:`recon.config.PosesConfig` for each field."""

    max_image_size: int = 3200
    max_features: int = 8192
    upsample: bool = False
    affine: bool = False
    guided: bool = False
    min_inliers: int = 15

    def describe(self) -> str:
        parts = ["SIFT from the image up-sampled 2x" if self.upsample else "SIFT"]
        if self.affine:
            parts.append("affine-covariant with domain-size pooling")
        if self.guided:
            parts.append("guided matching")
        return ", ".join(parts)


@dataclass
class Pair:
    """The verified matches of two photos: ``matches`` [M, 2] keypoint indices, COLMAP's ``configuration`` name."""

    matches: np.ndarray
    configuration: str


@dataclass
class Correspondences:
    """Keypoints of every photo and verified matches of every pair that has any.

    ``keypoints[i]`` is [N_i, 2] float64, pixels of photo ``i`` at its own size;
    ``pairs[(i, j)]`` (i < j) holds the matches between photos ``i`` and ``j``.
    ``image_dir`` holds the photos under COLMAP's names (``names[i]``),
    ``database`` is COLMAP's database of them (for COLMAP's own mappers).
    """

    keypoints: list[np.ndarray]
    pairs: dict[tuple[int, int], Pair]
    cameras: list[CameraPrior]
    photo_cameras: list[int]
    names: list[str]
    image_dir: Path
    database: Path

    def best_inliers(self, i: int) -> int:
        """The most verified matches photo ``i`` has with any other photo (0 if none)."""
        return max((len(p.matches) for key, p in self.pairs.items() if i in key), default=0)


def camera_priors(paths: list[Path]) -> tuple[list[CameraPrior], list[int]]:
    """The cameras of photos at ``paths``, and each photo's camera index.

    Photos share a camera when they share their size, EXIF camera model and
    EXIF focal length (so photos without EXIF share one per size). The
    focal-length prior is EXIF's, else 1.2 times the long side (COLMAP's guess).
    """
    cameras: list[CameraPrior] = []
    keys: dict[tuple, int] = {}
    photo_cameras = []
    for path in paths:
        width, height = image_io.header_size(path)  # the pixels were checked when the scene was imported
        exif = exif_io.read_camera(path, width, height)
        key = (width, height, exif.model, None if exif.focal_px is None else round(exif.focal_px, 1))
        if key not in keys:
            keys[key] = len(cameras)
            focal = exif.focal_px if exif.focal_px is not None else 1.2 * max(width, height)
            cameras.append(CameraPrior(width, height, focal, exif.focal_px is not None))
        photo_cameras.append(keys[key])
    return cameras, photo_cameras


def match(photos: list[Photo], cameras: list[CameraPrior], options: FeatureOptions, root: Path) -> Correspondences:
    """Detect features in ``photos`` and verify matches between every pair, in the empty folder ``root``.

    Raises whatever pycolmap raises; the caller turns it into one line.
    """
    import pycolmap

    image_dir, mask_dir = root / "images", root / "masks"
    image_dir.mkdir(parents=True)
    names = []
    for i, photo in enumerate(photos):
        name = _place(photo.path, image_dir, f"{i:04d}")
        if photo.mask is not None:
            mask_dir.mkdir(exist_ok=True)
            width, height = cameras[photo.camera].width, cameras[photo.camera].height
            Image.fromarray(_dilated_mask(photo.mask, width, height)).save(mask_dir / f"{name}.png")
        names.append(name)
    database = root / "database.db"
    db = pycolmap.Database.open(str(database))
    try:
        camera_ids = [db.write_camera(_colmap_camera(c)) for c in cameras]
    finally:
        db.close()

    extraction = pycolmap.FeatureExtractionOptions()
    extraction.use_gpu = False
    extraction.num_threads = 1  # photos in order: with several threads COLMAP numbers them as they finish, and the
    # numbering orients each pair's verification, so the same photos gave different matches and cameras run to run
    extraction.max_image_size = options.max_image_size
    extraction.sift.max_num_features = options.max_features
    extraction.sift.first_octave = -1 if options.upsample else 0
    if options.upsample:
        extraction.sift.peak_threshold = 0.004
    extraction.sift.estimate_affine_shape = options.affine
    extraction.sift.domain_size_pooling = options.affine
    for index, camera_id in enumerate(camera_ids):
        members = [(n, p) for n, p in zip(names, photos) if p.camera == index]
        group = [n for n, _ in members]
        reader = pycolmap.ImageReaderOptions()
        reader.existing_camera_id = camera_id
        if any(p.mask is not None for _, p in members):
            reader.mask_path = str(mask_dir)
        pycolmap.extract_features(database, image_dir, image_names=group, camera_mode=pycolmap.CameraMode.SINGLE,
                                  reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)

    matching = pycolmap.FeatureMatchingOptions()
    matching.use_gpu = False
    matching.guided_matching = options.guided
    verification = pycolmap.TwoViewGeometryOptions()
    verification.min_num_inliers = options.min_inliers
    verification.ransac.random_seed = 0  # repeatable: a random seed per run let a borderline photo in or out
    pycolmap.match_exhaustive(database, matching_options=matching, verification_options=verification,
                              device=pycolmap.Device.cpu)
    return _read(database, names, cameras, [p.camera for p in photos], image_dir)


def _read(database: Path, names: list[str], cameras: list[CameraPrior], photo_cameras: list[int],
          image_dir: Path) -> Correspondences:
    import pycolmap

    db = pycolmap.Database.open(str(database))
    try:
        index_of = {im.image_id: names.index(im.name) for im in db.read_all_images()}
        keypoints = [np.zeros((0, 2)) for _ in names]
        for image_id, i in index_of.items():
            keypoints[i] = np.asarray(db.read_keypoints(image_id), dtype=np.float64)[:, :2]
        pairs: dict[tuple[int, int], Pair] = {}
        for pair_id, geometry in zip(*db.read_two_view_geometries()):
            configuration = pycolmap.TwoViewGeometryConfiguration(geometry.config).name
            matches = np.asarray(geometry.inlier_matches, dtype=np.int64).reshape(-1, 2)
            if configuration not in USABLE or len(matches) == 0:
                continue
            a, b = (index_of[k] for k in pycolmap.pair_id_to_image_pair(pair_id))
            pairs[(a, b) if a < b else (b, a)] = Pair(matches if a < b else matches[:, ::-1].copy(), configuration)
    finally:
        db.close()
    return Correspondences(keypoints, pairs, cameras, photo_cameras, names, image_dir, database)


def _colmap_camera(prior: CameraPrior):
    import pycolmap

    camera = pycolmap.Camera.create_from_model_name(0, "SIMPLE_PINHOLE", prior.focal, prior.width, prior.height)
    camera.has_prior_focal_length = prior.from_exif
    return camera


def _dilated_mask(path: Path, width: int, height: int) -> np.ndarray:
    """uint8 [H, W] of the photo's size: 255 where features may lie (the mask grown by MASK_DILATION of the long
    side)."""
    mask = image_io.read_mask(path)
    if mask.shape != (height, width):
        mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))
    grow = MASK_DILATION * max(width, height)
    near = ndimage.distance_transform_edt(~mask) <= grow
    return np.where(near, 255, 0).astype(np.uint8)


def _place(src: Path, folder: Path, stem: str) -> str:
    """Put the photo ``src`` in ``folder`` as COLMAP should read it; returns its name there.

    COLMAP reads the stored pixels as they are, so a photo that is not stored
    as upright 8-bit RGB (EXIF-rotated, 16-bit, palette, alpha) gets the
    upright RGB copy recon itself sees; others are linked.
    """
    if not image_io.stored_upright_rgb(src):
        image_io.write_image(folder / f"{stem}.png", image_io.read_image(src))
        return f"{stem}.png"
    name = f"{stem}{src.suffix.lower()}"
    try:
        os.symlink(src.resolve(), folder / name)
    except OSError:
        shutil.copy(src, folder / name)
    return name
