"""What the viewer shows, read from a scene folder: layers as plain arrays, no viser here.

:func:`open_scene` checks the folder the way the CLI needs (missing, half-written,
newer schema: one line, exit 2). :func:`layers` turns the scene graph into
arrays the viewer draws: splats (centres, covariances, colours, opacities),
meshes, point clouds and cameras, all in recon's world frame (conventions of
recon/scene/camera.py). Ground truth stored in the dataset's own frame is
brought into the world frame through ``to_dataset``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from recon.errors import InputError
from recon.io import images as image_io
from recon.io import ply
from recon.live import splat_source
from recon.render.reference import quat_to_rotmat
from recon.render.sh import Y0
from recon.render.splats import load_ply
from recon.scene.camera import camera_center, invert_rigid, quaternion_from_rotation, scene_up, transform_points
from recon.scene.graph import DepthMaps, Gaussians, Mesh, PointCloud, SceneGraph, View
from recon.scene.names import ASSETS_DIR, GAUSSIANS_PRIOR
from recon.scene.store import LOCK_FILE, SceneStore, holder_alive

THUMBNAIL_WIDTH = 160
ROLE_COLOURS = {"train": (46, 160, 67), "test": (230, 120, 30), "unused": (140, 140, 140)}


def open_scene(folder: Path, wait_for_run: bool = False) -> SceneGraph | None:
    """Load ``folder``'s scene graph and check that every asset it names is on disk.

    Returns ``None`` when a live run holds the folder and has not saved
    ``scene.json`` yet and ``wait_for_run`` is set; otherwise that case, a
    missing folder, a folder that is not a recon output, a half-written one
    and one from a newer schema raise :class:`InputError`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    store = SceneStore(folder)
    if not store.exists():
        lock = folder / LOCK_FILE
        if lock.exists() and holder_alive(lock):
            if wait_for_run:
                return None
            raise InputError(f"{folder}: a run is writing this folder and has not saved scene.json yet; "
                             "view it with `recon run ... --view`, or wait")
        if (folder / ASSETS_DIR).is_dir():
            raise InputError(f"{folder}: half-written scene folder (assets/ but no scene.json); rerun `recon run`")
        raise InputError(f"{folder}: no scene.json here; is this a recon output folder?")
    graph = store.load()
    for node in graph.nodes.values():
        for path in _asset_paths(node):
            if not graph.resolve(path).is_file():
                raise InputError(f"{store.scene_file}: names {path}, which is missing (half-written or moved folder)")
    return graph


def _asset_paths(node) -> list[str]:
    if isinstance(node, View):
        return [p for p in (node.image, node.mask) if p]
    if isinstance(node, (PointCloud, Gaussians, Mesh, DepthMaps)) and node.path:
        return [node.path]
    return []


@dataclass
class SplatLayer:
    centers: np.ndarray  # [N, 3]
    covariances: np.ndarray  # [N, 3, 3]
    rgbs: np.ndarray  # [N, 3] in [0, 1]
    opacities: np.ndarray  # [N, 1] in [0, 1]
    label: str

    def above(self, threshold: float) -> SplatLayer:
        keep = self.opacities[:, 0] >= threshold
        return SplatLayer(self.centers[keep], self.covariances[keep], self.rgbs[keep], self.opacities[keep], self.label)


