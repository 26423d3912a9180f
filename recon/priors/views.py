"""Pseudo views for the prior: cameras on a path through the training cameras, and their distance to them.

The training cameras are ordered by azimuth about the scene's up direction
(the mean of their image "up" axes); consecutive cameras are joined by orbits
about the scene centre (azimuth, elevation and distance interpolated
linearly; each pseudo camera is the nearer training camera moved rigidly
along the orbit, so it frames the scene as that one does), the wrap-around
orbit too unless it spans more than half a turn (cameras that face one side
of a scene). The pseudo cameras are spread over the orbits in proportion to
their azimuth gaps, and raised and lowered in turn by up to ``elevation``
degrees. Each one's distance is the angle, seen from the centre, to the
nearest training camera.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from recon.scene.camera import camera_center, scene_up


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.arccos(np.clip(np.dot(_unit(a), _unit(b)), -1.0, 1.0)))


def _rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    return Rotation.from_rotvec(_unit(axis) * angle).as_matrix()


def path_cameras(world_to_cameras: np.ndarray, center: np.ndarray, count: int,
                 elevation_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(world-to-camera [count, 4, 4], distance to the nearest training camera in radians [count]).

    ``world_to_cameras`` [N, 4, 4] are the training cameras (N >= 2) in the OpenCV convention.
    """
    w2c = np.asarray(world_to_cameras, dtype=np.float64)
    if len(w2c) < 2 or count <= 0:
        return np.zeros((0, 4, 4)), np.zeros(0)
    centers = np.stack([camera_center(T) for T in w2c])
    offsets = centers - center
    up = scene_up(w2c)
    e1 = _unit(np.cross(up, np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])))
    e2 = np.cross(up, e1)
    azimuth = np.arctan2(offsets @ e2, offsets @ e1)
    order = np.argsort(azimuth)
    segments = [(order[k], order[(k + 1) % len(order)]) for k in range(len(order))]
    gaps = [(azimuth[j] - azimuth[i]) % (2 * np.pi) for i, j in segments]
    if len(order) == 2 or max(gaps) > np.pi:  # the cameras face one side: no arc behind the scene
        drop = int(np.argmax(gaps))
        segments.pop(drop)
        gaps.pop(drop)
    arcs = np.maximum(np.array(gaps), 1e-6)
    per = np.floor(count * arcs / arcs.sum()).astype(int)
    for k in np.argsort(-(count * arcs / arcs.sum() - per))[: count - per.sum()]:
        per[k] += 1  # largest remainders first, so the counts add up to ``count``

    out: list[np.ndarray] = []
    distance: list[float] = []
    elevation = np.arcsin(np.clip(offsets @ up / np.linalg.norm(offsets, axis=1), -1, 1))
    for (i, j), m, gap in zip(segments, per, gaps):
        for t in (np.arange(m) + 1) / (m + 1):
            # Orbit the nearer of the two cameras about the up axis to the azimuth at t, then to the elevation
            # and distance at t: the pseudo camera keeps how that camera frames the scene.
            src, turn = (i, t * gap) if t < 0.5 else (j, -(1 - t) * gap)
            T = _orbit(w2c[src], center, _rotation_about(up, turn))
            C = camera_center(T)
            k = len(out)
            lift = (1 - t) * elevation[i] + t * elevation[j] - elevation[src]
            lift += np.deg2rad(elevation_deg) * np.sin(np.pi / 2 * k)  # then 0, +e, 0, -e, ... in turn
            if abs(lift) > 1e-9:
                T = _orbit(T, center, _rotation_about(np.cross(up, C - center), -lift))
            length = (1 - t) * np.linalg.norm(offsets[i]) + t * np.linalg.norm(offsets[j])
            T = _orbit(T, center, np.eye(3), length / np.linalg.norm(camera_center(T) - center))
            out.append(T)
            distance.append(min(_angle(camera_center(T) - center, o) for o in offsets))
    return np.stack(out), np.array(distance)


def _orbit(w2c: np.ndarray, center: np.ndarray, Q: np.ndarray, stretch: float = 1.0) -> np.ndarray:
    """The camera moved rigidly by the rotation ``Q`` about ``center`` (its distance times ``stretch``)."""
    C = center + stretch * (Q @ (camera_center(w2c) - center))
    R = w2c[:3, :3] @ Q.T
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, -R @ C
    return T


def angle_to_path(world_to_cameras: np.ndarray, camera: np.ndarray, center: np.ndarray, count: int = 48) -> float:
    """Angle in radians, seen from ``center``, from ``camera`` (world-to-camera [4, 4]) to the nearest camera on the
    path through ``world_to_cameras`` (infinite when there is no path)."""
    path, _ = path_cameras(world_to_cameras, center, count)
    offset = camera_center(np.asarray(camera, dtype=np.float64)) - center
    return min((_angle(camera_center(T) - center, offset) for T in path), default=float("inf"))
