"""Synthetic scenes with exact ground truth: ``recon data synth OUT --scene NAME``.

A procedural object (shapes.py, with solid textures from textures.py) is
ray-cast on the CPU with open3d's RaycastingScene from one of two camera
layouts:

* ``dtu``: cameras on a spherical cap in five rows (DTU-like: 49 views, 4:3
  images, DTU's focal length relative to the image width), above a textured
  platform, all looking at the object;
* ``sphere``: cameras spread evenly over the whole sphere (Fibonacci lattice),
  no platform.

Shading is Lambertian under two fixed directional lights plus ambient, with
no shadows, so a surface point has the same colour in every view. Each view
gets RGB (2x2 super-sampled), the object mask, z-depth and world normals.

The scene is written in the DTU/IDR layout (``image/``, ``mask/``,
``cameras.npz`` with ``world_mat_i`` and ``scale_mat_i``) in a millimetre-like
dataset frame: ``scale_mat`` maps the unit sphere around the object to a
sphere of radius 100 around an offset centre, as DTU's scale matrices do.
Ground truth lives in ``gt/``: the object mesh, a dense point cloud sampled
on the surface that the reference cameras see (as DTU's scanner points are
what its scanner saw), and ``gt/scene.json`` describing the scene. Depth maps
(``depth/*.npz``, key ``depth``, float32 z-depth, 0 where no surface) are in
dataset units; normals (``normal/*.npz``, key ``normal``, float16) are unit
vectors in the dataset frame (whose axes are the object frame's).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from recon import __version__, progress
from recon.data.shapes import SHAPES, Shape, box
from recon.data.textures import TEXTURES
from recon.errors import InputError
from recon.files import read_json_object
from recon.io import images as image_io
from recon.io import ply
from recon.scene.camera import camera_center, intrinsics_matrix, look_at, transform_world_to_camera

DATASET_SCALE = 100.0
DATASET_OFFSET = np.array([-12.5, 40.0, 610.0])
DTU_FOCAL_PER_WIDTH = 2892.0 / 1600.0  # DTU's focal length over its image width
LIGHTS = (np.array([0.4, -0.6, 0.9]), np.array([-0.7, 0.5, 0.3]))
LIGHT_WEIGHTS = (0.5, 0.25)
AMBIENT = 0.35
PLATFORM_SIZE = 3.4
OBJECT_RADIUS = 0.95


@dataclass
class SynthSpec:
    """What to render; see the module docstring."""

    shape: str
    layout: Literal["dtu", "sphere"] = "dtu"
    views: int = 49
    width: int = 400
    height: int = 300
    platform: bool | None = None
    """Render the platform the object stands on (default: on for dtu, off for sphere)."""
    supersample: int = 2
    aux: bool = True
    """Write depth and normal maps."""
    gt_spacing: float = 0.01
    """Spacing of the ground-truth points, in units of the object radius (1 mm in dataset units)."""
    seed: int = 0


def dataset_transform() -> np.ndarray:
    """The scale matrix: object frame (unit sphere) -> dataset frame (millimetre-like)."""
    S = np.eye(4)
    S[:3, :3] *= DATASET_SCALE
    S[:3, 3] = DATASET_OFFSET
    return S


def focal_length(width: int) -> float:
    return DTU_FOCAL_PER_WIDTH * width


def camera_distance(width: int, height: int) -> float:
    """Distance at which the unit sphere fills 85% of the vertical field of view."""
    half_fov = np.arctan(0.5 * height / focal_length(width))
    return 1.0 / np.sin(0.85 * half_fov)


def dtu_layout(count: int, distance: float) -> list[np.ndarray]:
    """World-to-camera poses on a five-row spherical cap, rows ordered back and forth as DTU's are."""
    elevations = np.radians([12.0, 24.0, 36.0, 48.0, 60.0])
    spans = np.radians([150.0, 130.0, 110.0, 90.0, 70.0])
    share = spans / spans.sum() * count
    rows = np.floor(share).astype(int)
    for k in np.argsort(-(share - rows))[: count - rows.sum()]:
        rows[k] += 1
    poses = []
    for r, (elevation, span, n) in enumerate(zip(elevations, spans, rows)):
        azimuths = np.linspace(-span / 2, span / 2, n) if n > 1 else np.zeros(n)
        if r % 2:
            azimuths = azimuths[::-1]
        for az in azimuths:
            eye = distance * np.array([np.sin(az) * np.cos(elevation), -np.cos(az) * np.cos(elevation),
                                       np.sin(elevation)])
            poses.append(look_at(eye, np.zeros(3)))
    return poses


