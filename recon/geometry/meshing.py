"""From a fused volume to a clean coloured mesh: marching cubes, components, visual hull, decimation."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from recon.errors import StageError
from recon.geometry.tsdf import TSDFVolume
from recon.render import image_pixels


def extract(volume: TSDFVolume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marching cubes at the zero level of the observed voxels.

    Returns vertices [V, 3] (world), faces [F, 3] and colours [V, 3].
    """
    from skimage import measure

    tsdf, weight, color = volume.grids()
    observed = weight > 0
    if not observed.any() or tsdf[observed].min() > 0 or tsdf[observed].max() < 0:
        raise StageError("mesh: the fused depth has no surface (no zero crossing in the volume)")
    # Only cubes whose eight corners were all observed may hold surface: deep inside an object, voxels
    # are never updated, and a wall against them would be a surface that is not there.
    field = np.where(observed, tsdf, 1.0)
    verts, faces, _, _ = measure.marching_cubes(field, level=0.0, mask=_observed_cubes(observed))
    colors = np.stack([ndimage.map_coordinates(color[..., c], verts.T, order=1, mode="nearest") for c in range(3)], 1)
    return volume.to_world(verts), faces.astype(np.int64), np.clip(colors, 0.0, 1.0)


def _observed_cubes(observed: np.ndarray) -> np.ndarray:
    """Mask for skimage's marching cubes, which tests a cube at its last corner: all eight corners observed."""
    cubes = np.zeros_like(observed)
    inner = np.ones(tuple(n - 1 for n in observed.shape), dtype=bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                inner &= observed[dx : dx + inner.shape[0], dy : dy + inner.shape[1], dz : dz + inner.shape[2]]
    cubes[1:, 1:, 1:] = inner
    return cubes


def keep_large_components(vertices: np.ndarray, faces: np.ndarray, ratio: float) -> np.ndarray:
    """Faces [F] to keep: connected components with at least ``ratio`` of the largest one's faces."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(faces) == 0:
        return np.zeros(0, dtype=bool)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    n = len(vertices)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    face_label = labels[faces[:, 0]]
    sizes = np.bincount(face_label)
    return sizes[face_label] >= ratio * sizes.max()


def framed(points: np.ndarray, K: np.ndarray, w2c: np.ndarray, width: int,
           height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`recon.render.image_pixels` on arrays: of world points [N, 3] in a camera, the integer pixel (col, row)
    [N, 2] each falls in (0 where it falls outside), Bool [N]: in front of the camera and inside its image, and the
    z-depth [N]."""
    px, inside, z = image_pixels(torch.as_tensor(np.asarray(points, dtype=np.float64)),
                                 torch.as_tensor(np.asarray(w2c, dtype=np.float64)),
                                 torch.as_tensor(np.asarray(K, dtype=np.float64)), width, height)
    return px.numpy(), inside.numpy(), z.numpy()


def inside_hull(points: np.ndarray, cameras: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                dilate: int = 2) -> np.ndarray:
    """Bool [N]: inside every (dilated) mask of the views that see the point. cameras: (K, world_to_camera, mask)."""
    keep = np.ones(len(points), dtype=bool)
    for K, w2c, mask in cameras:
        m = ndimage.binary_dilation(mask, iterations=dilate) if dilate else mask
        h, w = mask.shape
        px, seen, _ = framed(points, K, w2c, w, h)
        inside = np.ones(len(points), dtype=bool)
        inside[seen] = m[px[seen, 1], px[seen, 0]]
        keep &= inside
    return keep


def compact(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, keep_faces: np.ndarray):
    """Drop the faces not kept and the vertices no face uses."""
    faces = faces[keep_faces]
    used = np.unique(faces)
    remap = np.full(len(vertices), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces], colors[used]


def decimate(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, target_faces: int):
    """Quadric decimation to about ``target_faces`` faces (open3d); colours follow the kept vertices."""
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices),
                                     o3d.utility.Vector3iVector(faces.astype(np.int32)))
    mesh.vertex_colors = o3d.utility.Vector3dVector(colors)
    mesh = mesh.simplify_quadric_decimation(int(target_faces))
    mesh.remove_unreferenced_vertices()
    return np.asarray(mesh.vertices), np.asarray(mesh.triangles, dtype=np.int64), np.asarray(mesh.vertex_colors)
