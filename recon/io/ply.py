"""PLY reading and writing: point clouds, meshes and Gaussian splats.

One small implementation for every PLY recon touches: named per-vertex
properties (``x y z red green blue`` for points, the 3DGS layout for splats)
and an optional triangle ``face`` element. Reads ASCII and binary files of
either byte order; writes binary little-endian.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon.errors import InputError

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_NUMPY_TO_PLY = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort",
                 "i4": "int", "u4": "uint", "f4": "float", "f8": "double"}


def write_ply(path: Path, vertex: dict[str, np.ndarray], faces: np.ndarray | None = None) -> None:
    """Write a binary little-endian PLY.

    ``vertex`` maps property names to arrays of length N (written in the given
    order and dtype); ``faces`` is an int array [F, 3] of vertex indices.
    """
    names = list(vertex)
    n = len(vertex[names[0]]) if names else 0
    dtype = []
    for name in names:
        arr = np.asarray(vertex[name])
        if arr.shape != (n,):
            raise ValueError(f"property {name} has shape {arr.shape}, expected ({n},)")
        dtype.append((name, "<" + arr.dtype.str[1:]))
    rows = np.empty(n, dtype=dtype)
    for name in names:
        rows[name] = vertex[name]
    header = ["ply", "format binary_little_endian 1.0", "comment written by recon", f"element vertex {n}"]
    header += [f"property {_NUMPY_TO_PLY[rows.dtype[name].str[1:]]} {name}" for name in names]
    face_rows = None
    if faces is not None:
        faces = np.asarray(faces)
        face_rows = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
        face_rows["n"] = 3
        face_rows["v"] = faces
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    header.append("end_header")
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(rows.tobytes())
        if face_rows is not None:
            f.write(face_rows.tobytes())


def read_ply(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Read a PLY: (vertex properties by name, faces [F, 3] or None).

    Polygons with more than three corners are fanned into triangles.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise InputError(f"{path}: not a PLY file")
    body_start = data.index(b"\n", end) + 1
    header = data[:body_start].decode("ascii", errors="replace").splitlines()
    fmt = None
    elements: list[tuple[str, int, list[tuple[str, ...]]]] = []
    for line in header:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property" and elements:
            elements[-1][2].append(tuple(parts[1:]))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise InputError(f"{path}: unsupported PLY format {fmt!r}")
    try:
        if fmt == "ascii":
            return _read_ascii(data[body_start:].decode("ascii").split(), elements)
        return _read_binary(data, body_start, "<" if fmt == "binary_little_endian" else ">", elements)
    except (ValueError, IndexError, KeyError) as exc:
        raise InputError(f"{path}: malformed PLY ({exc})") from None


def element_counts(path: Path) -> dict[str, int]:
    """{element name: count} from a PLY header, without reading the body."""
    counts: dict[str, int] = {}
    try:
        with open(path, "rb") as f:
            if f.readline().strip() != b"ply":
                raise InputError(f"{path}: not a PLY file")
            for raw in f:
                parts = raw.split()
                if parts[:1] == [b"element"]:
                    counts[parts[1].decode()] = int(parts[2])
                elif parts[:1] == [b"end_header"]:
                    return counts
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    raise InputError(f"{path}: not a PLY file (no end_header)")


def _read_binary(data: bytes, offset: int, order: str, elements) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    vertex: dict[str, np.ndarray] = {}
    faces = None
    for name, count, props in elements:
        if any(p[0] == "list" for p in props):
            if len(props) != 1:
                raise ValueError(f"element {name} mixes lists and scalars")
            _, count_type, index_type, _ = props[0]
            ct = np.dtype(order + _PLY_TYPES[count_type])
            it = np.dtype(order + _PLY_TYPES[index_type])
            first = int(np.frombuffer(data, ct, 1, offset)[0]) if count else 3
            row = np.dtype([("n", ct), ("v", it, (first,))])
            rows = np.frombuffer(data, row, count, offset)
            if count and np.all(rows["n"] == first):
                polys = [rows["v"]]
                offset += row.itemsize * count
            else:  # ragged polygons: walk them one by one
                polys, offset = _ragged(data, offset, count, ct, it)
            if name == "face":
                faces = _fan(polys)
            continue
        dtype = np.dtype([(p[1], order + _PLY_TYPES[p[0]]) for p in props])
        rows = np.frombuffer(data, dtype, count, offset)
        offset += dtype.itemsize * count
        if name == "vertex":
            vertex = {p[1]: rows[p[1]].astype(rows.dtype[p[1]].newbyteorder("=")) for p in props}
    return vertex, faces


def _ragged(data: bytes, offset: int, count: int, ct: np.dtype, it: np.dtype):
    polys = []
    for _ in range(count):
        n = int(np.frombuffer(data, ct, 1, offset)[0])
        offset += ct.itemsize
        polys.append(np.frombuffer(data, it, n, offset)[None])
        offset += it.itemsize * n
    return polys, offset


def _read_ascii(tokens: list[str], elements) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    pos = 0
    vertex: dict[str, np.ndarray] = {}
    faces = None
    for name, count, props in elements:
        if any(p[0] == "list" for p in props):
            polys = []
            for _ in range(count):
                n = int(tokens[pos])
                polys.append(np.array(tokens[pos + 1 : pos + 1 + n], dtype=np.int64)[None])
                pos += 1 + n
            if name == "face":
                faces = _fan(polys)
            continue
        k = len(props)
        table = np.array(tokens[pos : pos + k * count], dtype=np.float64).reshape(count, k)
        pos += k * count
        if name == "vertex":
            vertex = {p[1]: table[:, i].astype(_PLY_TYPES[p[0]]) for i, p in enumerate(props)}
    return vertex, faces


def _fan(polys: list[np.ndarray]) -> np.ndarray:
    tris = []
    for block in polys:
        block = np.asarray(block, dtype=np.int64)
        for k in range(1, block.shape[1] - 1):
            tris.append(np.stack([block[:, 0], block[:, k], block[:, k + 1]], axis=1))
    return np.concatenate(tris) if tris else np.zeros((0, 3), dtype=np.int64)


def write_points(path: Path, points: np.ndarray, colors: np.ndarray | None = None) -> None:
    """Point cloud PLY: float xyz and, when given, uchar RGB from colours in [0, 1]."""
    points = np.asarray(points, dtype=np.float32)
    vertex = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2]}
    if colors is not None:
        rgb = np.clip(np.round(np.asarray(colors) * 255.0), 0, 255).astype(np.uint8)
        vertex.update(red=rgb[:, 0], green=rgb[:, 1], blue=rgb[:, 2])
    write_ply(path, vertex)


def read_points(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Points [N, 3] float64 and colours [N, 3] in [0, 1] (or None) of a PLY."""
    vertex, _ = read_ply(path)
    return _points_and_colors(vertex, path)


