"""Init stage: the points the first Gaussians are placed at, with colours from the images.

* ``mvs``: multi-view stereo from the training views (recon/geometry/mvs.py): a
  depth map per view by plane sweep, kept where the views agree, fused into
  coloured points (``points/mvs``); the depth and confidence maps (``depth/mvs``)
  also supervise the optimize stage;
* ``sfm``: the scene's structure-from-motion points;
* ``hull``: a visual hull carved from the training views' masks on a voxel
  grid over the scene's bounds (a voxel survives if every training view that
  sees it sees it inside the mask), sampled on its surface;
* ``random``: uniform in the bounds, kept where every training camera sees.

``auto`` tries them in that order, each where it applies (stereo needs two
views, the hull masks that may shape the model); a source that finds too little
hands over to the next with a warning that says why (stereo: fewer points than
``init.mvs_min_points``, its depths still supervising; or depths for less of
the training views' pixels with texture than ``init.mvs_min_coverage``, 14% in
the default preset and off in ``object``, its depths set aside too; SfM points:
fewer than ``init.sfm_min_points``). Where the
scene has SfM points (an estimate's, a COLMAP model's, or the given cameras'
matches, poses.given_points), init measures the share of them stereo confirms
(a view that sees a point kept a depth within 5% of its own); with
``init.mvs_min_confirmed`` set, stereo that confirms fewer is set aside, its
depths too, and the SfM points seed the splats. With ``init.mvs_fill``, points
drawn from stereo's holes, at depths interpolated from the depths around them,
join the stereo points (off: they lowered the captures' mean).

Colours are the mean of the training images where each point projects (inside
the mask when there is one), grey where no view sees it; stereo points keep the
colour of the pixel they came from.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from recon.config import InitConfig, RunConfig
from recon.errors import InputError
from recon.files import atomic_write
from recon.geometry import mvs
from recon.geometry.meshing import framed
from recon.io import images as image_io
from recon.io import ply
from recon.scene.camera import project as project_to_pixels
from recon.scene.frames import Frames, load_frames, scene_bounds
from recon.scene.graph import DepthMaps, Metrics, PointCloud, Provenance, SceneGraph, View
from recon.scene.names import DEPTH_MVS, POINTS_INIT, POINTS_MVS, POINTS_SFM, metrics_id

NAME = "init"
CONFIG = "init"
ON_DEVICE = True  # computes on the run's device: a CPU run's results are not a GPU run's
OUTPUTS = ("assets/mvs",)
SOURCES = ("mvs", "sfm", "hull", "random")
CONFIRM_TOLERANCE = 0.05  # an SfM point confirms a stereo depth within 5% of its own
CONFIRM_MIN_POINTS = 20  # fewer SfM points than this judge nothing


def validate(graph: SceneGraph, cfg: RunConfig, device: torch.device) -> None:
    if cfg.init.mvs_window % 2 == 0:
        raise InputError(f"init.mvs_window must be odd (a window centred on its pixel), got {cfg.init.mvs_window}")


def run(graph: SceneGraph, cfg: RunConfig, device: torch.device) -> SceneGraph:
    train = graph.views("train")
    rng = np.random.default_rng(cfg.seed)
    center, radius = scene_bounds(graph, train)

    @functools.cache
    def views() -> list[_ViewData]:  # the photos at full size, read only by the sources and colours that need them
        return [_ViewData(graph, v) for v in train]

    made_from = [v.id for v in train]
    values: dict = {}
    points = colors = None
    candidates_of = candidates(graph, train, cfg.init.source)
    sfm = ply.read_points(graph.file_of(graph.node(POINTS_SFM, PointCloud))) if "sfm" in candidates_of else None
    for source in candidates_of:
        why = None
        if source == "mvs":
            bounding = None if sfm is None or from_given_cameras(graph) else sfm[0]
            found = stereo(graph, train, cfg.init, depth_range(graph, train, center, radius, bounding), device, rng,
                           None if sfm is None else sfm[0])
            values["mvs"] = found.metrics
            share = found.metrics.get("sfm_confirmed")
            covered = found.metrics["coverage"]
            if len(found.points) < cfg.init.mvs_min_points:
                keep_stereo(graph, train, found)  # its few depths still supervise where they are confident
                why = (f"multi-view stereo kept {len(found.points)} points, fewer than init.mvs_min_points "
                       f"({cfg.init.mvs_min_points}): the views overlap too little or lack texture")
            elif covered < cfg.init.mvs_min_coverage:
                where = " inside their masks" if found.metrics["coverage_within"] == "masks" else ""
                why = (f"multi-view stereo kept a depth for {covered:.1%} of the training views' pixels with texture"
                       f"{where}, under init.mvs_min_coverage ({cfg.init.mvs_min_coverage:.1%}): the views agree on "
                       f"too little for its depths to be trusted, so neither its points nor its depths are used")
            elif share is not None and share < cfg.init.mvs_min_confirmed:
                why = (f"multi-view stereo confirms {share:.1%} of the {found.metrics['sfm_seen']} SfM points it "
                       f"could see, under init.mvs_min_confirmed ({cfg.init.mvs_min_confirmed:.1%}): its depths miss "
                       f"what the photos' matches see, so neither its points nor its depths are used")
            else:
                unchecked = unused_sfm_settings(cfg.init, sfm is not None, found.metrics.get("sfm_seen", 0),
                                                cfg.poses.given_points)
                if unchecked:
                    warnings.warn(f"{graph.name}: init: {unchecked}; stereo is used as it is", stacklevel=2)
                keep_stereo(graph, train, found)
                points, colors = found.points, found.colors
                made_from = [POINTS_MVS]
                if len(found.fill_points):
                    points = np.concatenate([points, found.fill_points])
                    colors = np.concatenate([colors, found.fill_colors])
                if cfg.init.mvs_sfm and sfm is not None:
                    sfm_points, sfm_colors = sfm
                    if sfm_colors is None:
                        sfm_colors = sample_colors(views(), sfm_points)
                    points, colors = np.concatenate([points, sfm_points]), np.concatenate([colors, sfm_colors])
                    made_from.append(POINTS_SFM)
                    values["sfm_points"] = int(len(sfm_points))
                if cfg.init.mvs_random > 0:
                    extra = random_in_frusta(views(), center, radius, int(cfg.init.mvs_random * len(found.points)),
                                             rng)
                    colors = np.concatenate([colors, sample_colors(views(), extra)])
                    points = np.concatenate([points, extra])
        elif source == "sfm":
            assert sfm is not None  # a candidate only where the scene has them
            if len(sfm[0]) < cfg.init.sfm_min_points:
                values["sfm_rejected"] = int(len(sfm[0]))
                why = (f"the scene has {len(sfm[0])} SfM points, fewer than init.sfm_min_points "
                       f"({cfg.init.sfm_min_points}): too few to place the splats")
            else:
                points, colors = sfm
                made_from = [POINTS_SFM]
        elif source == "hull":
            points = carve_hull(views(), center, radius, cfg.init.hull_resolution, cfg.init.points, rng)
            if points is None or len(points) == 0:
                points, why = None, "the masks' visual hull is empty"
        else:
            points = random_in_frusta(views(), center, radius, cfg.init.points, rng)
        if points is not None:
            break
        warnings.warn(f"{graph.name}: init: {why}; trying the next source", stacklevel=2)
    assert points is not None  # random always finds points
    if colors is None:
        colors = sample_colors(views(), points)
    graph.replace(PointCloud(id=POINTS_INIT, path=None, count=len(points), kind="init", points=points, colors=colors,
                             provenance=Provenance(NAME, made_from=made_from)))
    graph.replace(Metrics(id=metrics_id(NAME), values={"source": source, "points": int(len(points)), **values},
                          provenance=Provenance(NAME)))
    return graph


def unused_sfm_settings(ic: InitConfig, has_sfm: bool, sfm_seen: int, given_points: bool = False) -> str | None:
    """Why init.mvs_min_confirmed or init.mvs_sfm, set, cannot apply to this scene (None where they apply or are
    off): both need the scene's SfM points, which given cameras come without unless poses.given_points."""
    asked = [name for name, on in (("init.mvs_min_confirmed", ic.mvs_min_confirmed > 0), ("init.mvs_sfm", ic.mvs_sfm))
             if on]
    if not asked:
        return None
    if not has_sfm:
        why = ("poses.given_points found none (metrics/poses, given_fit)" if given_points else
               "given cameras come without them unless poses.given_points=true")
        return (f"{' and '.join(asked)} need{'' if len(asked) > 1 else 's'} the scene's SfM points and it has none "
                f"({why}): {'they do' if len(asked) > 1 else 'it does'} not apply")
    if ic.mvs_min_confirmed > 0 and sfm_seen < CONFIRM_MIN_POINTS:
        return (f"init.mvs_min_confirmed does not apply: the training views see {sfm_seen} SfM points, fewer than "
                f"the {CONFIRM_MIN_POINTS} it takes to judge stereo")
    return None


