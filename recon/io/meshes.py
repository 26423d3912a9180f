"""Mesh export: PLY, OBJ or GLB (through trimesh) with vertex colours, in the dataset's frame or recon's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon.errors import InputError
from recon.files import atomic_write
from recon.io import ply
from recon.scene.camera import transform_points
from recon.scene.graph import Mesh, SceneGraph
from recon.scene.names import MESH_FINAL


def export(graph: SceneGraph, out: Path, frame: str = "dataset") -> Path:
    """Write the scene's reconstructed mesh to ``out`` (format from its suffix)."""
    import trimesh

    node = graph.get(MESH_FINAL, Mesh)
    if node is None or not node.path:
        raise InputError(f"{graph.root}: the scene has no mesh (the mesh stage has not run)")
    vertex, faces = ply.read_ply(graph.resolve(node.path))
    vertices = np.stack([vertex["x"], vertex["y"], vertex["z"]], 1).astype(np.float64)
    if frame == "dataset":
        vertices = transform_points(vertices, graph.to_dataset)
    colors = None
    if {"red", "green", "blue"} <= set(vertex):
        colors = np.stack([vertex["red"], vertex["green"], vertex["blue"], np.full_like(vertex["red"], 255)], 1)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=colors, process=False)
    out = Path(out)
    kind = out.suffix.lower().lstrip(".")
    if kind not in ("ply", "obj", "glb"):
        raise InputError(f"{out}: mesh formats are .ply, .obj and .glb")
    return atomic_write(out, lambda tmp: mesh.export(tmp, file_type=kind))