def _points_and_colors(vertex: dict[str, np.ndarray], path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if not {"x", "y", "z"} <= set(vertex):
        raise InputError(f"{path}: PLY has no x, y, z vertex properties")
    points = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float64)
    colors = None
    if {"red", "green", "blue"} <= set(vertex):
        rgb = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1).astype(np.float64)
        colors = rgb / (255.0 if vertex["red"].dtype == np.uint8 else max(1.0, rgb.max()))
    return points, colors


def write_mesh(path: Path, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None) -> None:
    """Triangle mesh PLY with optional per-vertex colours in [0, 1]."""
    v = np.asarray(vertices, dtype=np.float32)
    vertex: dict[str, np.ndarray] = {"x": v[:, 0], "y": v[:, 1], "z": v[:, 2]}
    if colors is not None:
        rgb = np.clip(np.round(np.asarray(colors) * 255.0), 0, 255).astype(np.uint8)
        vertex.update(red=rgb[:, 0], green=rgb[:, 1], blue=rgb[:, 2])
    write_ply(path, vertex, faces)


def read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices [V, 3] float64 and triangles [F, 3] int64 of a PLY mesh."""
    vertex, faces = read_ply(path)
    points, _ = _points_and_colors(vertex, path)
    if faces is None:
        raise InputError(f"{path}: PLY has no faces")
    return points, faces