def candidates(graph: SceneGraph, train: list[View], requested: str) -> list[str]:
    """The sources to try in turn: from the requested one (the first that applies for ``auto``) onwards."""
    sizes = {(cam.width, cam.height) for cam in map(graph.camera_of, train)}
    applies = {
        "mvs": len(train) >= 2 and len(sizes) == 1,
        "sfm": POINTS_SFM in graph.nodes and bool(graph.node(POINTS_SFM, PointCloud).path),
        "hull": bool(train) and all(graph.training_mask(v) for v in train),
        "random": True,
    }
    start = 0 if requested == "auto" else SOURCES.index(requested)
    chain = [s for s in SOURCES[start:] if applies[s]]  # never empty: random always applies
    if requested != "auto" and not applies[requested]:
        reasons = {"mvs": "it needs two training views of one size", "sfm": "the scene has no SfM points",
                   "hull": "not every training view has a mask it may train with"}
        warnings.warn(f"{graph.name}: init.source={requested} does not apply ({reasons[requested]}); "
                      f"using {chain[0]}", stacklevel=3)
    return chain


@dataclass
class StereoResult:
    """Fused stereo points [N, 3], their colours [N, 3], the depth and confidence maps [V, H, W] they came from (at
    ``size``), what was measured, and the points drawn in stereo's holes with their colours (``init.mvs_fill``)."""

    points: np.ndarray
    colors: np.ndarray
    depth: np.ndarray
    confidence: np.ndarray
    size: tuple[int, int]
    metrics: dict
    fill_points: np.ndarray  # [F, 3] where stereo kept no depth (init.mvs_fill), and their colours [F, 3]
    fill_colors: np.ndarray


