"""Do given cameras fit the photos? Feature matches between the photos, against the cameras' two-view geometry.

COLMAP verifies matches between two photos by the photos' own two-view geometry,
whatever cameras were given. Two right cameras put a verified match on the
epipolar line they predict, within a few pixels, and the point it triangulates
to in front of both. Cameras in another convention fail one or the other: a
rotation transposed moves the epipolar lines (a real capture stored so: 0 of
1263 matches within 4 pixels, 1227 with its rotations transposed back); OpenGL
axes read as OpenCV's, or camera-to-world read as world-to-camera, can keep the
lines of a sideways move but put the points behind the cameras.

Conventions are those of :mod:`recon.scene.camera` (OpenCV cameras, world_to_camera
4x4, K in pixels with the top-left corner of the photo at (0, 0), as COLMAP's keypoints).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recon.scene.camera import project
from recon.sfm.fewview import fundamental, sampson_error, tracks_from_matches, triangulate_pairs, triangulate_tracks
from recon.sfm.matching import CameraPrior, FeatureOptions, Photo, match

TOLERANCE = 0.004
"""Sampson distance (pixels, over both photos) a match may have from the cameras' epipolar geometry, as a share of
the pair's longer side (4 pixels at 1000)."""
MAX_IMAGE_SIZE = 1024
"""Features from the photos with their long side at most this many pixels: enough to judge, and quick (the caller
builds the feature options)."""


@dataclass(frozen=True)
class Fit:
    """Verified matches between the photos and how many of them the cameras explain, in all and per photo.

    A match is explained when it lies within the tolerance of the cameras' epipolar geometry and triangulates in
    front of both cameras. Pairs whose cameras share a centre (no epipolar geometry) are left out.
    """

    photos: int
    pairs: dict[tuple[int, int], tuple[int, int]]  # (i, j), i < j: (matches, consistent)
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    """[P, 3] world points of the explained matches, one per track (the explained matches of every pair joined
    where they share a keypoint), triangulated over all its photos and in front of each."""
    pixels: list[tuple[int, np.ndarray]] = field(default_factory=list)
    """Where ``points`` were seen, in order: (photo index, [n, 2] keypoints in that photo), each point in the first
    photo of its track."""

    @property
    def matches(self) -> int:
        return sum(m for m, _ in self.pairs.values())

    @property
    def consistent(self) -> int:
        return sum(c for _, c in self.pairs.values())

    @property
    def share(self) -> float:
        return self.consistent / self.matches if self.matches else 0.0

    def per_photo(self, leave_out: frozenset[int] = frozenset()) -> list[tuple[int, int]]:
        """(matches, consistent) of each photo over its pairs with the photos not in ``leave_out``."""
        out = np.zeros((self.photos, 2), dtype=np.int64)
        for (i, j), counts in self.pairs.items():
            if i not in leave_out and j not in leave_out:
                out[[i, j]] += counts
        return [(int(m), int(c)) for m, c in out]

    def unfit(self, min_matches: int, min_share: float) -> list[int]:
        """The photos whose cameras the matches do not explain, worst first: the photo of lowest share among those
        with ``min_matches`` matches and a share under ``min_share`` is set aside, its pairs left out, and the rest
        judged again (one bad camera spoils the pairs of its neighbours too)."""
        out: list[int] = []
        while True:
            counts = self.per_photo(frozenset(out))
            bad = [k for k, (m, c) in enumerate(counts) if k not in out and m >= min_matches and c < min_share * m]
            if not bad:
                return out
            out.append(min(bad, key=lambda k: counts[k][1] / counts[k][0]))


def epipolar_fit(photos: list[Photo], priors: list[CameraPrior], cameras: list[tuple[np.ndarray, np.ndarray]],
                 features: FeatureOptions, work: Path) -> Fit:
    """The fit of ``cameras`` (K [3, 3], world_to_camera [4, 4] per photo, K in the photo's own pixels) to the
    verified feature matches between every pair of ``photos`` (see :func:`recon.sfm.matching.match`: features only
    where a photo's mask allows, so that a background standing still while a turntable turns does not match as no
    motion), in the empty folder ``work``.

    Raises whatever pycolmap raises; the caller decides what a failure means.
    """
    import pycolmap

    pycolmap.logging.minloglevel = 3  # COLMAP says nothing; the caller reports
    corr = match(photos, priors, features, work)
    pairs: dict[tuple[int, int], tuple[int, int]] = {}
    explained: dict[tuple[int, int], np.ndarray] = {}
    tolerances = [TOLERANCE * max(priors[p.camera].width, priors[p.camera].height) for p in photos]
    for (i, j), pair in corr.pairs.items():
        (K_i, pose_i), (K_j, pose_j) = cameras[i], cameras[j]
        if np.linalg.norm((pose_j @ np.linalg.inv(pose_i))[:3, 3]) < 1e-9 * max(1.0, np.abs(pose_i[:3, 3]).max()):
            continue
        x_i, x_j = corr.keypoints[i][pair.matches[:, 0]], corr.keypoints[j][pair.matches[:, 1]]
        error = sampson_error(fundamental(K_i, pose_i, K_j, pose_j), x_i, x_j)
        points = triangulate_pairs((x_i - K_i[:2, 2]) / np.diag(K_i)[:2], (x_j - K_j[:2, 2]) / np.diag(K_j)[:2],
                                   pose_i, pose_j)
        in_front = np.ones(len(points), dtype=bool)
        for pose in (pose_i, pose_j):
            with np.errstate(invalid="ignore"):
                in_front &= points @ pose[2, :3] + pose[2, 3] > 0
        fits = (error <= max(tolerances[i], tolerances[j])) & in_front
        pairs[(i, j)] = (len(error), int(fits.sum()))
        explained[(i, j)] = pair.matches[fits]
    return Fit(len(photos), pairs, *_track_points(corr.keypoints, cameras, explained, tolerances))


def _track_points(keypoints: list[np.ndarray], cameras: list[tuple[np.ndarray, np.ndarray]],
                  matches: dict[tuple[int, int], np.ndarray],
                  tolerances: list[float]) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """(points [P, 3], pixels) of the tracks the explained ``matches`` form (see :class:`Fit`). A track is left out
    where it puts two keypoints of one photo together, where its point lies behind a camera that sees it, or where
    the point lands farther than ``tolerances`` pixels from the keypoint of a photo that sees it (two matches each on
    their pair's epipolar line can chain into a track no single point explains)."""
    tracks = tracks_from_matches([len(k) for k in keypoints], matches)
    if not len(tracks):
        return np.zeros((0, 3)), []
    seen = tracks >= 0
    Ks, poses = [K for K, _ in cameras], [pose for _, pose in cameras]
    points = triangulate_tracks(tracks, seen, keypoints, Ks, poses)
    keep = np.isfinite(points).all(axis=1)
    for v, (K, pose) in enumerate(cameras):
        uv, z = project(points, K, pose)
        observed = keypoints[v][np.maximum(tracks[:, v], 0)] if len(keypoints[v]) else np.zeros_like(uv)
        with np.errstate(invalid="ignore"):
            fits = (z > 0) & (np.linalg.norm(uv - observed, axis=1) <= tolerances[v])
        keep &= fits | ~seen[:, v]
    tracks, seen, points = tracks[keep], seen[keep], points[keep]
    first = seen.argmax(axis=1)
    order = np.argsort(first, kind="stable")
    pixels = [(int(k), keypoints[k][tracks[order[first[order] == k], k]]) for k in np.unique(first)]
    return points[order], pixels
