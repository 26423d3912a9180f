"""Do given cameras fit the photos? Feature matches between the photos, against the cameras' epipolar geometry.

COLMAP verifies matches between two photos by the photos' own two-view geometry,
whatever cameras were given. Two right cameras put a verified match on the
epipolar line they predict, within a few pixels; cameras in another convention
(a rotation transposed, camera-to-world read as world-to-camera, OpenGL axes
read as OpenCV's) put next to none there. A real capture whose cameras were
stored with every rotation transposed: 0 of 1263 matches within 4 pixels, 1227
with the rotations transposed back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.sfm.fewview import fundamental, sampson_error
from recon.sfm.matching import CameraPrior, FeatureOptions, Photo, match

TOLERANCE = 0.004
"""Pixels a match may lie off its epipolar line, as a share of the photo's long side (4 pixels at 1000)."""
MAX_IMAGE_SIZE = 1024
"""Features from the photos with their long side at most this many pixels: enough to judge, and quick (the caller
builds the feature options)."""


@dataclass(frozen=True)
class Fit:
    """How many verified matches of how many photo pairs lie on the epipolar lines the cameras predict."""

    pairs: int
    matches: int
    consistent: int

    @property
    def share(self) -> float:
        return self.consistent / self.matches if self.matches else 0.0


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
    matches = consistent = 0
    for (i, j), pair in corr.pairs.items():
        (K_i, pose_i), (K_j, pose_j) = cameras[i], cameras[j]
        F = fundamental(K_i, pose_i, K_j, pose_j)
        error = sampson_error(F, corr.keypoints[i][pair.matches[:, 0]], corr.keypoints[j][pair.matches[:, 1]])
        prior = priors[photos[i].camera]
        matches += len(error)
        consistent += int((error <= TOLERANCE * max(prior.width, prior.height)).sum())
    return Fit(len(corr.pairs), matches, consistent)
