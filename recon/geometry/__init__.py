"""Geometry: depth fusion, meshing and mesh cleaning."""
