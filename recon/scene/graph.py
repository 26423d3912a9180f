"""The scene graph: the one contract between stages, the CLI, the viewer and the evaluator.

A :class:`SceneGraph` holds typed nodes (:class:`Camera`, :class:`View`,
:class:`PointCloud`, :class:`Gaussians`, :class:`Mesh`, :class:`DepthMaps`, :class:`Metrics`),
each with the :class:`Provenance` of the stage that made it. Edges are the
``made_from`` lists of the provenance. Bulk data (pixels, points, splats) lives
in asset files beside ``scene.json``; nodes hold paths, never pixels.

Paths in nodes are strings: absolute for files the user brought (the input
images), relative to the scene folder for assets recon wrote. Camera
conventions are those of :mod:`recon.scene.camera`.

The graph may also carry data that is not yet on disk (points an importer read
from a COLMAP model, an image it must undistort); :class:`SceneStore` writes
those into ``assets/`` when the graph is first saved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from recon.errors import InputError
from recon.scene.names import GAUSSIANS_FINAL, GAUSSIANS_PRIOR

SCHEMA_VERSION = 1

Role = Literal["train", "test", "unused"]
ROLES: tuple[str, ...] = ("train", "test", "unused")


@dataclass
class Provenance:
    """Which stage made a node, with which config, how long it took, from what."""

    stage: str
    config_digest: str = ""
    seconds: float = 0.0
    made_from: list[str] = field(default_factory=list)


@dataclass
class Camera:
    """A pinhole camera: intrinsics ``K`` [3, 3] in pixels and ``world_to_camera`` [4, 4].

    ``sensor`` groups cameras that share one physical sensor (COLMAP's
    camera id); images of one sensor must share a size. ``distortion`` is
    OpenCV's ``(k1, k2, p1, p2, k3)``; it is ``None`` once images are undistorted.
    """

    id: str
    K: np.ndarray
    world_to_camera: np.ndarray
    width: int
    height: int
    distortion: np.ndarray | None = None
    sensor: str = "0"
    provenance: Provenance = field(default_factory=lambda: Provenance("import"))
    near: float | None = None
    """Nearest scene depth along the optical axis, in world units, when the dataset gives it (LLFF's bounds)."""
    far: float | None = None
    """Farthest scene depth, likewise."""


@dataclass
class View:
    """One image of the scene and the camera it was taken with.

    ``index`` is the dataset's own view number (DTU's 0-48), which named splits
    refer to. ``camera`` is ``None`` until poses are known. ``image`` is
    ``None`` for a view that only has a camera (a SpaRe test view to render).
    ``role`` says whether the view trains the model, is held out for
    evaluation, or is not used.
    """

    id: str
    name: str
    index: int
    image: str | None
    camera: str | None = None
    mask: str | None = None
    role: Role = "train"
    provenance: Provenance = field(default_factory=lambda: Provenance("import"))
    # Produces the pixels [H, W, 3] when the image must be rewritten on save
    # (undistorted or down-sampled); not serialised.
    pending_image: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)
    pending_mask: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)


@dataclass
class PointCloud:
    """Points [N, 3] in the scene's world frame, with colours [N, 3] in [0, 1], stored as PLY.

    ``kind``: ``sfm`` (from structure from motion), ``init`` (initial points
    of the optimiser) or ``ground_truth`` (in the dataset's own frame, see
    :attr:`SceneGraph.to_dataset`).
    """

    id: str
    path: str | None
    count: int
    kind: str = "sfm"
    frame: Literal["world", "dataset"] = "world"
    provenance: Provenance = field(default_factory=lambda: Provenance("import"))
    points: np.ndarray | None = field(default=None, repr=False, compare=False)
    colors: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass
class Gaussians:
    """Gaussian splats stored as a 3DGS PLY; ``kind`` is ``3dgs`` or ``2dgs``."""

    id: str
    path: str
    count: int
    kind: Literal["3dgs", "2dgs"] = "3dgs"
    sh_degree: int = 0
    provenance: Provenance = field(default_factory=lambda: Provenance("optimize"))


