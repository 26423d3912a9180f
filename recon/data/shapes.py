"""Procedural objects for synthetic scenes: triangle meshes built from a few primitives.

Every shape stands on the plane ``z = BASE`` (the synthesiser recentres and
scales it into the unit sphere) and is made of parts, each with its own solid texture (see textures.py). The
shapes are chosen to be hard for sparse-view reconstruction: thin parts (chair
legs, a mug handle, a knot), concavities (mug, vase, gear teeth) and
high-frequency texture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BASE = -0.8  # z of the ground every shape stands on


@dataclass
class Part:
    vertices: np.ndarray  # [V, 3]
    faces: np.ndarray  # [F, 3] int
    texture: str  # name in textures.TEXTURES


@dataclass
class Shape:
    name: str
    parts: list[Part]
    description: str

    def merged(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vertices [V, 3], faces [F, 3], part index per face [F])."""
        verts, faces, part_of = [], [], []
        offset = 0
        for k, part in enumerate(self.parts):
            verts.append(part.vertices)
            faces.append(part.faces + offset)
            part_of.append(np.full(len(part.faces), k))
            offset += len(part.vertices)
        return np.concatenate(verts), np.concatenate(faces), np.concatenate(part_of)


# --- primitives -----------------------------------------------------------------------------


def grid_faces(rows: int, cols: int, wrap: bool) -> np.ndarray:
    """Quads of a rows x cols vertex grid split into triangles; ``wrap`` closes the columns."""
    faces = []
    last = cols if wrap else cols - 1
    for r in range(rows - 1):
        for c in range(last):
            a, b = r * cols + c, r * cols + (c + 1) % cols
            d, e = a + cols, b + cols
            faces += [(a, b, e), (a, e, d)]
    return np.array(faces, dtype=np.int64)


