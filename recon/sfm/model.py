"""What a reconstruction returns, and the check that refuses a geometry the photos cannot fix.

A :class:`Model` holds the registered photos' cameras (OpenCV, world-to-camera
[4, 4], ``K`` [3, 3] in pixels of the photo at its own size) and the sparse points.

Two geometries look confident and are wrong, so they are refused rather than
returned (:func:`refusal`). When every verified pair of registered photos is
explained by a homography as well as by epipolar geometry (COLMAP's
planar, panoramic and planar-or-panoramic configurations), the photos see one
plane or the camera only turned. Then

* with an unknown focal length (no EXIF), the focal length trades against the
  plane's tilt and distance, or a rotation fits any depth: bundle adjustment
  settles on one of many equally good answers;
* with a known focal length, a plane is fine, but if every pair is panoramic
  the camera did not move: depth, and with it every translation, is unobservable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HOMOGRAPHY = {"PLANAR", "PANORAMIC", "PLANAR_OR_PANORAMIC"}


@dataclass
class Model:
    """A reconstruction of some photos of one scene.

    ``cameras`` maps a photo's index to ``(K [3, 3], world_to_camera [4, 4])``;
    ``points`` [P, 3] and ``colors`` [P, 3] (RGB in [0, 1]) are the sparse
    points; ``reprojection_error`` is the mean over all observations, in pixels.
    """

    method: str
    cameras: dict[int, tuple[np.ndarray, np.ndarray]]
    points: np.ndarray
    colors: np.ndarray
    reprojection_error: float

    @property
    def registered(self) -> int:
        return len(self.cameras)

    def better_than(self, other: Model | None) -> bool:
        """More photos registered, or as many with a smaller reprojection error."""
        if other is None:
            return True
        return (self.registered, -self.reprojection_error) > (other.registered, -other.reprojection_error)


def from_reconstruction(rec, index_of: dict[str, int], method: str) -> Model:
    """A :class:`Model` of a ``pycolmap.Reconstruction`` whose image names map to photo indices by ``index_of``."""
    cameras: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for image in rec.images.values():
        if image.has_pose:
            w2c = np.eye(4)
            w2c[:3, :4] = image.cam_from_world().matrix()
            cameras[index_of[image.name]] = (np.asarray(image.camera.calibration_matrix(), dtype=np.float64), w2c)
    points = np.array([p.xyz for p in rec.points3D.values()], dtype=np.float64).reshape(-1, 3)
    colors = np.array([p.color for p in rec.points3D.values()], dtype=np.float64).reshape(-1, 3) / 255.0
    error = float(rec.compute_mean_reprojection_error()) if len(points) else 0.0
    return Model(method, cameras, points, colors, error)


def refusal(model: Model, configurations: dict[tuple[int, int], str], focal_known: bool) -> str | None:
    """Why ``model``'s geometry cannot be trusted (one line), or None.

    ``configurations`` maps a verified pair of photos to COLMAP's two-view
    configuration name; ``focal_known``: every registered photo's focal length came from EXIF.
    """
    among = [c for (i, j), c in configurations.items() if i in model.cameras and j in model.cameras]
    if not among or any(c not in HOMOGRAPHY for c in among):
        return None
    if not focal_known:
        return ("every pair of registered views is related by a homography (they see one plane, or the camera "
                "turned without moving) and the focal length is unknown (no EXIF): the focal length and the "
                "cameras' distances cannot be told apart; photograph depth off the plane from places apart, "
                "or use photos with EXIF")
    if all(c == "PANORAMIC" for c in among):
        return ("the camera turned but did not move between the photos: depth and positions cannot be recovered; "
                "take the photos from different places")
    return None
