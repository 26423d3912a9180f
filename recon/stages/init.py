"""Init stage: the points the first Gaussians are placed at, with colours from the images.

* ``sfm``: the scene's structure-from-motion points;
* ``hull``: a visual hull carved from the training views' masks on a voxel
  grid over the scene's bounds (a voxel survives if every training view that
  sees it sees it inside the mask), sampled on its surface;
* ``random``: uniform in the bounds, kept where every training camera sees.

Colours are the mean of the training images where each point projects (inside
the mask when there is one), grey where no view sees it.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

from recon.config import RunConfig
from recon.io import images as image_io
from recon.io import ply
from recon.scene.camera import project as project_to_pixels
from recon.scene.frames import scene_bounds
from recon.scene.graph import Metrics, PointCloud, Provenance, SceneGraph, View

NAME = "init"
CONFIG = "init"


def run(graph: SceneGraph, cfg: RunConfig) -> SceneGraph:
    train = graph.views("train")
    source = _choose(graph, train, cfg.init.source)
    rng = np.random.default_rng(cfg.seed)
    center, radius = scene_bounds(graph, train)
    views = [_ViewData(graph, v) for v in train]
    if source == "sfm":
        node = graph.nodes["points/sfm"]
        points, colors = ply.read_points(graph.resolve(node.path))
    else:
        points = carve_hull(views, center, radius, cfg.init.hull_resolution, cfg.init.points, rng) if source == "hull" else None
        if points is None or len(points) == 0:
            if source == "hull":
                warnings.warn(f"{graph.name}: the masks' visual hull is empty; initialising at random", stacklevel=2)
            source = "random"
            points = random_in_frusta(views, center, radius, cfg.init.points, rng)
        colors = None
    if colors is None:
        colors = sample_colors(views, points)
    graph.replace(PointCloud(id="points/init", path=None, count=len(points), kind="init", points=points, colors=colors,
                             provenance=Provenance(NAME, made_from=[v.id for v in train])))
    graph.replace(Metrics(id="metrics/init", values={"source": source, "points": int(len(points))},
                          provenance=Provenance(NAME)))
    return graph


def _choose(graph: SceneGraph, train: list[View], requested: str) -> str:
    if requested != "auto":
        return requested
    if train and all(graph.training_mask(v) for v in train):  # a few views' SfM points are sparse; the hull fills the object
        return "hull"
    if "points/sfm" in graph.nodes and graph.nodes["points/sfm"].path:
        return "sfm"
    return "random"


class _ViewData:
    def __init__(self, graph: SceneGraph, view: View):
        cam = graph.camera_of(view)
        self.K, self.w2c, self.width, self.height = cam.K, cam.world_to_camera, cam.width, cam.height
        self.image = image_io.read_image(graph.resolve(view.image))
        mask = graph.training_mask(view)
        self.mask = image_io.read_mask(graph.resolve(mask)) if mask else None

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Integer pixel (col, row) [N, 2], inside-image flag [N], camera depth [N]."""
        uv, z = project_to_pixels(points, self.K, self.w2c)
        inside = (z > 1e-6) & (uv[:, 0] >= 0) & (uv[:, 0] < self.width) & (uv[:, 1] >= 0) & (uv[:, 1] < self.height)
        px = np.where(inside[:, None], np.floor(np.nan_to_num(uv)), 0).astype(np.int64)
        return px, inside, z


def carve_hull(views: list[_ViewData], center: np.ndarray, radius: float, resolution: int, count: int,
               rng: np.random.Generator) -> np.ndarray | None:
    """Points [count, 3] on the surface of the masks' visual hull, or None without masks."""
    if any(v.mask is None for v in views):
        return None
    half = 1.2 * radius
    axis = np.linspace(-half, half, resolution)
    voxel = axis[1] - axis[0]
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3) + center
    occupied = np.ones(len(grid), dtype=bool)
    seen = np.zeros(len(grid), dtype=np.int64)
    for v in views:
        px, inside, _ = v.project(grid)
        in_mask = np.zeros(len(grid), dtype=bool)
        in_mask[inside] = v.mask[px[inside, 1], px[inside, 0]]
        occupied &= ~inside | in_mask
        seen += inside
    occupied &= seen > 0
    occupied = occupied.reshape((resolution,) * 3)
    surface = occupied & ~ndimage.binary_erosion(occupied)
    cells = grid.reshape((resolution,) * 3 + (3,))[surface]
    if len(cells) == 0:
        return None
    pick = rng.choice(len(cells), size=count, replace=len(cells) < count)
    return cells[pick] + rng.uniform(-0.5, 0.5, size=(count, 3)) * voxel


def random_in_frusta(views: list[_ViewData], center: np.ndarray, radius: float, count: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Points [count, 3] uniform in the bounding sphere where every training camera sees (or, failing that, in the sphere)."""
    kept: list[np.ndarray] = []
    total = 0
    for _ in range(50):
        d = rng.normal(size=(4 * count, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        p = center + d * radius * rng.random((4 * count, 1)) ** (1 / 3)
        ok = np.ones(len(p), dtype=bool)
        for v in views:
            ok &= v.project(p)[1]
        kept.append(p[ok])
        total += int(ok.sum())
        if total >= count:
            break
    pts = np.concatenate(kept)
    if len(pts) < count:  # the frusta barely overlap: fall back to the whole sphere
        d = rng.normal(size=(count - len(pts), 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        pts = np.concatenate([pts, center + d * radius * rng.random((len(d), 1)) ** (1 / 3)])
    return pts[:count]


def sample_colors(views: list[_ViewData], points: np.ndarray) -> np.ndarray:
    total = np.zeros((len(points), 3))
    hits = np.zeros(len(points))
    for v in views:
        px, inside, _ = v.project(points)
        if v.mask is not None:
            inside[inside] &= v.mask[px[inside, 1], px[inside, 0]]
        total[inside] += v.image[px[inside, 1], px[inside, 0]]
        hits += inside
    colors = np.full((len(points), 3), 0.5)
    seen = hits > 0
    colors[seen] = total[seen] / hits[seen, None]
    return colors
