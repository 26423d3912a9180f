"""The output folder's vocabulary: the node ids and asset paths that more than one module names.

Each id is the key of its node in ``scene.json`` and each path is relative to the scene folder; changing one
changes the format on disk.
"""

from __future__ import annotations

GAUSSIANS_FINAL = "gaussians/final"
"""The optimize stage's splats (``assets/splats.ply``)."""
GAUSSIANS_PRIOR = "gaussians/prior"
"""The prior stage's splats, when its check let them replace the optimize stage's (``assets/prior/splats.ply``)."""

POINTS_SFM = "points/sfm"
"""Structure-from-motion points: the importer's (a COLMAP model, a transforms.json's ply), or the poses stage's
when it estimates the cameras."""
POINTS_MVS = "points/mvs"
"""The init stage's multi-view-stereo points, fused from ``DEPTH_MVS``."""
POINTS_INIT = "points/init"
"""The points the init stage chose to start the splats from; the optimize stage reads them."""
POINTS_GROUND_TRUTH = "points/ground_truth"
"""A scan's ground-truth point cloud (the importer's, in the dataset's frame); the mesh stage scores against it."""

DEPTH_MVS = "depth/mvs"
"""The init stage's multi-view-stereo depth maps of the training views; the optimize stage's depth term reads them."""

MESH_FINAL = "mesh/final"
"""The mesh stage's mesh (``assets/mesh.ply``); ``recon export`` writes it."""
MESH_GROUND_TRUTH = "mesh/ground_truth"
"""A synthetic scene's ground-truth mesh (the importer's, in the dataset's frame); the mesh stage scores against it."""


def metrics_id(stage: str) -> str:
    """The id of the :class:`~recon.scene.graph.Metrics` node that stage ``stage`` records: ``metrics/<stage>``."""
    return f"metrics/{stage}"


# Folders and files in the scene folder that more than one place names (relative to the scene folder).
ASSETS_DIR = "assets"
"""Every file recon writes besides ``scene.json``; a folder with it but no ``scene.json`` is half-written."""
RENDERS_DIR = "assets/renders"
"""The held-out views rendered by the optimize stage's splats, one ``<view name>.png`` each."""
PRIOR_RENDERS_DIR = "assets/prior/renders"
"""The held-out views rendered by the prior stage's splats, one ``<view name>.png`` each."""
SPLATS_FILE = "assets/splats.ply"
"""The file of ``GAUSSIANS_FINAL`` (3DGS PLY)."""
PRIOR_SPLATS_FILE = "assets/prior/splats.ply"
"""The file of ``GAUSSIANS_PRIOR`` (3DGS PLY)."""
MESH_FILE = "assets/mesh.ply"
"""The file of ``MESH_FINAL``."""
OPTIMIZE_LOSS_FILE = "assets/optimize/loss.json"
"""The optimize stage's loss curves."""
PRIOR_LOSS_FILE = "assets/prior/loss.json"
"""The prior stage's loss curves (the repair model's and, when applied, the distillation's)."""
