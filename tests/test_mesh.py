"""Mesh stage and geometry metrics: exact depth fuses to the right surface; DTU's protocol on a hand-built fixture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.io import savemat

from recon.config import load_config
from recon.geometry import meshing
from recon.geometry.tsdf import TSDFVolume
from recon.io import ply
from recon.metrics import geometry
from recon.pipeline import run_scene
from recon.scene.camera import camera_center, intrinsics_matrix, look_at


def sphere_depth(K, w2c, width, height, center, radius):
    """Exact z-depth of a sphere through each pixel centre (inf where the ray misses)."""
    v, u = np.mgrid[0:height, 0:width] + 0.5
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)  # z = 1
    o = w2c[:3, :3] @ center + w2c[:3, 3]  # sphere centre in the camera
    a = (rays**2).sum(-1)
    b = -2 * rays @ o
    c = o @ o - radius**2
    disc = b * b - 4 * a * c
    t = (-b - np.sqrt(np.clip(disc, 0, None))) / (2 * a)
    return np.where(disc > 0, t, np.inf)


def test_fusing_exact_depth_of_a_sphere_recovers_it():
    center, radius = np.array([0.3, -0.2, 0.1]), 0.8
    K = intrinsics_matrix(120, 120, 60, 45)
    volume = TSDFVolume(center, 1.1, 64)
    golden = np.pi * (3 - np.sqrt(5))
    for i in range(30):
        z = 1 - 2 * (i + 0.5) / 30
        r = np.sqrt(1 - z * z)
        w2c = look_at(center + 3.5 * np.array([r * np.cos(golden * i), r * np.sin(golden * i), z]), center)
        depth = sphere_depth(K, w2c, 120, 90, center, radius)
        volume.integrate(torch.tensor(depth), torch.tensor(K), torch.tensor(w2c))
    vertices, faces, _ = meshing.extract(volume)
    error = np.abs(np.linalg.norm(vertices - center, axis=1) - radius)
    assert error.mean() < 0.1 * volume.voxel and error.max() < 0.5 * volume.voxel
    directions = np.random.default_rng(0).normal(size=(300_000, 3))
    gt = center + radius * directions / np.linalg.norm(directions, axis=1, keepdims=True)  # about 3 mm apart
    result = geometry.evaluate_mesh(vertices, faces, gt, density=0.005, max_dist=1.0, thresholds=(0.01,))
    assert result.chamfer < 0.005 and result.fscore["0.01"] > 0.95


def test_components_and_visual_hull_cleaning():
    big = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    small = big[:3] * 0.1 + 5
    vertices = np.vstack([big, small])
    faces = np.array([[0, 1, 2], [1, 3, 2], [4, 5, 6]])
    np.testing.assert_array_equal(meshing.keep_large_components(vertices, faces, 0.6), [True, True, False])
    K = intrinsics_matrix(50, 50, 20, 20)
    w2c = look_at(np.array([0.0, 0.0, 5.0]), np.zeros(3), up=np.array([0.0, 1.0, 0.0]))
    mask = np.zeros((40, 40), bool)
    mask[15:25, 15:25] = True
    inside = meshing.inside_hull(np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]]), [(K, w2c, mask)], dilate=0)
    assert inside.tolist() == [True, False]
    v2, f2, c2 = meshing.compact(vertices, faces, np.zeros_like(vertices), np.array([False, True, True]))
    assert len(v2) == 6 and f2.max() == 5


def _dtu_fixture(root, scan=7):
    """A 20 mm square of ground truth on z=0, 0.2 mm apart, plus points that the protocol must leave out:
    400 under the ground plane z = -1 and 400 40 mm above the square (beyond the 20 mm cut)."""
    xs = np.arange(0, 20.0001, 0.2)
    gx, gy = np.meshgrid(xs, xs)
    stl = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1)
    cx, cy = np.meshgrid(np.arange(20.0) + 0.5, np.arange(20.0) + 0.5)
    below = np.stack([cx.ravel(), cy.ravel(), np.full(cx.size, -3.0)], 1)
    far = np.stack([cx.ravel(), cy.ravel(), np.full(cx.size, 40.0)], 1)
    (root / "Points" / "stl").mkdir(parents=True)
    (root / "ObsMask").mkdir()
    ply.write_points(root / "Points" / "stl" / f"stl{scan:03d}_total.ply", np.vstack([stl, below, far]))
    obs = np.ones((26, 26, 52), dtype=np.uint8)
    obs[17:, :, :] = 0  # x > 16 mm was not observed
    savemat(root / "ObsMask" / f"ObsMask{scan}_10.mat",
            {"ObsMask": obs, "BB": np.array([[-1.0, -1, -5], [24, 24, 46]]), "Res": np.array([[1.0]])})
    savemat(root / "ObsMask" / f"Plane{scan}.mat", {"P": np.array([[0.0], [0.0], [1.0], [1.0]])})
    return geometry.DTUGroundTruth.find(root, scan)


def test_dtu_protocol_on_a_hand_built_scan(tmp_path):
    gt = _dtu_fixture(tmp_path)
    # The prediction: the square 1 mm above the truth; a patch 10 mm up where the scan saw nothing
    # (x > 16 mm: not in accuracy); a triangle far outside the scan's box (in nothing).
    square = np.array([[0, 0, 1.0], [20, 0, 1], [20, 20, 1], [0, 20, 1]])
    unobserved = np.array([[18, 2, 10.0], [19.5, 2, 10], [19.5, 4, 10]])
    far = np.array([[300, 300, 0.0], [301, 300, 0], [300, 301, 0]])
    vertices = np.vstack([square, unobserved, far])
    faces = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [7, 8, 9]])
    result = geometry.evaluate_dtu(vertices, faces, gt, thresholds=(1.5,))
    # Hand-checked: each counted point on either side is 1 mm above or below a point of the other, at most
    # 0.15 mm aside (the 0.2 mm grids), so both means are 1 mm to within sqrt(1 + 0.15^2) - 1 = 0.011 mm.
    # Had the unobserved patch counted, accuracy would be about 1.08 mm; had the 400 points under the plane
    # counted (4 mm away), completeness would be about 1.11 mm.
    assert result.accuracy == pytest.approx(1.0, abs=0.011)
    assert result.completeness == pytest.approx(1.0, abs=0.011)
    assert result.chamfer == pytest.approx((result.accuracy + result.completeness) / 2)
    assert result.precision["1.5"] == pytest.approx(1.0) and result.recall["1.5"] < 1.0  # the far points


def test_mesh_stage_on_the_cpu_and_exports(synthetic_scene, tmp_path):
    import trimesh

    from recon.cli import main

    cfg = load_config("tiny", {"views.count": 4, "mesh.extra_views": 6})
    graph = run_scene(synthetic_scene, cfg, tmp_path).graph
    node = graph.nodes["mesh/final"]
    vertices, faces = ply.read_mesh(tmp_path / "mug" / node.path)
    assert len(faces) == node.faces > 100
    metrics = graph.nodes["metrics/mesh"].values
    assert metrics["depth_maps"] == 10 and math.isfinite(metrics["geometry"]["chamfer"])
    for fmt in ("ply", "obj", "glb"):
        assert main(["export", str(tmp_path / "mug"), "--format", fmt]) == 0
        mesh = trimesh.load(tmp_path / "mug" / "export" / f"mesh.{fmt}", force="mesh", process=False)
        assert len(mesh.faces) == node.faces
        # Exported in the dataset's frame: the object sits within 100 units of the scale matrix's centre.
        assert np.linalg.norm(mesh.vertices.mean(0) - graph.to_dataset[:3, 3]) < 100
    assert main(["export", str(tmp_path / "mug"), "--format", "ply", "--frame", "world",
                 "--to", str(tmp_path / "world.ply")]) == 0
    world = trimesh.load(tmp_path / "world.ply", process=False)
    np.testing.assert_allclose(np.asarray(world.vertices), vertices, atol=1e-5)
    assert np.linalg.norm(camera_center(graph.cameras()[0].world_to_camera)) > 2  # world frame is normalised


def test_thinning_matches_the_greedy_loop_and_the_grid_search_matches_a_kd_tree():
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(2)
    points = rng.random((6000, 3))
    shuffled = points[np.random.default_rng(0).permutation(len(points))]
    keep = np.ones(len(shuffled), dtype=bool)
    for i, neighbours in enumerate(cKDTree(shuffled).query_ball_point(shuffled, 0.04)):  # DTU's loop, verbatim
        if keep[i]:
            keep[neighbours] = False
            keep[i] = True
    np.testing.assert_array_equal(geometry.thin(points, 0.04), shuffled[keep])
    sphere = rng.normal(size=(40000, 3))
    reference = 300 + 50 * sphere / np.linalg.norm(sphere, axis=1, keepdims=True)
    query = np.vstack([reference[:5000] + rng.normal(scale=0.5, size=(5000, 3)),  # near the surface
                       300 + rng.normal(scale=100, size=(500, 3))])  # far from it: the brute-force fallback
    shift = reference.mean(axis=0)
    found = geometry.grid_nearest(torch.tensor(query - shift, dtype=torch.float32),
                                  torch.tensor(reference - shift, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(found, cKDTree(reference).query(query)[0], atol=1e-3)


@pytest.mark.gpu
def test_fusion_and_nearest_neighbours_on_cuda_match_the_cpu():
    center, radius = np.zeros(3), 0.8
    K = intrinsics_matrix(120, 120, 60, 45)
    volumes = {d: TSDFVolume(center, 1.1, 48, device=d) for d in ("cpu", "cuda")}
    for i in range(8):
        angle = 2 * np.pi * i / 8
        w2c = look_at(3.5 * np.array([np.cos(angle), np.sin(angle), 0.4]), center)
        depth = sphere_depth(K, w2c, 120, 90, center, radius)
        for d, volume in volumes.items():
            volume.integrate(torch.tensor(depth, device=d), torch.tensor(K, device=d), torch.tensor(w2c, device=d))
    torch.testing.assert_close(volumes["cuda"].tsdf.cpu(), volumes["cpu"].tsdf, atol=1e-4, rtol=0)
    torch.testing.assert_close(volumes["cuda"].weight.cpu(), volumes["cpu"].weight)
    rng = np.random.default_rng(1)
    offset = np.array([300.0, -200.0, 600.0])  # millimetre coordinates far from the origin, as in DTU
    for n, m in ((5000, 20000), (200_000, 300_000)):  # brute force, then the grid
        query, reference = offset + 50 * rng.normal(size=(n, 3)), offset + 50 * rng.normal(size=(m, 3))
        np.testing.assert_allclose(geometry.nearest_distances(query, reference, "cuda"),
                                   geometry.nearest_distances(query, reference, "cpu"), atol=1e-3)
