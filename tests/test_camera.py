"""Camera conventions: conversions round-trip and known points project where they must."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from recon.errors import InputError
from recon.io.images import undistort
from recon.scene.camera import (
    camera_center,
    check_pose,
    compose_projection,
    decompose_projection,
    distort_normalized,
    intrinsics_matrix,
    look_at,
    opengl_from_world_to_camera,
    project,
    transform_world_to_camera,
    world_to_camera_from_opengl,
)


def random_pose(rng: np.random.Generator) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
    T[:3, 3] = rng.normal(size=3) * 3
    return T


seeds = st.integers(min_value=0, max_value=2**31 - 1)


@given(seeds)
@settings(max_examples=50, deadline=None)
def test_opengl_round_trip(seed):
    c2w_gl = random_pose(np.random.default_rng(seed))
    w2c = world_to_camera_from_opengl(c2w_gl)
    np.testing.assert_allclose(opengl_from_world_to_camera(w2c), c2w_gl, atol=1e-12)


def test_opengl_axes_flip_y_and_z():
    # An OpenGL camera at the origin looking down -z sees a point at z=-5 in front of it.
    w2c = world_to_camera_from_opengl(np.eye(4))
    _, depth = project(np.array([[0.0, 0.0, -5.0]]), np.eye(3), w2c)
    assert depth[0] == pytest.approx(5.0)
    # OpenGL +y (up) is image-up, so a point above the axis lands above the principal point.
    uv, _ = project(np.array([[0.0, 1.0, -5.0]]), intrinsics_matrix(100, 100, 50, 50), w2c)
    assert uv[0, 1] < 50


@given(seeds, st.floats(min_value=-5, max_value=5).filter(lambda s: abs(s) > 1e-3))
@settings(max_examples=50, deadline=None)
def test_projection_decomposition_recovers_intrinsics_and_pose(seed, scale):
    rng = np.random.default_rng(seed)
    K = intrinsics_matrix(*rng.uniform(300, 3000, 2), *rng.uniform(100, 900, 2), skew=rng.uniform(-2, 2))
    w2c = random_pose(rng)
    K2, w2c2 = decompose_projection(scale * compose_projection(K, w2c))
    np.testing.assert_allclose(K2, K, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(w2c2, w2c, atol=1e-9)


def test_known_points_project_to_known_pixels():
    K = intrinsics_matrix(500, 400, 320, 240)
    w2c = look_at(np.array([0.0, -4.0, 0.0]), np.zeros(3))
    pts = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    uv, z = project(pts, K, w2c)
    np.testing.assert_allclose(uv[0], [320, 240], atol=1e-9)  # the target is at the principal point
    np.testing.assert_allclose(z, [4, 4, 4], atol=1e-12)
    np.testing.assert_allclose(uv[1], [320 + 500 / 4, 240], atol=1e-9)  # +x world is image-right
    np.testing.assert_allclose(uv[2], [320, 240 - 400 / 4], atol=1e-9)  # +z world (up) is image-up
    np.testing.assert_allclose(camera_center(w2c), [0, -4, 0], atol=1e-12)


@given(seeds)
@settings(max_examples=30, deadline=None)
def test_similarity_change_of_frame_keeps_the_image(seed):
    rng = np.random.default_rng(seed)
    K = intrinsics_matrix(800, 800, 400, 300)
    w2c = random_pose(rng)
    S = np.eye(4)
    S[:3, :3] = rng.uniform(0.1, 200) * Rotation.random(random_state=seed).as_matrix()
    S[:3, 3] = rng.normal(size=3) * 50
    pts = camera_center(w2c) + rng.normal(size=(20, 3)) + 5 * w2c[2, :3]
    uv, _ = project(pts, K, w2c)
    pts_new = pts @ S[:3, :3].T + S[:3, 3]
    uv_new, _ = project(pts_new, K, transform_world_to_camera(w2c, S))
    np.testing.assert_allclose(uv_new, uv, atol=1e-6)


def test_check_pose_rejects_nan_and_singular_and_names_the_file():
    bad = np.eye(4)
    bad[0, 1] = np.nan
    with pytest.raises(InputError, match="frames/0.*NaN"):
        check_pose(bad, "frames/0")
    singular = np.eye(4)
    singular[2, 2] = 0.0
    with pytest.raises(InputError, match="not invertible"):
        check_pose(singular, "cam.txt")
    with pytest.raises(InputError, match="orthonormal"):
        check_pose(np.diag([2.0, 1.0, 1.0, 1.0]), "cam.txt")


def _undistort_points(uv: np.ndarray, K: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Ideal pixel of each distorted pixel (fixed-point inverse of the distortion model)."""
    xd = np.stack([(uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1]], axis=1)
    x = xd.copy()
    for _ in range(50):
        x = x - (distort_normalized(x, dist) - xd)
    return np.stack([x[:, 0] * K[0, 0] + K[0, 2], x[:, 1] * K[1, 1] + K[1, 2]], axis=1)


def test_undistortion_recovers_the_ideal_image():
    K = intrinsics_matrix(120, 120, 80, 60)
    dist = np.array([-0.12, 0.03, 0.002, -0.001, 0.0])
    pattern = lambda uv: 0.5 + 0.5 * np.sin(uv[:, 0] / 6.0) * np.cos(uv[:, 1] / 7.0)  # noqa: E731
    v, u = np.mgrid[0:120, 0:160] + 0.5
    grid = np.stack([u.ravel(), v.ravel()], axis=1)
    distorted = pattern(_undistort_points(grid, K, dist)).reshape(120, 160).astype(np.float32)
    ideal = pattern(grid).reshape(120, 160)
    restored = undistort(distorted, K, dist)
    inner = (slice(15, -15), slice(15, -15))
    assert np.abs(restored[inner] - ideal[inner]).max() < 0.02
