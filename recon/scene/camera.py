"""Camera conventions, stated once for all of recon.

* **Axes**: OpenCV. The camera looks down its +z axis, +x points right in the
  image and +y points down.
* **Extrinsics**: ``world_to_camera`` is a 4x4 float64 rigid transform
  ``[R | t; 0 0 0 1]`` mapping homogeneous world points to camera points:
  ``X_cam = R @ X_world + t``. The camera centre is ``-R.T @ t``.
* **Intrinsics**: ``K`` is 3x3 in pixels, ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``.
  Pixel coordinates are continuous with the image's top-left corner at (0, 0),
  so the centre of pixel ``(i, j)`` (column, row) is ``(i + 0.5, j + 0.5)``;
  this is what COLMAP, nerfstudio and gsplat use.
* **Distortion**: OpenCV's ``(k1, k2, p1, p2, k3)`` applied to normalised
  image coordinates ``(x / z, y / z)``. Importers undistort images once, so
  every camera after import has no distortion.
* **Images**: float32 RGB in [0, 1], ``[H, W, 3]``.

Every importer converts into these conventions and every exporter out of them.
OpenGL, Blender and nerfstudio use camera-to-world matrices with the camera
looking down -z and +y up; :func:`world_to_camera_from_opengl` and
:func:`opengl_from_world_to_camera` convert between the two.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike

from recon.errors import InputError

# Flips y and z: OpenGL camera axes (x right, y up, z back) <-> OpenCV axes.
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])

DISTORTION_NAMES = ("k1", "k2", "p1", "p2", "k3")


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float, skew: float = 0.0) -> np.ndarray:
    """Build a 3x3 float64 pixel intrinsics matrix."""
    return np.array([[fx, skew, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def focal_from_fov(fov_radians: float, size_pixels: float) -> float:
    """Focal length in pixels for a full field of view across ``size_pixels``."""
    return 0.5 * size_pixels / np.tan(0.5 * fov_radians)


def world_to_camera_from_opengl(camera_to_world: np.ndarray) -> np.ndarray:
    """OpenGL / Blender / nerfstudio camera-to-world [4, 4] -> OpenCV world-to-camera [4, 4]."""
    c2w = _as_4x4(camera_to_world)
    return invert_rigid(c2w @ OPENGL_TO_OPENCV)


def opengl_from_world_to_camera(world_to_camera: np.ndarray) -> np.ndarray:
    """OpenCV world-to-camera [4, 4] -> OpenGL camera-to-world [4, 4] (inverse of the above)."""
    return invert_rigid(_as_4x4(world_to_camera)) @ OPENGL_TO_OPENCV


def scene_up(world_to_cameras: ArrayLike) -> np.ndarray:
    """The scene's up direction [3], unit: the mean image-up axis (OpenCV's -y) of the cameras [N, 4, 4], in the
    world. Photos are taken upright, so their mean up is the scene's."""
    w2c = np.asarray(world_to_cameras, dtype=np.float64)
    up = -w2c[:, 1, :3].mean(0)
    return up / max(float(np.linalg.norm(up)), 1e-12)


