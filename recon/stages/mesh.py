"""Mesh stage: depth maps of the optimised splats fused into a TSDF, marching cubes, cleaned, coloured.

Depth is rendered from the training cameras and from ``extra_views`` cameras
spread over a sphere around the object at the training cameras' distance,
within the band of elevations the training cameras span:
median depth for 2DGS, expected depth for 3DGS, kept where the rendered
opacity reaches ``alpha_threshold`` (elsewhere the ray carves free space).
The fusion grid covers the scene's bounds; its voxel size and truncation
follow from them. The mesh keeps its large connected components and, when the
training views have masks, the faces inside their visual hull; colours come
from the fused renders. The result is ``assets/mesh.ply`` in recon's world
frame (``recon export`` writes PLY, OBJ or GLB in the dataset's frame).

When the scene has ground truth, ``metrics/mesh`` holds accuracy,
completeness, Chamfer and F-scores (recon/metrics/geometry.py): against the
ground-truth points of a synthetic scene, or with DTU's protocol for a DTU scan.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from recon import progress
from recon.config import RunConfig
from recon.errors import InputError
from recon.files import atomic_write
from recon.geometry import meshing
from recon.geometry.tsdf import TSDFVolume
from recon.io import images as image_io
from recon.io import ply
from recon.metrics import geometry
from recon.render import render
from recon.render.splats import load_ply, sh_degree_of
from recon.scene.camera import camera_center, look_at, scene_up, transform_points
from recon.scene.frames import scene_bounds
from recon.scene.graph import Mesh, Metrics, PointCloud, Provenance, SceneGraph, View
from recon.scene.names import MESH_FILE, MESH_FINAL, MESH_GROUND_TRUTH, POINTS_GROUND_TRUTH, metrics_id

NAME = "mesh"
CONFIG = "mesh"
ON_DEVICE = True  # computes on the run's device: a CPU run's results are not a GPU run's


def run(graph: SceneGraph, cfg: RunConfig, device: torch.device) -> SceneGraph:
    mc = cfg.mesh
    node = graph.splats()
    if node is None:
        raise InputError(f"{graph.name}: no Gaussians to mesh (the optimize stage has not run)")
    on_gpu = device.type == "cuda"
    splats = load_ply(graph.resolve(node.path), device)
    train = graph.views("train")
    center, radius = scene_bounds(graph, train)
    cameras = depth_cameras(graph, train, center, mc.extra_views, None if on_gpu else mc.cpu_max_width)
    resolution = mc.resolution if on_gpu else mc.cpu_resolution
    half = mc.padding * radius
    volume = TSDFVolume(center, half, resolution, truncation=mc.truncation * 2 * half / resolution, device=device)
    kind = node.kind
    use_median = mc.depth == "median" or (mc.depth == "auto" and kind == "2dgs")
    start = time.perf_counter()
    with progress.task("fusing depth", len(cameras)) as bar, torch.no_grad():
        for K, w2c, width, height in cameras:
            vm = torch.tensor(w2c, dtype=torch.float32, device=device)[None]
            Kt = torch.tensor(K, dtype=torch.float32, device=device)[None]
            out = render(splats, vm, Kt, width, height, kind=kind, sh_degree=sh_degree_of(splats),
                         backgrounds=torch.zeros(1, 3, device=device))
            depth = (out.median_depth if use_median and out.median_depth is not None else out.depth)[0, ..., 0]
            surface = out.alpha[0, ..., 0] >= mc.alpha_threshold
            empty = torch.full_like(depth, math.inf if mc.carve else 0.0)
            volume.integrate(torch.where(surface & (depth > 0), depth, empty), Kt[0], vm[0], out.rgb[0].clamp(0, 1))
            bar.advance()
    fuse_seconds = time.perf_counter() - start
    vertices, faces, colors = meshing.extract(volume)
    keep = meshing.keep_large_components(vertices, faces, mc.keep_components)
    masks = [m for m in map(graph.training_mask, train) if m]
    if mc.hull and masks and len(masks) == len(train):
        cams = [graph.trained_camera(v) for v in train]
        hull = [(cam.K, cam.world_to_camera, image_io.read_mask(graph.resolve(m))) for cam, m in zip(cams, masks)]
        keep &= meshing.inside_hull(vertices[faces].mean(axis=1), hull)
    vertices, faces, colors = meshing.compact(vertices, faces, colors, keep)
    if mc.decimate and len(faces) > mc.decimate:
        vertices, faces, colors = meshing.decimate(vertices, faces, colors, mc.decimate)
    path = graph.resolve(MESH_FILE)
    atomic_write(path, lambda tmp: ply.write_mesh(tmp, vertices, faces, colors))
    graph.replace(Mesh(id=MESH_FINAL, path=MESH_FILE, vertices=len(vertices), faces=len(faces),
                       kind="reconstruction", provenance=Provenance(NAME, made_from=[node.id])))
    values = {"vertices": len(vertices), "faces": len(faces), "resolution": resolution, "voxel": volume.voxel,
              "depth_maps": len(cameras), "depth": "median" if use_median else "expected", "fuse_seconds": fuse_seconds}
    if mc.evaluate:
        values.update(evaluate(graph, vertices, faces, mc.dtu_root, device))
    graph.replace(Metrics(id=metrics_id(NAME), values=values, provenance=Provenance(NAME, made_from=[MESH_FINAL])))
    return graph


def depth_cameras(graph: SceneGraph, train: list[View], center: np.ndarray, extra: int,
                  max_width: int | None) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """(K, world_to_camera, width, height) of the training cameras and ``extra`` cameras on a sphere around
    ``center``."""
    cams = [graph.trained_camera(v) for v in train]
    ref = cams[0]
    factor = max(1, math.ceil(ref.width / max_width)) if max_width else 1
    out = []
    for cam in cams:
        K = cam.K.copy()
        K[:2] /= factor
        out.append((K, cam.world_to_camera, cam.width // factor, cam.height // factor))
    distance = float(np.mean([np.linalg.norm(camera_center(c.world_to_camera) - center) for c in cams]))
    up = scene_up([c.world_to_camera for c in cams])
    K = ref.K.copy()
    K[:2] /= factor
    # Extra cameras between the training cameras' lowest and highest elevation (about ``up``): the band
    # the splats were fitted from, not the underside that no training view saw.
    directions = np.stack([camera_center(c.world_to_camera) - center for c in cams])
    heights = directions @ up / np.linalg.norm(directions, axis=1)
    low, high = float(heights.min()), float(heights.max())
    golden = np.pi * (3.0 - np.sqrt(5.0))
    basis = _frame(up)
    for i in range(extra):
        z = high - (high - low) * (i + 0.5) / extra  # equal areas of the band
        r = np.sqrt(max(0.0, 1 - z * z))
        d = basis @ np.array([r * np.cos(golden * i), r * np.sin(golden * i), z])
        out.append((K, look_at(center + distance * d, center, up), ref.width // factor, ref.height // factor))
    return out


def _frame(up: np.ndarray) -> np.ndarray:
    """Columns: two unit vectors perpendicular to ``up``, then ``up``."""
    a = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(up, a)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(up, x), up], axis=1)


def evaluate(graph: SceneGraph, vertices: np.ndarray, faces: np.ndarray, dtu_root: str | None, device) -> dict:
    """Geometry metrics in the dataset's frame, when ground truth exists."""
    v_dataset = transform_points(vertices, graph.to_dataset)
    root = dtu_root or graph.meta.get("dtu_eval_root")
    scan = graph.meta.get("scan")
    if root and scan is not None:
        gt = geometry.DTUGroundTruth.find(Path(root), int(scan))
        return {"geometry": geometry.evaluate_dtu(v_dataset, faces, gt, device=device).as_dict(), "protocol": "dtu"}
    mesh = graph.get(MESH_GROUND_TRUTH, Mesh)
    if mesh is not None:  # synthetic scenes: both surfaces sampled alike
        gt_vertices, gt_faces = ply.read_mesh(graph.resolve(mesh.path))
        result = geometry.evaluate_mesh(v_dataset, faces, geometry.sample_surface(gt_vertices, gt_faces), device=device)
        return {"geometry": result.as_dict(), "protocol": "ground-truth mesh (no observation mask)"}
    points = graph.get(POINTS_GROUND_TRUTH, PointCloud)
    if points is None:
        return {}
    gt_points, _ = ply.read_points(graph.file_of(points))
    result = geometry.evaluate_mesh(v_dataset, faces, gt_points, device=device)
    return {"geometry": result.as_dict(), "protocol": "ground-truth points (no observation mask)"}