def stereo(graph: SceneGraph, train: list[View], ic: InitConfig, depth_bounds: tuple[list[float], list[float]],
           device: torch.device, rng: np.random.Generator, check: np.ndarray | None = None) -> StereoResult:
    """Depth maps of the training views over their (near, far) ``depth_bounds`` and their fused points; with
    ``check`` (SfM points [P, 3]) also the share of those the views see that the depths confirm (``sfm_confirmed``,
    within ``CONFIRM_TOLERANCE`` of their depth, where the views see at least ``CONFIRM_MIN_POINTS``); with
    ``ic.mvs_fill``, points in the depths' holes (:func:`recon.geometry.mvs.fill_points`)."""
    start = time.perf_counter()
    frames = stereo_frames(graph, train, ic.mvs_max_side if device.type == "cuda" else ic.mvs_cpu_max_side)
    frames = frames.to(device)
    near, far = depth_bounds
    settings = stereo_settings(ic)
    checked = {}
    with torch.no_grad():
        images = frames.training_images()
        maps = mvs.estimate_depth(images, frames.viewmats, frames.Ks, torch.tensor(near, device=device).float(),
                                  torch.tensor(far, device=device).float(), settings)
        if frames.masks is not None:  # an object capture: the stereo of the background is not wanted
            maps.depth[~frames.masks] = 0
            maps.confidence[~frames.masks] = 0
        fused = mvs.fuse(maps, images, frames.viewmats, frames.Ks)
        if check is not None:
            seen, agree = mvs.confirmed(maps, frames.viewmats, frames.Ks, torch.as_tensor(check).float().to(device),
                                        CONFIRM_TOLERANCE, frames.masks)
            n_seen = int(seen.sum())
            checked = {"sfm_seen": n_seen, "sfm_confirmed": round(int(agree.sum()) / n_seen, 4)
                       if n_seen >= CONFIRM_MIN_POINTS else None}
        points, colors = (t.double().cpu().numpy() for t in fused[:2])
        if len(points) > ic.mvs_points:
            pick = rng.choice(len(points), ic.mvs_points, replace=False)
            points, colors = points[pick], colors[pick]
        fill_points = fill_colors = np.zeros((0, 3))
        count = round(ic.mvs_fill * len(points))
        if count > 0:
            generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
            *filled, drawn = mvs.fill_points(maps, images, frames.viewmats, frames.Ks, count, generator, frames.masks)
            fill_points, fill_colors = (t.double().cpu().numpy() for t in filled)
            checked.update(fill_points=len(fill_points), fill_dropped=drawn - len(fill_points))
        could = mvs.textured(images, settings)  # the pixels stereo scores: coverage counts only these
    depth = maps.depth.cpu().numpy().astype(np.float32)
    kept = (depth > 0).reshape(len(train), -1).mean(1)
    metrics = {"points": int(len(points)), "resolution": [frames.width, frames.height],
               "kept_share": [round(float(k), 4) for k in kept],
               "textured_share": [round(float(t), 4) for t in could.flatten(1).float().mean(1)],
               "coverage": coverage(maps.depth, frames.masks, could),
               "coverage_within": "images" if frames.masks is None else "masks",
               "near": [float(n) for n in near],
               "far": [float(f) for f in far], **checked, "seconds": time.perf_counter() - start}
    return StereoResult(points, colors, depth, maps.confidence.cpu().numpy().astype(np.float32),
                        (frames.width, frames.height), metrics, fill_points, fill_colors)