def revolve(radius: np.ndarray, height: np.ndarray, segments: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Surface of revolution about z of the profile polyline (radius[i], height[i])."""
    theta = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    v = np.stack([radius[:, None] * np.cos(theta), radius[:, None] * np.sin(theta),
                  np.repeat(height[:, None], segments, axis=1)], axis=-1).reshape(-1, 3)
    return v, grid_faces(len(radius), segments, wrap=True)


def tube(path: np.ndarray, radius: float | np.ndarray, sides: int = 16,
         closed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A tube of circular section swept along a polyline [N, 3] (parallel-transport frames)."""
    n = len(path)
    tangents = np.gradient(path, axis=0)
    if closed:
        tangents = np.roll(path, -1, axis=0) - np.roll(path, 1, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    ref = np.array([0.0, 0.0, 1.0]) if abs(tangents[0, 2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    normal = np.cross(tangents[0], ref)
    normal /= np.linalg.norm(normal)
    transported = [normal]
    for i in range(1, n):
        m = transported[-1] - np.dot(transported[-1], tangents[i]) * tangents[i]
        transported.append(m / np.linalg.norm(m))
    normals = np.array(transported)
    binormals = np.cross(tangents, normals)
    r = np.broadcast_to(np.asarray(radius, dtype=np.float64), (n,))
    theta = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    ring = np.cos(theta)[None, :, None] * normals[:, None] + np.sin(theta)[None, :, None] * binormals[:, None]
    verts = (path[:, None] + r[:, None, None] * ring).reshape(-1, 3)
    faces = grid_faces(n, sides, wrap=True)
    if closed:
        last = np.array([[(n - 1) * sides + c, (n - 1) * sides + (c + 1) % sides,
                          (c + 1) % sides] for c in range(sides)]
                        + [[(n - 1) * sides + c, (c + 1) % sides, c] for c in range(sides)])
        faces = np.concatenate([faces, last])
    else:
        verts, faces = _cap(verts, faces, 0, sides, path[0], flip=True)
        verts, faces = _cap(verts, faces, (n - 1) * sides, sides, path[-1], flip=False)
    return verts, faces


def _cap(verts: np.ndarray, faces: np.ndarray, start: int, count: int, center: np.ndarray, flip: bool):
    c = len(verts)
    verts = np.vstack([verts, center[None]])
    tri = [(c, start + (k + 1) % count, start + k) if flip else (c, start + k, start + (k + 1) % count)
           for k in range(count)]
    return verts, np.vstack([faces, np.array(tri)])


def box(center: tuple[float, float, float], size: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """An axis-aligned box with outward-facing triangles."""
    c = np.asarray(center, dtype=np.float64)
    h = np.asarray(size, dtype=np.float64) / 2
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return c + corners * h, faces


def extrude(polygon: np.ndarray, z0: float, z1: float) -> tuple[np.ndarray, np.ndarray]:
    """Prism of a star-shaped polygon [N, 2] (counter-clockwise) between z0 and z1."""
    n = len(polygon)
    bottom = np.column_stack([polygon, np.full(n, z0)])
    top = np.column_stack([polygon, np.full(n, z1)])
    verts = np.vstack([bottom, top])
    faces = grid_faces(2, n, wrap=True)
    verts, faces = _cap(verts, faces, 0, n, np.array([*polygon.mean(0), z0]), flip=True)
    verts, faces = _cap(verts, faces, n, n, np.array([*polygon.mean(0), z1]), flip=False)
    return verts, faces


def icosphere(subdivisions: int = 4) -> tuple[np.ndarray, np.ndarray]:
    t = (1 + 5 ** 0.5) / 2
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                  [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=np.float64)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
                  [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
                  [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    for _ in range(subdivisions):
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        unique, inverse = np.unique(edges, axis=0, return_inverse=True)
        mids = v[unique].mean(axis=1)
        mids /= np.linalg.norm(mids, axis=1, keepdims=True)
        m = inverse.reshape(3, -1).T + len(v)
        v = np.vstack([v, mids])
        f = np.concatenate([np.stack([f[:, 0], m[:, 0], m[:, 2]], 1), np.stack([f[:, 1], m[:, 1], m[:, 0]], 1),
                            np.stack([f[:, 2], m[:, 2], m[:, 1]], 1), m])
    return v, f


# --- shapes -----------------------------------------------------------------------------------


def mug() -> Shape:
    R, H, wall = 0.5, 1.1, 0.06
    r = np.array([0.0, R, R, R, R - wall, R - wall, R - wall, 0.0])
    z = np.array([0.0, 0.0, 0.5 * H, H, H, 0.5 * H, wall, wall]) + BASE
    body = revolve(r, z, 72)
    s = np.linspace(-0.45 * np.pi, 0.45 * np.pi, 40)
    handle_path = np.stack([R - 0.02 + 0.32 * np.cos(s), np.zeros_like(s), BASE + 0.55 * H + 0.32 * np.sin(s)], axis=1)
    handle = tube(handle_path, 0.055, 16)
    return Shape("mug", [Part(*body, "checker"), Part(*handle, "stripes")],
                 "hollow cup with a thin handle: concavity and a thin loop")


def chair() -> Shape:
    parts = [Part(*box((0, 0, BASE + 0.55), (0.9, 0.9, 0.08)), "wood")]
    for x in (-0.38, 0.38):
        for y in (-0.38, 0.38):
            parts.append(Part(*box((x, y, BASE + 0.255), (0.06, 0.06, 0.51)), "stripes"))
    for x in (-0.38, 0.38):
        parts.append(Part(*box((x, 0.38, BASE + 1.05), (0.06, 0.06, 0.92)), "stripes"))
    for k, zc in enumerate((0.85, 1.1, 1.35)):
        parts.append(Part(*box((0, 0.38, BASE + zc), (0.76, 0.04, 0.1)), "noise" if k % 2 else "wood"))
    return Shape("chair", parts, "seat, four thin legs and a slatted back: thin parts and see-through gaps")


def knot() -> Shape:
    t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    p, q = 2, 3
    rr = 0.42 + 0.18 * np.cos(q * t)
    path = np.stack([rr * np.cos(p * t), rr * np.sin(p * t), 0.25 * np.sin(q * t) + BASE + 0.35], axis=1)
    return Shape("knot", [Part(*tube(path, 0.1, 20, closed=True), "noise")],
                 "(2,3) torus knot tube: thin, self-occluding")


def vase() -> Shape:
    z = np.linspace(0, 1.35, 48)
    outer = 0.28 + 0.22 * np.sin(np.pi * z / 1.35 * 1.2) ** 2 - 0.12 * np.exp(-((z - 1.15) / 0.12) ** 2)
    outer[0] = 0.0
    inner = np.maximum(outer - 0.04, 0.0)[::-1]
    r = np.concatenate([outer, inner])
    zz = np.concatenate([z, z[::-1]]) + BASE
    zz[len(z):] = np.maximum(zz[len(z):], BASE + 0.1)
    zz[-1] = BASE + 0.1
    r[-1] = 0.0
    return Shape("vase", [Part(*revolve(r, zz, 72), "marble")], "open vase with a narrow neck: deep concavity")


def gear() -> Shape:
    teeth, n = 12, 12 * 8
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    phase = (a * teeth / (2 * np.pi)) % 1.0
    radius = np.where((phase > 0.2) & (phase < 0.65), 0.8, 0.62)
    polygon = np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)
    body = extrude(polygon, BASE, BASE + 0.3)
    hub_r = np.array([0.0, 0.22, 0.22, 0.0])
    hub_z = np.array([BASE + 0.3, BASE + 0.3, BASE + 0.75, BASE + 0.75])
    hub = revolve(hub_r, hub_z, 48)
    return Shape("gear", [Part(*body, "checker"), Part(*hub, "dots")], "spur gear with a hub: many small concavities")


def blob() -> Shape:
    from recon.data.textures import value_noise

    v, f = icosphere(5)
    bump = 0.16 * value_noise(v * 2.2, seed=3) + 0.05 * value_noise(v * 7.0, seed=5)
    v = v * (0.62 + bump)[:, None]
    v[:, 2] = v[:, 2] - v[:, 2].min() + BASE
    return Shape("blob", [Part(v, f, "noise")], "lumpy noise-displaced sphere with fine texture")


def stack() -> Shape:
    parts = [
        Part(*box((0.0, 0.0, BASE + 0.2), (0.9, 0.7, 0.4)), "checker"),
        Part(*box((0.1, -0.05, BASE + 0.55), (0.55, 0.55, 0.3)), "dots"),
    ]
    sv, sf = icosphere(3)
    parts.append(Part(sv * 0.22 + np.array([0.05, 0.0, BASE + 0.92]), sf, "marble"))
    cyl = revolve(np.array([0.0, 0.12, 0.12, 0.0]), np.array([BASE, BASE, BASE + 0.9, BASE + 0.9]), 32)
    parts.append(Part(cyl[0] + np.array([-0.62, 0.35, 0.0]), cyl[1], "stripes"))
    return Shape("stack", parts, "boxes, a ball and a post: planes, edges and a thin pillar")


SHAPES: dict[str, Callable[[], Shape]] = {
    "mug": mug, "chair": chair, "knot": knot, "vase": vase, "gear": gear, "blob": blob, "stack": stack,
}
