"""Geometry metrics: accuracy, completeness, Chamfer and F-score, with DTU's protocol when its ground truth is there.

Definitions (distances in the dataset's units; DTU's are millimetres):

* accuracy: mean distance from the reconstruction's points to the ground truth;
* completeness: mean distance from the ground-truth points to the reconstruction;
* Chamfer: their mean; distances above ``max_dist`` are left out of both means;
* F-score at ``t``: harmonic mean of precision (share of reconstruction points
  within ``t`` of the ground truth) and recall (share of ground-truth points
  within ``t`` of the reconstruction).

DTU's protocol, as in the official MATLAB evaluation and its common python
port (DTUeval-python): the mesh is sampled on a grid of 0.2 mm within each
triangle, shuffled, and thinned so no two points are closer than 0.2 mm;
points are kept inside the observation mask (``ObsMask/ObsMask{scan}_10.mat``:
``ObsMask``, ``BB``, ``Res``) for accuracy, and within the mask's bounding box
(widened by 60 mm) for completeness, which is measured from the ground-truth
points (``Points/stl/stl{scan:03d}_total.ply``) above the ground plane
(``ObsMask/Plane{scan}.mat``, ``P``); distances over 20 mm are discarded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recon.errors import InputError
from recon.io import ply

DTU_DENSITY = 0.2
DTU_PATCH = 60.0
DTU_MAX_DIST = 20.0


def sample_mesh(vertices: np.ndarray, faces: np.ndarray, density: float) -> np.ndarray:
    """The mesh's vertices plus a grid of points in every triangle, about ``density`` apart (DTU's sampling)."""
    tri = vertices[faces]
    v1 = tri[:, 1] - tri[:, 0]
    v2 = tri[:, 2] - tri[:, 0]
    l1 = np.linalg.norm(v1, axis=1)
    l2 = np.linalg.norm(v2, axis=1)
    area2 = np.linalg.norm(np.cross(v1, v2), axis=1)
    ok = area2 > 0
    tri, v1, v2, l1, l2, area2 = tri[ok], v1[ok], v2[ok], l1[ok], l2[ok], area2[ok]
    step = density * np.sqrt(l1 * l2 / area2)
    n1 = np.floor(l1 / step).astype(np.int64)
    n2 = np.floor(l2 / step).astype(np.int64)
    points = [vertices]
    # Triangles with the same grid size are sampled together.
    for a, b in set(zip(n1.tolist(), n2.tolist())):
        sel = (n1 == a) & (n2 == b)
        c1, c2 = np.meshgrid(np.arange(a + 1) + 0.5, np.arange(b + 1) + 0.5, indexing="ij")
        c1, c2 = c1.ravel() / max(a, 1e-7), c2.ravel() / max(b, 1e-7)
        inside = c1 + c2 < 1
        c1, c2 = c1[inside], c2[inside]
        if len(c1) == 0:
            continue
        pts = tri[sel, 0][:, None] + v1[sel][:, None] * c1[None, :, None] + v2[sel][:, None] * c2[None, :, None]
        points.append(pts.reshape(-1, 3))
    return np.concatenate(points)


def thin(points: np.ndarray, radius: float, seed: int = 0) -> np.ndarray:
    """Greedy thinning in a random order: keep a point, drop every later one within ``radius`` of it."""
    from scipy.spatial import cKDTree

    pts = points[np.random.default_rng(seed).permutation(len(points))]
    tree = cKDTree(pts)
    keep = np.ones(len(pts), dtype=bool)
    for i, neighbours in enumerate(tree.query_ball_point(pts, radius)):
        if keep[i]:
            keep[neighbours] = False
            keep[i] = True
    return pts[keep]


def nearest_distances(query: np.ndarray, reference: np.ndarray, device: str | torch.device | None = None) -> np.ndarray:
    """Distance from each query point [N, 3] to its nearest reference point [M, 3].

    On CUDA: exact brute force in chunks (torch.cdist); elsewhere a KD-tree.
    """
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda":
        from scipy.spatial import cKDTree

        return cKDTree(reference).query(query, k=1, workers=-1)[0]
    ref = torch.as_tensor(reference, dtype=torch.float32, device=device)
    out = []
    rows = max(1, (1 << 28) // max(1, len(ref)))
    for start in range(0, len(query), rows):
        q = torch.as_tensor(query[start : start + rows], dtype=torch.float32, device=device)
        out.append(torch.cdist(q, ref).min(dim=1).values.cpu())
    return torch.cat(out).numpy().astype(np.float64)


@dataclass
class GeometryScore:
    accuracy: float
    completeness: float
    chamfer: float
    fscore: dict[str, float]
    precision: dict[str, float]
    recall: dict[str, float]
    points: int
    reference_points: int

    def as_dict(self) -> dict:
        return dict(vars(self))


def score(d_pred_to_gt: np.ndarray, d_gt_to_pred: np.ndarray, max_dist: float, thresholds: tuple[float, ...]) -> GeometryScore:
    acc_d = d_pred_to_gt[d_pred_to_gt < max_dist]
    comp_d = d_gt_to_pred[d_gt_to_pred < max_dist]
    accuracy = float(acc_d.mean()) if len(acc_d) else float("nan")
    completeness = float(comp_d.mean()) if len(comp_d) else float("nan")
    precision = {f"{t:g}": float((d_pred_to_gt < t).mean()) for t in thresholds}
    recall = {f"{t:g}": float((d_gt_to_pred < t).mean()) for t in thresholds}
    fscore = {k: (2 * precision[k] * recall[k] / (precision[k] + recall[k]) if precision[k] + recall[k] > 0 else 0.0)
              for k in precision}
    return GeometryScore(accuracy, completeness, (accuracy + completeness) / 2, fscore, precision, recall,
                         len(d_pred_to_gt), len(d_gt_to_pred))


def evaluate_points(pred: np.ndarray, gt: np.ndarray, max_dist: float = DTU_MAX_DIST,
                    thresholds: tuple[float, ...] = (1.0, 2.0, 5.0), device=None) -> GeometryScore:
    """Plain two-way comparison of point sets (no masks), for synthetic scenes."""
    return score(nearest_distances(pred, gt, device), nearest_distances(gt, pred, device), max_dist, thresholds)


def evaluate_mesh(vertices: np.ndarray, faces: np.ndarray, gt_points: np.ndarray, density: float = DTU_DENSITY,
                  max_dist: float = DTU_MAX_DIST, thresholds: tuple[float, ...] = (1.0, 2.0, 5.0), device=None) -> GeometryScore:
    """A mesh against ground-truth points: DTU's sampling and thinning, without its observation masks."""
    pred = thin(sample_mesh(vertices, faces, density), density)
    return evaluate_points(pred, gt_points, max_dist, thresholds, device)