def stereo_frames(graph: SceneGraph, train: list[View], max_side: int) -> Frames:
    """The training views as stereo matches them: down-sampled by the integer factor that brings the first one's long
    side to ``max_side`` pixels at most (init.mvs_max_side with CUDA, init.mvs_cpu_max_side without)."""
    cam = graph.camera_of(train[0])
    return load_frames(graph, train, max(1, math.ceil(max(cam.width, cam.height) / max_side)), training=True)


def stereo_settings(ic: InitConfig) -> mvs.StereoSettings:
    """The plane sweep's settings from init's."""
    return mvs.StereoSettings(plane_step=ic.mvs_plane_step, max_planes=ic.mvs_max_planes, window=ic.mvs_window,
                              sources=ic.mvs_sources, best_sources=ic.mvs_best_sources, scales=ic.mvs_scales,
                              min_score=ic.mvs_min_score, min_consistent=ic.mvs_min_consistent,
                              max_reprojection=ic.mvs_max_reprojection, max_depth_ratio=ic.mvs_max_depth_ratio)


def coverage(depth: torch.Tensor, masks: torch.Tensor | None, textured: torch.Tensor | None = None) -> float:
    """The share of the pixels stereo could have kept that have a depth [V, H, W]: those with texture (``textured``,
    as stereo judges it; all without it) or a depth, inside the masks when they shape the model; the mean over the
    views. A featureless backdrop or wall does not count: stereo leaves it empty however right it is elsewhere. A
    view with no such pixel does not count, and with none in any view the share is 0."""
    eligible = torch.ones_like(depth, dtype=torch.bool) if textured is None else textured.bool() | (depth > 0)
    if masks is not None:
        eligible &= masks.bool()
    counts = eligible.flatten(1).sum(1)
    shares = ((depth > 0) & eligible).flatten(1).sum(1)[counts > 0] / counts[counts > 0]
    return round(float(shares.mean()), 4) if len(shares) else 0.0