@dataclass
class CameraLayer:
    name: str
    role: str
    world_to_camera: np.ndarray  # [4, 4]
    K: np.ndarray  # [3, 3]
    width: int
    height: int
    image: str | None  # absolute path of the photo, if any
    node: str  # camera node id

    @property
    def vertical_fov(self) -> float:
        return float(2 * np.arctan2(self.height / 2, self.K[1, 1]))

    @property
    def camera_to_world(self) -> np.ndarray:
        return invert_rigid(self.world_to_camera)

    def wxyz(self) -> np.ndarray:
        return quaternion_from_rotation(self.camera_to_world[:3, :3])

    def thumbnail(self) -> np.ndarray | None:
        if not self.image:
            return None
        pixels = image_io.read_image(Path(self.image))
        factor = max(1, pixels.shape[1] // THUMBNAIL_WIDTH)
        return image_io.to_uint8(image_io.downsample(pixels, factor))


def splats_from_ply(path: Path, label: str) -> SplatLayer:
    """Covariances, colours (degree-0 SH) and opacities of the splats in a 3DGS PLY (read by load_ply)."""
    splats = {k: v.numpy() for k, v in load_ply(path).items()}
    R = quat_to_rotmat(torch.from_numpy(splats["quats"])).numpy()
    M = R * np.exp(splats["scales"])[:, None, :]
    rgb = splats["sh0"][:, 0, :] * Y0 + 0.5
    opacity = 1 / (1 + np.exp(-splats["opacities"]))
    return SplatLayer(
        centers=splats["means"].astype(np.float32),
        covariances=(M @ M.transpose(0, 2, 1)).astype(np.float32),
        rgbs=np.clip(rgb, 0, 1).astype(np.float32),
        opacities=opacity[:, None].astype(np.float32),
        label=label,
    )


@dataclass
class Layers:
    """Everything the viewer draws, in recon's world frame."""

    splats: SplatLayer | None = None
    # name: (V, F, colours); F is None for a PLY of vertices only
    meshes: dict[str, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = field(default_factory=dict)
    points: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name: (points, colours)
    cameras: list[CameraLayer] = field(default_factory=list)
    live: dict | None = None  # status of a run in progress


def _to_world(graph: SceneGraph, xyz: np.ndarray, frame: str) -> np.ndarray:
    if frame != "dataset":
        return xyz
    return transform_points(xyz, np.linalg.inv(graph.to_dataset))


def splat_layer(graph: SceneGraph) -> tuple[SplatLayer | None, dict | None]:
    """(splats, live status): the final splats, else those of a run in progress, else (None, None)."""
    source = splat_source(graph)
    if source is None:
        return None, None
    path, kind, live = source
    final = graph.splats()
    if final is not None:
        prior = ", with the prior" if final.id == GAUSSIANS_PRIOR else ""
        return splats_from_ply(path, f"{kind}, {final.count} splats{prior}"), None
    if live is None:  # a snapshot whose status is being replaced: the next poll shows it
        return None, None
    return splats_from_ply(path, f"live: step {live['step']}/{live['steps']}"), live


def layers(graph: SceneGraph) -> Layers:
    """Read every drawable node of ``graph``; splats from a run in progress when there are no final ones."""
    out = Layers()
    out.splats, out.live = splat_layer(graph)
    for node in graph.of_type(Mesh):
        vertex, faces = ply.read_ply(graph.resolve(node.path))
        vertices = _to_world(graph, np.stack([vertex["x"], vertex["y"], vertex["z"]], 1).astype(np.float64), node.frame)
        colours = np.stack([vertex[c] for c in ("red", "green", "blue")], 1) if "red" in vertex else None
        out.meshes[node.kind] = (vertices.astype(np.float32), faces, colours)
    for cloud in graph.of_type(PointCloud):
        if not cloud.path:
            continue
        pts, cols = ply.read_points(graph.resolve(cloud.path))
        pts = _to_world(graph, pts.astype(np.float64), cloud.frame).astype(np.float32)
        cols = cols if cols is not None else np.full_like(pts, 0.7)
        out.points[cloud.kind] = (pts, cols.astype(np.float32))
    for view in graph.views():
        if view.camera is None:
            continue
        cam = graph.trained_camera(view)  # the refined camera where optimize refined it: its photo meets the splats
        image = str(graph.resolve(view.image)) if view.image else None
        out.cameras.append(CameraLayer(view.name, view.role, cam.world_to_camera, cam.K, cam.width, cam.height,
                                       image, cam.id))
    return out


def scene_frame(cameras: list[CameraLayer]) -> tuple[np.ndarray, np.ndarray, float]:
    """(centre [3], up [3], radius) of the camera rig: up is the cameras' mean up axis (-y in OpenCV)."""
    if not cameras:
        return np.zeros(3), np.array([0.0, 0.0, 1.0]), 1.0
    centres = np.stack([camera_center(c.world_to_camera) for c in cameras])
    up = scene_up([c.world_to_camera for c in cameras])
    centre = centres.mean(0)
    radius = float(np.linalg.norm(centres - centre, axis=1).max()) or 1.0
    return centre, up, radius


def metrics_markdown(graph: SceneGraph) -> str:
    """A markdown table of every finished stage: seconds and what it measured."""
    from recon.report import summarise

    rows = ["| stage | s | result |", "| --- | ---: | --- |"]
    for record in graph.stages.values():
        rows.append(f"| {record.name} | {record.seconds:.1f} | {summarise(record.metrics)} |")
    return "\n".join(rows) if graph.stages else "_no stage has finished yet_"
