"""Scene graph and store: scene.json round trips, schema versions, atomic writes, the lock."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from recon.errors import InputError
from recon.files import atomic_write
from recon.scene.graph import (
    SCHEMA_VERSION,
    Camera,
    Gaussians,
    Mesh,
    Metrics,
    PointCloud,
    Provenance,
    SceneGraph,
    StageRecord,
    View,
)
from recon.scene.store import SceneStore


def full_graph() -> SceneGraph:
    g = SceneGraph(name="toy", source={"layout": "test"}, meta={"scan": 24})
    g.to_dataset = np.diag([2.0, 2.0, 2.0, 1.0])
    g.add(Camera(id="camera/0000", K=np.array([[100.0, 0, 50], [0, 100, 40], [0, 0, 1]]), world_to_camera=np.eye(4),
                 width=100, height=80, distortion=np.array([0.1, 0, 0, 0, 0]), sensor="1"))
    g.add(View(id="view/0000", name="000000", index=0, image="/data/a.png", camera="camera/0000", mask="/data/m.png"))
    g.add(View(id="view/0001", name="000001", index=1, image=None, camera="camera/0000", role="test"))
    g.add(PointCloud(id="points/sfm", path="assets/sfm.ply", count=10, provenance=Provenance("poses", "abc", 1.5)))
    g.add(Gaussians(id="gaussians/final", path="assets/g.ply", count=5, kind="2dgs", sh_degree=3,
                    provenance=Provenance("optimize", "d", 2.0, ["points/sfm", "view/0000"])))
    g.add(Mesh(id="mesh/final", path="assets/m.ply", vertices=8, faces=12,
               provenance=Provenance("mesh", made_from=["gaussians/final"])))
    g.add(Metrics(id="metrics/eval", values={"psnr": 21.5, "per_view": [1.0, 2.0]}))
    g.stages["views"] = StageRecord("views", "k1", "c1", 0.1, {"train": ["000000"]})
    return g


def test_scene_json_round_trip(tmp_path):
    store = SceneStore(tmp_path / "toy")
    g = full_graph()
    store.save(g)
    back = store.load()
    assert set(back.nodes) == set(g.nodes)
    for node_id, node in g.nodes.items():
        other = back.nodes[node_id]
        assert type(other) is type(node)
        for key, value in vars(node).items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(getattr(other, key), value)
            elif key not in ("pending_image", "pending_mask", "points", "colors"):
                assert getattr(other, key) == value, (node_id, key)
    np.testing.assert_array_equal(back.to_dataset, g.to_dataset)
    assert back.stages == g.stages
    assert ("gaussians/final", "mesh/final") in back.edges()
    assert json.loads(store.scene_file.read_text())["schema_version"] == SCHEMA_VERSION


def test_newer_schema_is_refused_with_a_clear_message(tmp_path):
    store = SceneStore(tmp_path)
    store.save(full_graph())
    data = json.loads(store.scene_file.read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    store.scene_file.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"newer recon \(schema 2"):
        store.load()


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "scene.json"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.json"]


def test_pending_points_are_written_as_assets(tmp_path):
    g = SceneGraph(name="p")
    pts = np.random.default_rng(0).normal(size=(20, 3))
    g.add(PointCloud(id="points/sfm", path=None, count=20, points=pts, colors=np.full((20, 3), 0.5)))
    store = SceneStore(tmp_path)
    store.save(g)
    from recon.io.ply import read_points

    node = store.load().nodes["points/sfm"]
    back, colors = read_points(tmp_path / node.path)
    np.testing.assert_allclose(back, pts, atol=1e-5)
    np.testing.assert_allclose(colors, 128 / 255)


def test_lock_refuses_a_second_run_and_takes_over_a_stale_one(tmp_path):
    store = SceneStore(tmp_path / "out")
    with store.lock():
        with pytest.raises(InputError, match="held by another run"):
            with SceneStore(tmp_path / "out").lock():
                pass
    assert not (tmp_path / "out" / ".lock").exists()
    # A lock left by a process that no longer exists is taken over.
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "out" / ".lock").write_text(f"{dead.pid} {socket.gethostname()}\n")
    with store.lock():
        assert (tmp_path / "out" / ".lock").read_text().startswith(str(os.getpid()))


@pytest.mark.parametrize("bounds", [(20.0, 100.0), None])
def test_the_scene_lies_ahead_of_a_forward_facing_rig_whose_axes_spread_apart(bounds):
    """Three cameras side by side, each turned 2 degrees outward: their axes meet behind them, yet the scene's centre
    is ahead of every camera, where the inverse depth is midway between the bounds when the cameras have them."""
    from recon.scene.camera import look_at
    from recon.scene.frames import scene_bounds

    g = SceneGraph(name="rig")
    for i, x in enumerate((-1.0, 0.0, 1.0)):
        turn = np.radians(2.0) * x
        eye = np.array([x, 0.0, 0.0])
        g.add(Camera(id=f"camera/{i}", K=np.array([[300.0, 0, 200], [0, 300, 150], [0, 0, 1]]),
                     world_to_camera=look_at(eye, eye + np.array([np.sin(turn), np.cos(turn), 0.0])), width=400,
                     height=300, near=bounds and bounds[0], far=bounds and bounds[1]))
        g.add(View(id=f"view/{i}", name=str(i), index=i, image=None, camera=f"camera/{i}"))
    centre, radius = scene_bounds(g, g.views())
    depths = [float((c.world_to_camera[:3, :3] @ centre + c.world_to_camera[:3, 3])[2]) for c in g.cameras()]
    assert min(depths) > 0 and radius > 0
    if bounds is not None:
        assert depths[1] == pytest.approx(2 / (1 / 20 + 1 / 100), rel=1e-3)