def keep_stereo(graph: SceneGraph, train: list[View], found: StereoResult) -> None:
    """The depth and confidence maps as ``depth/mvs`` (which supervises optimize) and the fused points as
    ``points/mvs``."""
    rel = "assets/mvs/depth.npz"
    atomic_write(graph.resolve(rel), lambda tmp: np.savez_compressed(tmp, depth=found.depth,
                                                                     confidence=found.confidence))
    graph.replace(DepthMaps(id=DEPTH_MVS, path=rel, views=[v.id for v in train], width=found.size[0],
                            height=found.size[1], provenance=Provenance(NAME, made_from=[v.id for v in train])))
    graph.replace(PointCloud(id=POINTS_MVS, path=None, count=len(found.points), kind="mvs", points=found.points,
                             colors=found.colors, provenance=Provenance(NAME, made_from=[DEPTH_MVS])))


def depth_range(graph: SceneGraph, train: list[View], center: np.ndarray, radius: float,
                sfm_points: np.ndarray | None) -> tuple[list[float], list[float]]:
    """(near, far) per training view: the dataset's bounds widened by 20%, else the depths of ``sfm_points`` (1st to
    99th percentile, widened likewise), else from two scene radii in front of the scene's centre to five behind
    it."""
    near, far = [], []
    for view in train:
        cam = graph.camera_of(view)
        if cam.near is not None and cam.far is not None:
            near.append(0.8 * cam.near)
            far.append(1.2 * cam.far)
            continue
        if sfm_points is not None:
            _, z = project_to_pixels(sfm_points, cam.K, cam.world_to_camera)
            z = z[z > 0]
            if len(z) >= 20:
                near.append(0.8 * float(np.percentile(z, 1)))
                far.append(1.2 * float(np.percentile(z, 99)))
                continue
        dz = float((cam.world_to_camera[:3, :3] @ center + cam.world_to_camera[:3, 3])[2])
        near.append(max(dz - 2 * radius, 0.1 * abs(dz)))
        far.append(max(dz + 5 * radius, 2 * near[-1]))
    return near, far


def from_given_cameras(graph: SceneGraph) -> bool:
    """Whether the scene's SfM points are the given cameras' explained matches (poses.given_points). They do not
    set stereo's depth range: on castle-P30 they moved the default by -0.7 / +0.2 dB at 3 / 4 views
    (real-ablation-10-h200.json, call D), and the range they would replace is the one every figure was measured
    with."""
    poses = graph.get(metrics_id("poses"), Metrics)
    return poses is not None and poses.values.get("given_fit", {}).get("points", 0) > 0


class _ViewData:
    def __init__(self, graph: SceneGraph, view: View):
        cam = graph.camera_of(view)
        self.K, self.w2c, self.width, self.height = cam.K, cam.world_to_camera, cam.width, cam.height
        self.image = image_io.read_image(graph.image_of(view))
        mask = graph.training_mask(view)
        self.mask = image_io.read_mask(graph.resolve(mask)) if mask else None

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Of world points [N, 3]: integer pixel (col, row) [N, 2], inside-image flag [N], camera depth [N]."""
        return framed(points, self.K, self.w2c, self.width, self.height)


def carve_hull(views: list[_ViewData], center: np.ndarray, radius: float, resolution: int, count: int,
               rng: np.random.Generator) -> np.ndarray | None:
    """Points [count, 3] on the surface of the masks' visual hull, or None without masks."""
    masks = [v.mask for v in views if v.mask is not None]
    if len(masks) < len(views):
        return None
    half = 1.2 * radius
    axis = np.linspace(-half, half, resolution)
    voxel = axis[1] - axis[0]
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3) + center
    occupied = np.ones(len(grid), dtype=bool)
    seen = np.zeros(len(grid), dtype=np.int64)
    for v, mask in zip(views, masks):
        px, inside, _ = v.project(grid)
        in_mask = np.zeros(len(grid), dtype=bool)
        in_mask[inside] = mask[px[inside, 1], px[inside, 0]]
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
    """Points [count, 3] uniform in the bounding sphere where every training camera sees (or, failing that, in the
    sphere)."""
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