@dataclass
class Mesh:
    """A triangle mesh stored as PLY; ``kind`` is ``reconstruction`` or ``ground_truth``."""

    id: str
    path: str
    vertices: int
    faces: int
    kind: str = "reconstruction"
    frame: Literal["world", "dataset"] = "world"
    provenance: Provenance = field(default_factory=lambda: Provenance("mesh"))


@dataclass
class DepthMaps:
    """Depth and confidence maps of some views, stored as NPZ: ``depth`` [V, H, W] float32 z-depths (0 where
    unknown) and ``confidence`` [V, H, W] in [0, 1], in the order of ``views`` (view ids), ``width`` x ``height``
    pixels (the views' cameras scaled by ``width / camera width``)."""

    id: str
    path: str
    views: list[str]
    width: int
    height: int
    provenance: Provenance = field(default_factory=lambda: Provenance("init"))


@dataclass
class Metrics:
    """Named numbers a stage measured (JSON-serialisable values)."""

    id: str
    values: dict[str, Any]
    provenance: Provenance = field(default_factory=lambda: Provenance("evaluate"))


Node = Camera | View | PointCloud | Gaussians | Mesh | DepthMaps | Metrics
NODE_TYPES: dict[str, type] = {t.__name__: t for t in (Camera, View, PointCloud, Gaussians, Mesh, DepthMaps, Metrics)}
NodeT = TypeVar("NodeT", bound=Node)


@dataclass
class StageRecord:
    """A finished stage: its resume key, config digest, time and what it measured."""

    name: str
    key: str
    config_digest: str
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


def refined_id(view: View) -> str:
    """Id of the camera node the optimize stage refines ``view``'s training camera into."""
    return f"refined/{view.name}"


