"""PLY reader and writer: round trips, ASCII files, polygons."""

from __future__ import annotations

import numpy as np

from recon.io import ply


def test_binary_points_and_mesh_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    v = rng.normal(size=(30, 3))
    f = rng.integers(0, 30, size=(40, 3))
    c = rng.random((30, 3))
    ply.write_mesh(tmp_path / "m.ply", v, f, c)
    v2, f2 = ply.read_mesh(tmp_path / "m.ply")
    np.testing.assert_allclose(v2, v, atol=1e-6)
    np.testing.assert_array_equal(f2, f)
    _, colors = ply.read_points(tmp_path / "m.ply")
    np.testing.assert_allclose(colors, np.round(c * 255) / 255)
    assert ply.element_counts(tmp_path / "m.ply") == {"vertex": 30, "face": 40}


def test_ascii_ply_with_a_quad_is_fanned_into_triangles(tmp_path):
    text = """ply
format ascii 1.0
element vertex 4
property float x
property float y
property float z
element face 1
property list uchar int vertex_indices
end_header
0 0 0
1 0 0
1 1 0
0 1 0
4 0 1 2 3
"""
    (tmp_path / "q.ply").write_text(text)
    v, f = ply.read_mesh(tmp_path / "q.ply")
    assert v.shape == (4, 3)
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3]])


def test_custom_properties_keep_their_names_and_types(tmp_path):
    props = {"x": np.arange(3, dtype=np.float32), "opacity": np.array([0.1, 0.2, 0.3], dtype=np.float32),
             "label": np.array([1, 2, 3], dtype=np.uint8)}
    ply.write_ply(tmp_path / "g.ply", props)
    back, faces = ply.read_ply(tmp_path / "g.ply")
    assert faces is None
    assert list(back) == ["x", "opacity", "label"]
    assert back["label"].dtype == np.uint8
    np.testing.assert_array_equal(back["opacity"], props["opacity"])