def quaternion_from_rotation(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) with w >= 0 of a rotation matrix [3, 3] (COLMAP's and viser's order)."""
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_quat()
    q = np.array([w, x, y, z])
    return -q if q[0] < 0 else q


def nearest_rotation(M: np.ndarray) -> np.ndarray:
    """The rotation nearest to the 3x3 matrix ``M`` in the Frobenius (chordal) sense: ``U diag(1, 1, det) V^T``."""
    U, _, Vt = np.linalg.svd(M)
    return U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Invert a 4x4 rigid transform exactly (R.T, -R.T t) rather than by LU."""
    R = T[:3, :3]
    t = T[:3, 3]
    out = np.eye(4, dtype=np.float64)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def transform_world_to_camera(world_to_camera: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """Express a camera in another world frame.

    ``similarity`` [4, 4] maps points of the current world frame to the new one
    (``s R_s X + t_s``, uniform scale ``s``). Returns the rigid world-to-camera
    of the same physical camera in the new frame: the centre moves with the
    similarity, the axes rotate with ``R_s``, and the image stays the same.
    """
    S = np.asarray(similarity, dtype=np.float64)
    s = np.cbrt(np.linalg.det(S[:3, :3]))
    R_s = S[:3, :3] / s
    R = world_to_camera[:3, :3] @ R_s.T
    c = S[:3, :3] @ camera_center(world_to_camera) + S[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R
    out[:3, 3] = -R @ c
    return out


def transform_points(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Points [N, 3] mapped by the affine part of a 4x4 transform (rigid or similarity)."""
    return points @ T[:3, :3].T + T[:3, 3]


def camera_center(world_to_camera: np.ndarray) -> np.ndarray:
    """Camera centre in world coordinates, [3]."""
    R = world_to_camera[:3, :3]
    return -R.T @ world_to_camera[:3, 3]


def viewing_direction(world_to_camera: np.ndarray) -> np.ndarray:
    """Unit optical axis (+z of the camera) in world coordinates, [3]."""
    return world_to_camera[2, :3] / np.linalg.norm(world_to_camera[2, :3])


def axes_normal_equations(centers: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A [3, 3], b [3]) whose solution ``A x = b`` is the point nearest (least squares) to every optical axis.

    The axes go through ``centers`` [N, 3] along unit ``directions`` [N, 3].
    """
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for c, d in zip(centers, directions):
        M = np.eye(3) - np.outer(d, d)
        A += M
        b += M @ c
    return A, b


def look_at(eye: np.ndarray, target: np.ndarray, up: ArrayLike = (0.0, 0.0, 1.0)) -> np.ndarray:
    """World-to-camera [4, 4] for a camera at ``eye`` looking at ``target``.

    ``up`` is the world direction that should appear upward in the image
    (that is, along the camera's -y). When it is parallel to the view
    direction another perpendicular is chosen.
    """
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    up = np.asarray(up, dtype=np.float64)
    if abs(np.dot(z, up) / np.linalg.norm(up)) > 1.0 - 1e-9:
        up = np.array([0.0, 1.0, 0.0]) if abs(z[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = np.cross(z, up)  # image right; y = z x x points image-down
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ eye
    return T


def compose_projection(K: np.ndarray, world_to_camera: np.ndarray) -> np.ndarray:
    """3x4 projection matrix ``P = K [R | t]``."""
    return K @ world_to_camera[:3, :4]


def decompose_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a 3x4 projection matrix into intrinsics and pose by RQ decomposition.

    ``P`` may be any non-zero multiple of ``K [R | t]`` (as DTU's ``pos_*.txt``
    and IDR's ``world_mat @ scale_mat`` are). Returns ``K`` [3, 3] with
    positive focal lengths and ``K[2, 2] == 1``, and a world-to-camera [4, 4]
    with ``det(R) == +1``. A non-uniform scale in ``P`` (as IDR's scale matrix
    is uniform, this does not happen in practice) would be absorbed into ``K``.
    """
    P = np.asarray(P, dtype=np.float64)
    if P.shape != (3, 4):
        raise ValueError(f"projection matrix must be 3x4, got {P.shape}")
    M = P[:, :3]
    if not np.all(np.isfinite(P)) or abs(np.linalg.det(M)) < 1e-12 * max(1.0, np.abs(M).max() ** 3):
        raise ValueError("projection matrix is singular or not finite")
    K, R = scipy.linalg.rq(M)
    # RQ is unique up to the signs of K's diagonal; make them positive.
    signs = np.diag(np.sign(np.diag(K)))
    K = K @ signs
    R = signs @ R
    t = np.linalg.solve(K, P[:, 3])
    if np.linalg.det(R) < 0:  # P was given up to a negative scale
        R = -R
        t = -t
    K = K / K[2, 2]
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return K, T


def project(points: np.ndarray, K: np.ndarray, world_to_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points [N, 3] to pixels [N, 2]; also returns camera depth z [N]."""
    X = np.asarray(points, dtype=np.float64)
    cam = transform_points(X, world_to_camera)
    z = cam[:, 2]
    uvw = cam @ K.T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = uvw[:, :2] / uvw[:, 2:3]
    return uv, z


def distort_normalized(xy: np.ndarray, distortion: np.ndarray) -> np.ndarray:
    """Apply OpenCV distortion ``(k1, k2, p1, p2, k3)`` to normalised coordinates [N, 2]."""
    k1, k2, p1, p2, k3 = (list(np.asarray(distortion, dtype=np.float64)) + [0.0] * 5)[:5]
    x = xy[:, 0]
    y = xy[:, 1]
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return np.stack([xd, yd], axis=-1)


def has_distortion(distortion: np.ndarray | None) -> bool:
    return distortion is not None and bool(np.any(np.abs(np.asarray(distortion)) > 0.0))


def check_pose(world_to_camera: np.ndarray, where: str) -> np.ndarray:
    """Return the pose as float64 [4, 4], or raise :class:`InputError` naming ``where``.

    Rejects NaN/Inf, a singular rotation block and one that is not a rotation
    (orthonormal within 1e-4, determinant +1).
    """
    T = np.asarray(world_to_camera, dtype=np.float64)
    if T.shape == (3, 4):
        T = np.vstack([T, [0.0, 0.0, 0.0, 1.0]])
    if T.shape != (4, 4):
        raise InputError(f"{where}: pose must be 4x4, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise InputError(f"{where}: pose contains NaN or Inf")
    R = T[:3, :3]
    det = np.linalg.det(R)
    if abs(det) < 1e-8:
        raise InputError(f"{where}: pose is not invertible (rotation block has determinant {det:.3g})")
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or det < 0:
        raise InputError(f"{where}: pose rotation is not orthonormal with determinant +1")
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0]):
        raise InputError(f"{where}: pose bottom row must be [0, 0, 0, 1]")
    return T


MAX_FIELD_OF_VIEW = 170.0  # degrees; a perspective lens sees less than 180 (a wider one is a fisheye)


def check_intrinsics(K: np.ndarray, where: str, width: int | None = None, height: int | None = None) -> np.ndarray:
    """Return ``K`` as float64 [3, 3], or raise :class:`InputError` naming ``where``.

    Rejects NaN/Inf and focal lengths that are not positive or, given the image's size, so short that a
    ``width`` x ``height`` image would span more than :data:`MAX_FIELD_OF_VIEW` degrees.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise InputError(f"{where}: intrinsics must be a finite 3x3 matrix")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"{where}: focal lengths must be positive, got fx={K[0, 0]:.4g}, fy={K[1, 1]:.4g}")
    least = 0.5 / np.tan(np.radians(MAX_FIELD_OF_VIEW / 2))
    if width is not None and height is not None and (K[0, 0] < least * width or K[1, 1] < least * height):
        raise InputError(f"{where}: focal lengths fx={K[0, 0]:.4g}, fy={K[1, 1]:.4g} pixels are too short for a "
                         f"{width}x{height} perspective image (a field of view over {MAX_FIELD_OF_VIEW:g} degrees)")
    return K


def check_distortion(distortion: np.ndarray, K: np.ndarray, width: int, height: int, where: str) -> None:
    """Raise :class:`InputError` unless OpenCV ``distortion`` (k1, k2, p1, p2, k3) is a lens's.

    A lens's distortion moves points away from (or towards) the principal point monotonically out to the
    image's corners, and moves no corner by more than the image's diagonal; coefficients that fold the image
    over itself or throw its corners far away (``k1 = 1e6``) are not a lens, and undistorting with them
    would make an image of nothing.
    """
    dist = np.asarray(distortion, dtype=np.float64)
    if not np.all(np.isfinite(dist)):
        raise InputError(f"{where}: distortion contains NaN or Inf")
    corners = np.array([[0.0, 0.0], [width, 0.0], [0.0, height], [width, height]])
    normalised = (corners - K[:2, 2]) / np.diag(K)[:2]
    steps = np.linspace(0.0, 1.0, 65)[1:]
    for corner, target in zip(normalised, corners):
        ray = distort_normalized(steps[:, None] * corner, dist)
        moved = np.linalg.norm((ray[-1] - corner) * np.diag(K)[:2])
        if np.any(np.diff(np.linalg.norm(ray, axis=1)) <= 0) or not moved < np.hypot(width, height):
            named = ", ".join(f"{n}={v:.4g}" for n, v in zip(DISTORTION_NAMES, dist) if v)
            raise InputError(f"{where}: distortion ({named}) is not a lens's: it folds the image or moves its corner "
                             f"({target[0]:g}, {target[1]:g}) farther than the image's diagonal")


def _as_4x4(T: np.ndarray) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape == (3, 4):
        T = np.vstack([T, [0.0, 0.0, 0.0, 1.0]])
    if T.shape != (4, 4):
        raise ValueError(f"expected a 4x4 or 3x4 matrix, got {T.shape}")
    return T