def sphere_layout(count: int, distance: float, min_elevation: float = -90.0) -> list[np.ndarray]:
    """World-to-camera poses on a Fibonacci lattice over the sphere (above ``min_elevation`` degrees)."""
    poses = []
    golden = np.pi * (3.0 - np.sqrt(5.0))
    zmin = np.sin(np.radians(min_elevation))
    for i in range(count):
        z = 1.0 - (i + 0.5) / count * (1.0 - zmin)
        r = np.sqrt(max(0.0, 1.0 - z * z))
        eye = distance * np.array([r * np.cos(golden * i), r * np.sin(golden * i), z])
        poses.append(look_at(eye, np.zeros(3)))
    return poses


class Scene:
    """The object (and platform) in an open3d ray-casting scene, with per-face textures."""

    def __init__(self, shape: Shape, platform: bool):
        import open3d as o3d

        self.shape = shape
        vertices, self.faces, self.face_part = shape.merged()
        # Centre the object's bounding box on the origin and fit it in the unit sphere (IDR's convention).
        center = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
        self.vertices = (vertices - center) * (OBJECT_RADIUS / np.linalg.norm(vertices - center, axis=1).max())
        self.ground = float(self.vertices[:, 2].min())
        self.raycaster = o3d.t.geometry.RaycastingScene()
        self.object_id = self._add(o3d, self.vertices, self.faces)
        self.platform_id = None
        if platform:
            pv, pf = box((0.0, 0.0, self.ground - 0.05), (PLATFORM_SIZE, PLATFORM_SIZE, 0.1))
            self.platform_id = self._add(o3d, pv, pf)
        self.textures = [TEXTURES[p.texture] for p in shape.parts]

    def _add(self, o3d, vertices: np.ndarray, faces: np.ndarray) -> int:
        mesh = o3d.t.geometry.TriangleMesh()
        mesh.vertex.positions = o3d.core.Tensor(vertices.astype(np.float32))
        mesh.triangle.indices = o3d.core.Tensor(faces.astype(np.int32))
        return int(self.raycaster.add_triangles(mesh))

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> dict[str, np.ndarray]:
        import open3d as o3d

        rays = o3d.core.Tensor(np.concatenate([origins, directions], axis=1).astype(np.float32))
        hit = self.raycaster.cast_rays(rays)
        return {k: v.numpy() for k, v in hit.items()}

    def shade(self, origins: np.ndarray,
              directions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rgb [N, 3], object hit [N], ray distance [N] (inf on miss), normal [N, 3])."""
        hit = self.cast(origins, directions)
        t = hit["t_hit"].astype(np.float64)
        gid = hit["geometry_ids"]
        any_hit = np.isfinite(t)
        on_object = gid == self.object_id
        points = origins + directions * np.where(any_hit, t, 0.0)[:, None]
        normals = hit["primitive_normals"].astype(np.float64)
        normals *= -np.sign(np.sum(normals * directions, axis=1, keepdims=True) + 1e-12)  # face the camera
        albedo = np.zeros_like(points)
        prim = hit["primitive_ids"].astype(np.int64)
        for k, texture in enumerate(self.textures):
            sel = on_object & (self.face_part[np.where(on_object, prim, 0)] == k)
            if sel.any():
                albedo[sel] = texture(points[sel])
        if self.platform_id is not None:
            sel = gid == self.platform_id
            if sel.any():
                albedo[sel] = TEXTURES["platform"](points[sel])
        light = np.full(len(points), AMBIENT)
        for direction, weight in zip(LIGHTS, LIGHT_WEIGHTS):
            d = direction / np.linalg.norm(direction)
            light += weight * np.clip(normals @ d, 0.0, None)
        rgb = np.clip(albedo * light[:, None], 0.0, 1.0)
        rgb[~any_hit] = 0.0
        normals[~any_hit] = 0.0
        return rgb, on_object, t, normals


def pixel_rays(K: np.ndarray, w2c: np.ndarray, width: int, height: int, ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Ray origins and unit directions [H*W*ss*ss, 3], grouped per pixel (ss*ss samples each)."""
    offsets = (np.arange(ss) + 0.5) / ss
    u = (np.arange(width)[None, :, None, None] + offsets[None, None, None, :]) * np.ones((height, 1, ss, 1))
    v = (np.arange(height)[:, None, None, None] + offsets[None, None, :, None]) * np.ones((1, width, 1, ss))
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1)
    dirs_cam = pix @ np.linalg.inv(K).T
    R = w2c[:3, :3]
    dirs = dirs_cam @ R  # R.T applied to each row
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origins = np.broadcast_to(camera_center(w2c), dirs.shape)
    return np.ascontiguousarray(origins), dirs


