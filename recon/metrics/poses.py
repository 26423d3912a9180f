"""Pose metrics: estimated cameras against known ones, after a similarity alignment.

* The estimated cameras are aligned to the known ones by a similarity
  (rotation, translation, uniform scale): its rotation is the one that best
  maps the estimated camera orientations onto the known ones (the chordal
  mean), its scale and translation the least-squares fit of the camera
  centres under that rotation. Aligning the centres alone (Umeyama) leaves
  the rotation about their line free when 3 or 4 cameras stand nearly in a
  line, as in forward-facing captures, and then reports that freedom as error.
* Absolute errors, per camera after that alignment: the rotation angle between
  estimated and known camera orientations (degrees) and the distance between
  centres, in the known frame's units and as a share of the known cameras'
  extent (the largest distance of a centre from their centroid).
* Relative pose AUC at 5, 10 and 20 degrees, as in the pose-estimation
  literature (LoFTR, RelPose, PoseDiffusion): for every pair of cameras, the
  error is the larger of the relative rotation's angle error and the angle
  between relative translation directions; the AUC is the area under the
  curve of the share of pairs below each threshold up to T, divided by T.
  It needs no alignment.
"""

from __future__ import annotations

import itertools

import numpy as np

from recon.scene.camera import camera_center, nearest_rotation


def align(estimated: list[np.ndarray], known: list[np.ndarray]) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) mapping the estimated world frame onto the known one.

    ``R`` [3, 3] is the rotation nearest (chordal) to the mean of ``R_known_i^T
    R_estimated_i`` over the cameras (world_to_camera [4, 4] each); ``s`` and
    ``t`` [3] minimise ``sum |s R c_i + t - c'_i|^2`` over the centres.
    """
    R = nearest_rotation(sum(k[:3, :3].T @ e[:3, :3] for e, k in zip(estimated, known)))
    ce = np.stack([camera_center(m) for m in estimated])
    ck = np.stack([camera_center(m) for m in known])
    xe = (ce - ce.mean(axis=0)) @ R.T
    xk = ck - ck.mean(axis=0)
    var = float((xe**2).sum())
    s = float((xe * xk).sum() / var) if var > 0 else 1.0
    return s, R, ck.mean(axis=0) - s * R @ ce.mean(axis=0)


def similarity_matrix(s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    M = np.eye(4)
    M[:3, :3] = s * R
    M[:3, 3] = t
    return M


def rotation_angle(R: np.ndarray) -> float:
    """Angle of a rotation matrix, degrees."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def pose_auc(errors: np.ndarray, thresholds: tuple[float, ...] = (5.0, 10.0, 20.0)) -> dict[str, float]:
    """Area under the recall curve of ``errors`` (degrees) up to each threshold, over the threshold."""
    errors = np.sort(np.asarray(errors, dtype=float))
    recall = (np.arange(len(errors)) + 1) / max(len(errors), 1)
    errors, recall = np.r_[0.0, errors], np.r_[0.0, recall]
    out = {}
    for t in thresholds:
        last = np.searchsorted(errors, t)
        e = np.r_[errors[:last], t]
        r = np.r_[recall[:last], recall[last - 1]]
        out[f"{t:g}"] = float(np.sum((e[1:] - e[:-1]) * (r[1:] + r[:-1]) / 2) / t)  # trapezoids
    return out


def relative_errors(estimated: list[np.ndarray], known: list[np.ndarray]) -> np.ndarray:
    """Per pair of cameras: max(rotation error, translation-direction error) of the relative pose, degrees."""
    errors = []
    for i, j in itertools.combinations(range(len(estimated)), 2):
        rel_e = estimated[j] @ np.linalg.inv(estimated[i])
        rel_k = known[j] @ np.linalg.inv(known[i])
        r_err = rotation_angle(rel_e[:3, :3] @ rel_k[:3, :3].T)
        te, tk = rel_e[:3, 3], rel_k[:3, 3]
        denom = np.linalg.norm(te) * np.linalg.norm(tk)
        t_err = float(np.degrees(np.arccos(np.clip(te @ tk / denom, -1.0, 1.0)))) if denom > 0 else 0.0
        errors.append(max(r_err, t_err))
    return np.array(errors)


def compare(estimated: list[np.ndarray], known: list[np.ndarray]) -> tuple[dict, np.ndarray]:
    """Errors of estimated world-to-camera matrices against known ones; also the alignment (estimated -> known)."""
    ce = np.stack([camera_center(m) for m in estimated])
    ck = np.stack([camera_center(m) for m in known])
    s, R, t = align(estimated, known)
    extent = float(np.linalg.norm(ck - ck.mean(axis=0), axis=1).max()) or 1.0
    rot, trans = [], []
    for me, mk, c, c_known in zip(estimated, known, ce, ck):
        # Orientation of the aligned camera: its camera-to-world rotation composed with R.
        rot.append(rotation_angle((R @ me[:3, :3].T) @ mk[:3, :3]))
        trans.append(float(np.linalg.norm(s * R @ c + t - c_known)))
    values = {
        "cameras": len(estimated),
        "rotation_error_deg": {"mean": float(np.mean(rot)), "median": float(np.median(rot)), "max": float(np.max(rot))},
        "translation_error": {"mean": float(np.mean(trans)), "median": float(np.median(trans)),
                              "max": float(np.max(trans))},
        "translation_error_relative": float(np.mean(trans) / extent),
        "auc": pose_auc(relative_errors(estimated, known)) if len(estimated) > 1 else None,
        "alignment_scale": s,
    }
    return values, similarity_matrix(s, R, t)