@dataclass
class SceneGraph:
    """Cameras, views and everything made from them, plus where they came from.

    ``to_dataset`` [4, 4] is the similarity that maps recon's world frame to
    the dataset's own frame (DTU's millimetres, for instance); identity unless
    the importer normalised the scene. ``meta`` holds facts about the source
    (layout, scan id, the dataset's own split) that evaluation needs.
    """

    name: str
    source: dict[str, Any] = field(default_factory=dict)
    to_dataset: np.ndarray = field(default_factory=lambda: np.eye(4))
    meta: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    stages: dict[str, StageRecord] = field(default_factory=dict)
    root: Path | None = None

    # --- nodes -------------------------------------------------------------
    def add(self, node: NodeT) -> NodeT:
        if node.id in self.nodes:
            raise ValueError(f"duplicate node id {node.id!r}")
        self.nodes[node.id] = node
        return node

    def replace(self, node: NodeT) -> NodeT:
        self.nodes[node.id] = node
        return node

    def node(self, node_id: str, cls: type[NodeT]) -> NodeT:
        """The node ``node_id``, which must be a ``cls``: KeyError when there is none, InputError when it is
        another kind (an inconsistent scene)."""
        node = self.nodes[node_id]
        if not isinstance(node, cls):
            raise InputError(f"{self.name}: node {node_id!r} is a {type(node).__name__}, not a {cls.__name__}")
        return node

    def get(self, node_id: str, cls: type[NodeT]) -> NodeT | None:
        """The node ``node_id`` as in :meth:`node`, or None when there is none."""
        return self.node(node_id, cls) if node_id in self.nodes else None

    def of_type(self, cls: type[NodeT]) -> list[NodeT]:
        return [n for n in self.nodes.values() if isinstance(n, cls)]

    def cameras(self) -> list[Camera]:
        return self.of_type(Camera)

    def views(self, role: str | None = None) -> list[View]:
        views = sorted(self.of_type(View), key=lambda v: (v.index, v.name))
        return [v for v in views if role is None or v.role == role]

    def splats(self) -> Gaussians | None:
        """The scene's newest splats: the prior stage's when it ran, else the optimize stage's, else None."""
        for node_id in (GAUSSIANS_PRIOR, GAUSSIANS_FINAL):
            node = self.nodes.get(node_id)
            if isinstance(node, Gaussians):
                return node
        return None

    def train_masks(self) -> bool:
        """Whether object masks may shape the model; else they only score the held-out views (``data.train_masks``)."""
        return self.meta.get("masks") != "metrics"

    def training_mask(self, view: View) -> str | None:
        """The mask a stage may train with for ``view``: its mask, unless masks are for the metrics only."""
        return view.mask if self.train_masks() else None

    def camera_of(self, view: View) -> Camera:
        if view.camera is None:
            raise InputError(f"view {view.name} has no camera pose")
        return self.node(view.camera, Camera)

    def trained_camera(self, view: View) -> Camera:
        """The camera the splats were trained with: the optimize stage's refinement of ``view``'s camera
        (:func:`refined_id`, when it refined the training cameras) or else ``view``'s own camera. The stages after
        optimize that line renders up with photos (prior, mesh) take this one."""
        node = self.nodes.get(refined_id(view))
        return node if isinstance(node, Camera) else self.camera_of(view)

    def image_of(self, view: View) -> Path:
        """Absolute path of ``view``'s image."""
        if view.image is None:
            raise InputError(f"view {view.name} has no image")
        return self.resolve(view.image)

    def edges(self) -> list[tuple[str, str]]:
        """(source, product) pairs: what each node was made from."""
        return [(src, n.id) for n in self.nodes.values() for src in n.provenance.made_from]

    def drop_stage_outputs(self, stages: set[str]) -> list[Node]:
        """Remove the nodes and records of ``stages`` (to redo them); returns the removed nodes."""
        dropped = [n for n in self.nodes.values() if n.provenance.stage in stages]
        self.nodes = {k: n for k, n in self.nodes.items() if n.provenance.stage not in stages}
        self.stages = {k: r for k, r in self.stages.items() if k not in stages}
        return dropped

    # --- paths ---------------------------------------------------------------
    def resolve(self, path: str) -> Path:
        """Absolute path of a node's file (assets are relative to the scene folder)."""
        p = Path(path)
        if p.is_absolute() or self.root is None:
            return p
        return self.root / p

    def file_of(self, points: PointCloud) -> Path:
        """Absolute path of the PLY file of ``points``, which the store writes when it first saves them."""
        if points.path is None:
            raise InputError(f"{self.name}: {points.id} is not saved yet")
        return self.resolve(points.path)

    # --- serialisation -------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "source": self.source,
            "to_dataset": self.to_dataset.tolist(),
            "meta": self.meta,
            "nodes": [_node_to_json(n) for n in self.nodes.values()],
            "edges": [list(e) for e in self.edges()],
            "stages": [vars(r) for r in self.stages.values()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], root: Path | None = None, where: str = "scene.json") -> SceneGraph:
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise InputError(f"{where}: not a recon scene (no schema_version)")
        if version > SCHEMA_VERSION:
            raise InputError(
                f"{where}: written by a newer recon (schema {version}, this recon reads up to "
                f"{SCHEMA_VERSION}); upgrade recon to read it"
            )
        graph = cls(
            name=data["name"],
            source=data.get("source", {}),
            to_dataset=np.asarray(data.get("to_dataset", np.eye(4).tolist()), dtype=np.float64),
            meta=data.get("meta", {}),
            root=root,
        )
        for item in data.get("nodes", []):
            graph.add(_node_from_json(item, where))
        for rec in data.get("stages", []):
            graph.stages[rec["name"]] = StageRecord(**rec)
        return graph


def _node_to_json(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(node).__name__}
    for name, value in vars(node).items():
        if name in ("pending_image", "pending_mask", "points", "colors"):
            continue
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, Provenance):
            value = vars(value)
        out[name] = value
    return out


def _node_from_json(item: dict[str, Any], where: str) -> Node:
    item = dict(item)
    type_name = item.pop("type", None)
    cls = NODE_TYPES.get(type_name)  # type: ignore[arg-type]
    if cls is None:
        raise InputError(f"{where}: unknown node type {type_name!r}")
    prov = item.pop("provenance", None)
    if prov is not None:
        item["provenance"] = Provenance(**prov)
    if cls is Camera:
        item["K"] = np.asarray(item["K"], dtype=np.float64)
        item["world_to_camera"] = np.asarray(item["world_to_camera"], dtype=np.float64)
        if item.get("distortion") is not None:
            item["distortion"] = np.asarray(item["distortion"], dtype=np.float64)
    try:
        return cls(**item)
    except TypeError as exc:
        raise InputError(f"{where}: malformed {type_name} node {item.get('id')!r} ({exc})") from None
