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

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

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
    """Greedy thinning in a random order: keep a point, drop every later one within ``radius`` of it.

    DTU's script runs this greedy pass as a loop over the points; here the same
    result comes from rounds over the pairs closer than ``radius``: a point is
    dropped once an earlier neighbour is kept, and kept once every earlier
    neighbour is dropped (the earliest undecided point is always decided).
    """
    from scipy.spatial import cKDTree

    pts = points[np.random.default_rng(seed).permutation(len(points))]
    pairs = cKDTree(pts).query_pairs(radius, output_type="ndarray")  # rows (i, j) with i < j
    first, later = pairs[:, 0], pairs[:, 1]
    state = np.zeros(len(pts), dtype=np.int8)  # 0 undecided, 1 kept, -1 dropped
    while True:
        undecided = state == 0
        if not undecided.any():
            break
        dropped = np.zeros(len(pts), dtype=bool)
        dropped[later[state[first] == 1]] = True
        waiting = np.zeros(len(pts), dtype=bool)
        waiting[later[state[first] == 0]] = True
        state[undecided & dropped] = -1
        state[undecided & ~dropped & ~waiting] = 1
        live = (state[later] == 0) & (state[first] != -1)
        first, later = first[live], later[live]
    return pts[state == 1]


def nearest_distances(query: np.ndarray, reference: np.ndarray, device: str | torch.device | None = None) -> np.ndarray:
    """Distance from each query point [N, 3] to its nearest reference point [M, 3].

    On CUDA: exact, by brute force (chunked) for small sets and through a
    uniform grid for large ones; elsewhere a KD-tree.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type != "cuda":
        from scipy.spatial import cKDTree

        return cKDTree(reference).query(query, k=1, workers=-1)[0]
    shift = reference.mean(axis=0)  # centred: float32 keeps its precision on DTU's millimetre coordinates
    q = torch.as_tensor(query - shift, dtype=torch.float32, device=device)
    ref = torch.as_tensor(reference - shift, dtype=torch.float32, device=device)
    if len(q) * len(ref) <= BRUTE_FORCE_PAIRS:
        return _brute_nearest(q, ref).cpu().numpy().astype(np.float64)
    return grid_nearest(q, ref).cpu().numpy().astype(np.float64)


BRUTE_FORCE_PAIRS = 2e10


def _brute_nearest(q: Tensor, ref: Tensor) -> Tensor:
    """Nearest distances by brute force: cdist's matrix-product form picks the index, then the pair's exact distance."""
    out = []
    rows = max(1, (1 << 28) // max(1, len(ref)))
    for start in range(0, len(q), rows):
        chunk = q[start : start + rows]
        out.append((chunk - ref[torch.cdist(chunk, ref).argmin(dim=1)]).norm(dim=1))
    return torch.cat(out) if out else q.new_zeros(0)


def grid_nearest(q: Tensor, ref: Tensor, per_cell: float = 8.0) -> Tensor:
    """Exact nearest distances through a uniform grid over ``ref``.

    Each query looks at the 27 cells around its own; a neighbour found there no
    farther than one cell side is the nearest. The other queries (far from every
    reference point) fall back to brute force.
    """
    lo = torch.minimum(q.min(0).values, ref.min(0).values)
    extent = float((torch.maximum(q.max(0).values, ref.max(0).values) - lo).max()) + 1e-6
    cell = extent / 64
    for _ in range(12):  # about ``per_cell`` points in each occupied cell
        occupied = torch.unique(((ref - lo) / cell).long(), dim=0).shape[0]
        mean = len(ref) / occupied
        if per_cell / 2 <= mean <= per_cell * 2:
            break
        cell *= math.sqrt(per_cell / mean)  # points lie on surfaces: occupancy grows with the square of the side
    dims = int(extent / cell) + 3
    key_of = lambda ijk: (ijk[..., 0] * dims + ijk[..., 1]) * dims + ijk[..., 2]  # noqa: E731
    ref_keys = key_of(((ref - lo) / cell).long() + 1)
    order = torch.argsort(ref_keys)
    ref, ref_keys = ref[order], ref_keys[order]
    cells, counts = torch.unique_consecutive(ref_keys, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    width = int(counts.max())
    offsets = torch.stack(torch.meshgrid(*[torch.arange(-1, 2, device=q.device)] * 3, indexing="ij"), -1).reshape(27, 3)
    slot = torch.arange(width, device=q.device)
    best = torch.empty(len(q), device=q.device)
    rows = max(1, (1 << 26) // (27 * width))
    for start in range(0, len(q), rows):
        chunk = q[start : start + rows]
        keys = key_of(((chunk - lo) / cell).long()[:, None] + 1 + offsets)  # [n, 27]
        at = torch.searchsorted(cells, keys).clamp(max=len(cells) - 1)
        present = cells[at] == keys
        first = torch.where(present, starts[at], 0)
        count = torch.where(present, counts[at], 0)
        index = first[..., None] + slot  # [n, 27, width]
        valid = slot < count[..., None]
        d = (chunk[:, None, None] - ref[index.clamp(max=len(ref) - 1)]).norm(dim=-1)
        best[start : start + rows] = torch.where(valid, d, math.inf).flatten(1).min(dim=1).values
    far = best > cell
    if bool(far.any()):
        best[far] = _brute_nearest(q[far], ref)
    return best


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


def score(d_pred_to_gt: np.ndarray, d_gt_to_pred: np.ndarray, max_dist: float,
          thresholds: tuple[float, ...]) -> GeometryScore:
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
                  max_dist: float = DTU_MAX_DIST, thresholds: tuple[float, ...] = (1.0, 2.0, 5.0),
                  device=None) -> GeometryScore:
    """A mesh against ground-truth points: DTU's sampling and thinning, without its observation masks."""
    return evaluate_points(sample_surface(vertices, faces, density), gt_points, max_dist, thresholds, device)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, density: float = DTU_DENSITY) -> np.ndarray:
    """A mesh as the points DTU's protocol compares: sampled ``density`` apart, then thinned to that spacing."""
    return thin(sample_mesh(vertices, faces, density), density)


@dataclass
class DTUGroundTruth:
    """The files DTU's surface evaluation reads for one scan."""

    scan: int
    stl: Path
    obs_mask: Path
    plane: Path

    @classmethod
    def find(cls, root: Path, scan: int) -> DTUGroundTruth:
        gt = cls(scan, root / "Points" / "stl" / f"stl{scan:03d}_total.ply",
                 root / "ObsMask" / f"ObsMask{scan}_10.mat", root / "ObsMask" / f"Plane{scan}.mat")
        for path in (gt.stl, gt.obs_mask, gt.plane):
            if not path.is_file():
                raise InputError(f"{path}: DTU ground truth for scan {scan} is missing")
        return gt


def evaluate_dtu(vertices: np.ndarray, faces: np.ndarray, gt: DTUGroundTruth,
                 thresholds: tuple[float, ...] = (1.0, 2.0, 5.0),
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