def render(scene: Scene, K: np.ndarray, w2c: np.ndarray, width: int, height: int, ss: int) -> dict[str, np.ndarray]:
    """RGB [H, W, 3], mask [H, W], z-depth [H, W] (object frame, 0 = nothing) and normals [H, W, 3]."""
    origins, dirs = pixel_rays(K, w2c, width, height, ss)
    rgb, on_object, _, _ = scene.shade(origins, dirs)
    n = ss * ss
    image = rgb.reshape(height, width, n, 3).mean(axis=2)
    mask = on_object.reshape(height, width, n).mean(axis=2) >= 0.5
    c_origins, c_dirs = pixel_rays(K, w2c, width, height, 1)
    _, _, t, normals = scene.shade(c_origins, c_dirs)
    z = np.where(np.isfinite(t), t * (c_dirs @ w2c[2, :3]), 0.0)
    return {"rgb": image.astype(np.float32), "mask": mask, "depth": z.reshape(height, width),
            "normal": normals.reshape(height, width, 3)}


def ground_truth_points(scene: Scene, spec: SynthSpec, rng: np.random.Generator) -> np.ndarray:
    """Points [N, 3] on the object surface seen by a dense ring of reference cameras (object frame)."""
    distance = camera_distance(256, 192)
    min_elevation = 0.0 if scene.platform_id is not None else -90.0
    seen = np.zeros(len(scene.faces), dtype=bool)
    K = intrinsics_matrix(focal_length(256), focal_length(256), 128, 96)
    for w2c in sphere_layout(120, distance, min_elevation):
        origins, dirs = pixel_rays(K, w2c, 256, 192, 1)
        hit = scene.cast(origins, dirs)
        ids = hit["primitive_ids"][hit["geometry_ids"] == scene.object_id]
        seen[ids.astype(np.int64)] = True
    tri = scene.vertices[scene.faces[seen]]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    count = int(np.ceil(areas.sum() / spec.gt_spacing ** 2))
    pick = rng.choice(len(tri), size=count, p=areas / areas.sum())
    a, b = rng.random(count), rng.random(count)
    flip = a + b > 1
    a[flip], b[flip] = 1 - a[flip], 1 - b[flip]
    t = tri[pick]
    return t[:, 0] + a[:, None] * (t[:, 1] - t[:, 0]) + b[:, None] * (t[:, 2] - t[:, 0])


def _replaceable(out: Path) -> bool:
    """Whether --force may replace ``out``: an empty folder, or a scene this module wrote (its gt/scene.json)."""
    if not out.is_dir():
        return False
    if not any(out.iterdir()):
        return True
    try:
        meta = read_json_object(out / "gt" / "scene.json", "a synthetic scene's description")
    except InputError:
        return False
    return str(meta.get("generator", "")).startswith("recon ")