@dataclass
class DTUGroundTruth:
    """The files DTU's surface evaluation reads for one scan."""

    scan: int
    stl: Path
    obs_mask: Path
    plane: Path

    @classmethod
    def find(cls, root: Path, scan: int) -> "DTUGroundTruth":
        gt = cls(scan, root / "Points" / "stl" / f"stl{scan:03d}_total.ply",
                 root / "ObsMask" / f"ObsMask{scan}_10.mat", root / "ObsMask" / f"Plane{scan}.mat")
        for path in (gt.stl, gt.obs_mask, gt.plane):
            if not path.is_file():
                raise InputError(f"{path}: DTU ground truth for scan {scan} is missing")
        return gt


def evaluate_dtu(vertices: np.ndarray, faces: np.ndarray, gt: DTUGroundTruth, thresholds: tuple[float, ...] = (1.0, 2.0, 5.0),
                 seed: int = 0, device=None) -> GeometryScore:
    """DTU's surface evaluation of a mesh in DTU's frame (millimetres)."""
    from scipy.io import loadmat

    mat = loadmat(gt.obs_mask)
    obs, bb, res = mat["ObsMask"], mat["BB"].astype(np.float64), float(np.asarray(mat["Res"]).ravel()[0])
    plane = np.asarray(loadmat(gt.plane)["P"], dtype=np.float64).reshape(4)
    pred = thin(sample_mesh(vertices, faces, DTU_DENSITY), DTU_DENSITY, seed)
    in_box = np.all((pred >= bb[0] - DTU_PATCH) & (pred < bb[1] + 2 * DTU_PATCH), axis=1)
    pred_box = pred[in_box]
    grid = np.around((pred_box - bb[0]) / res).astype(np.int64)
    in_grid = np.all((grid >= 0) & (grid < np.array(obs.shape)), axis=1)
    observed = np.zeros(len(pred_box), dtype=bool)
    g = grid[in_grid]
    observed[in_grid] = obs[g[:, 0], g[:, 1], g[:, 2]].astype(bool)
    pred_obs = pred_box[observed]
    stl, _ = ply.read_points(gt.stl)
    above = stl @ plane[:3] + plane[3] > 0
    d_acc = nearest_distances(pred_obs, stl, device)
    d_comp = nearest_distances(stl[above], pred_box, device)
    return score(d_acc, d_comp, DTU_MAX_DIST, thresholds)
