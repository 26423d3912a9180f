"""Pseudo views for the prior: cameras on a path through the training cameras, and their distance to them.

The training cameras are ordered by azimuth about the scene's up direction
(the mean of their image "up" axes); consecutive cameras are joined by arcs
about the scene centre (directions and orientations interpolated spherically,
distances linearly), the wrap-around arc too unless it spans more than half a
turn (cameras that face one side of a scene). The pseudo cameras are spread
along the arcs in proportion to their angles, and raised and lowered in turn
by up to ``elevation`` degrees about the centre. Each one's distance is the
angle, seen from the centre, to the nearest training camera.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from recon.scene.camera import camera_center


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.arccos(np.clip(np.dot(_unit(a), _unit(b)), -1.0, 1.0)))


def _slerp_direction(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    a, b = _unit(a), _unit(b)
    omega = _angle(a, b)
    if omega < 1e-6:
        return a
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


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
    up = -_unit(w2c[:, 1, :3].mean(0))  # image y points down; its mean, negated, is the scene's up
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
    arcs = np.array([max(_angle(offsets[i], offsets[j]), 1e-6) for i, j in segments])
    per = np.floor(count * arcs / arcs.sum()).astype(int)
    for k in np.argsort(-(count * arcs / arcs.sum() - per))[: count - per.sum()]:
        per[k] += 1  # largest remainders first, so the counts add up to ``count``

    out, distance = [], []
    for (i, j), m in zip(segments, per):
        slerp = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([w2c[i, :3, :3], w2c[j, :3, :3]])))
        for t in (np.arange(m) + 1) / (m + 1):
            R = slerp([t]).as_matrix()[0]
            length = (1 - t) * np.linalg.norm(offsets[i]) + t * np.linalg.norm(offsets[j])
            C = center + _slerp_direction(offsets[i], offsets[j], t) * length
            k = len(out)
            lift = np.deg2rad(elevation_deg) * np.sin(np.pi / 2 * k)  # 0, +e, 0, -e, ...
            if abs(lift) > 1e-9:
                Q = _rotation_about(np.cross(up, C - center), lift)
                C, R = center + Q @ (C - center), R @ Q.T
            T = np.eye(4)
            T[:3, :3], T[:3, 3] = R, -R @ C
            out.append(T)
            distance.append(min(_angle(C - center, o) for o in offsets))
    return np.stack(out), np.array(distance)