def check_synth_target(out: Path, spec: SynthSpec, force: bool = False) -> None:
    """What :func:`synthesize` refuses, checked before anything is rendered: one line each."""
    if spec.shape not in SHAPES:
        raise InputError(f"unknown synthetic scene {spec.shape!r}; scenes: {', '.join(SHAPES)}")
    if spec.layout not in ("dtu", "sphere"):
        raise InputError(f"unknown camera layout {spec.layout!r}; layouts: dtu, sphere")
    if spec.views < 1 or spec.width < 8 or spec.height < 8 or spec.supersample < 1:
        raise InputError("synth needs at least 1 view, an image of at least 8x8 pixels and supersample >= 1")
    if spec.seed < 0:
        raise InputError(f"synth needs a seed of 0 or more, not {spec.seed}")
    out = Path(out)
    if out.exists() and not force:
        raise InputError(f"{out}: already exists (use --force to replace it)")
    if out.exists() and not _replaceable(out):
        raise InputError(f"{out}: exists and is not a synthetic scene recon wrote (gt/scene.json); --force replaces "
                         f"only those")


def synthesize(out: Path, spec: SynthSpec, force: bool = False) -> Path:
    """Render the scene into ``out`` (written to a temporary folder, then renamed into place)."""
    check_synth_target(out, spec, force)
    out = Path(out)
    platform = spec.platform if spec.platform is not None else spec.layout == "dtu"
    scene = Scene(SHAPES[spec.shape](), platform)
    distance = camera_distance(spec.width, spec.height)
    poses = (dtu_layout if spec.layout == "dtu" else sphere_layout)(spec.views, distance)
    f = focal_length(spec.width)
    K = intrinsics_matrix(f, f, spec.width / 2.0, spec.height / 2.0)
    S = dataset_transform()
    K4 = np.eye(4)
    K4[:3, :3] = K

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{os.getpid()}-{out.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for sub in ("image", "mask", "gt") + (("depth", "normal") if spec.aux else ()):
            (tmp / sub).mkdir(parents=True)
        mats = {}
        with progress.task(f"rendering {spec.shape}", len(poses) + 1) as bar:
            for i, w2c in enumerate(poses):
                view = render(scene, K, w2c, spec.width, spec.height, spec.supersample)
                image_io.write_image(tmp / "image" / f"{i:06d}.png", view["rgb"])
                image_io.write_mask(tmp / "mask" / f"{i:03d}.png", view["mask"])
                if spec.aux:
                    np.savez_compressed(tmp / "depth" / f"{i:06d}.npz",
                                        depth=(view["depth"] * DATASET_SCALE).astype(np.float32))
                    np.savez_compressed(tmp / "normal" / f"{i:06d}.npz", normal=view["normal"].astype(np.float16))
                w2c_dataset = transform_world_to_camera(w2c, S)
                mats[f"world_mat_{i}"] = K4 @ w2c_dataset
                mats[f"scale_mat_{i}"] = S
                bar.advance()
            np.savez(tmp / "cameras.npz", **mats)
            points = ground_truth_points(scene, spec, np.random.default_rng(spec.seed))
            to_dataset = lambda x: x * DATASET_SCALE + DATASET_OFFSET  # noqa: E731
            ply.write_mesh(tmp / "gt" / "mesh.ply", to_dataset(scene.vertices), scene.faces)
            ply.write_points(tmp / "gt" / "points.ply", to_dataset(points))
            bar.advance()
        meta = {
            "generator": f"recon {__version__}",
            "spec": asdict(spec),
            "platform": platform,
            "description": scene.shape.description,
            "units": "millimetre-like dataset units; the object lies within radius 100 of the scale matrix centre",
            "camera_distance": distance * DATASET_SCALE,
            "intrinsics": K.tolist(),
            "scale_mat": S.tolist(),
            "lights": [d.tolist() for d in LIGHTS],
            "ground_truth_points": len(points),
        }
        (tmp / "gt" / "scene.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
