"""recon: sparse-view 3D reconstruction (3 to 9 photos to poses, splats, mesh and metrics)."""

__version__ = "0.1.0"
