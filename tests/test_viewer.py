"""The web viewer: what it reads from a scene folder, its controls, live snapshots, bad folders, a real browser."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.cli import main
from recon.config import load_config
from recon.live import LIVE_DIR, SnapshotWriter
from recon.pipeline import run_scene
from recon.render.splats import load_ply
from recon.scene.store import SceneStore

pytest.importorskip("viser")

from viewer.app import ViewerApp, camera_table  # noqa: E402
from viewer.scene import layers, open_scene, splats_from_ply  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example"
TINY = {"views.count": 4}


@pytest.fixture(scope="module")
def example_run(tmp_path_factory) -> Path:
    """The bundled example, run through every stage with a tiny configuration."""
    out = tmp_path_factory.mktemp("view")
    return run_scene(EXAMPLE, load_config("tiny", TINY), out).out_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_layers_hold_every_node_in_the_world_frame(example_run):
    graph = open_scene(example_run)
    L = layers(graph)
    assert len(L.cameras) == len(graph.views()) == 16
    assert sorted(c.role for c in L.cameras).count("train") == 4
    splats = load_ply(example_run / "assets" / "splats.ply")
    assert len(L.splats.centers) == len(splats["means"])
    eig = np.linalg.eigvalsh(L.splats.covariances.astype(np.float64))
    assert (eig > -1e-9).all()  # covariances are positive semi-definite
    scales = np.exp(splats["scales"].numpy().astype(np.float64))
    np.testing.assert_allclose(np.sort(eig, 1), np.sort(scales**2, 1), rtol=1e-3, atol=1e-9)
    assert set(L.meshes) == {"reconstruction"} and {"init", "ground_truth"} <= set(L.points)
    # ground truth is stored in the dataset's frame; the viewer brings it back to the world frame
    gt, _ = L.points["ground_truth"]
    recon_vertices = L.meshes["reconstruction"][0]
    assert np.linalg.norm(gt.mean(0) - recon_vertices.mean(0)) < 0.5 * np.linalg.norm(gt - gt.mean(0), axis=1).max()


def test_opacity_threshold_keeps_only_opaque_splats(example_run):
    s = splats_from_ply(example_run / "assets" / "splats.ply", "x")
    threshold = float(np.median(s.opacities))
    kept = s.above(threshold)
    assert 0 < len(kept.centers) < len(s.centers) and (kept.opacities >= threshold).all()


def test_app_renders_a_view_beside_its_photo_and_lists_every_camera(example_run):
    app = ViewerApp(example_run, port=free_port(), device="cpu")
    try:
        app.camera_choice.value = "000001"
        image, photo = app.render_selected()
        assert image.shape == photo.shape and image.shape[1] <= 200
        # the render is of the object in the photo: closer to it than a black image is
        err = np.abs(image.astype(float) - photo.astype(float)).mean()
        assert image.std() > 5 and err < 0.8 * photo.astype(float).mean()
        assert camera_table(app.layers.cameras).count('class="recon-camera"') == 16
        assert "optimize" in app.metrics.content and "mesh" in app.metrics.content
        app.toggles["mesh"].value = True
        assert all(h.visible for h in app.handles["mesh"])
    finally:
        app.stop()


def test_live_snapshots_are_written_during_the_run_and_removed_after(example_run, tmp_path):
    folder = tmp_path / "live"
    writer = SnapshotWriter(folder, "optimize", "3dgs", 100)
    splats = load_ply(example_run / "assets" / "splats.ply")
    for step in (10, 20, 30):
        writer.offer(step, splats, {"loss": 0.1})
    writer.close(remove=False)
    status = json.loads((folder / "status.json").read_text())
    assert status["step"] == 30 and status["gaussians"] == len(splats["means"]) and 1 <= writer.written <= 3
    assert torch.equal(load_ply(folder / "splats.ply")["means"], splats["means"])
    SnapshotWriter(folder, "optimize", "3dgs", 100).close()
    assert not folder.exists()


def test_viewer_follows_a_run_from_its_snapshots(example_run, tmp_path):
    folder = tmp_path / "example"
    shutil.copytree(example_run, folder)
    graph = SceneStore(folder).load()
    graph.drop_stage_outputs({"optimize", "mesh"})  # as while the optimize stage runs
    SceneStore(folder).save(graph)
    app = ViewerApp(folder, port=free_port(), device="cpu")
    try:
        assert app.layers.splats is None
        splats = load_ply(example_run / "assets" / "splats.ply")
        writer = SnapshotWriter(folder / LIVE_DIR, "optimize", "3dgs", 300)
        writer.offer(100, splats, {"loss": 0.05})
        writer.close(remove=False)
        assert app.refresh()
        assert len(app.layers.splats.centers) == len(splats["means"])
        assert "step 100/300" in app.status.content
        assert app.render_selected() is not None  # renders the snapshot
    finally:
        app.stop()


def test_run_with_live_every_leaves_no_snapshot_behind(tmp_path):
    cfg = load_config("tiny", {**TINY, "live_every": 10})
    out = run_scene(EXAMPLE, cfg, tmp_path, until="optimize").out_dir
    assert (out / "assets" / "splats.ply").is_file() and not (out / LIVE_DIR).exists()


@pytest.mark.parametrize("case", ["missing", "not_a_scene", "half_written", "missing_asset", "newer_schema"])
def test_bad_scene_folder_is_one_line_and_exit_2(example_run, tmp_path, capsys, case):
    folder = tmp_path / "scene"
    expected = {"missing": "no such folder", "not_a_scene": "no scene.json here",
                "half_written": "half-written scene folder", "missing_asset": "which is missing",
                "newer_schema": "newer recon"}[case]
    if case != "missing":
        shutil.copytree(example_run, folder)
    if case == "not_a_scene":
        shutil.rmtree(folder / "assets")
        (folder / "scene.json").unlink()
    elif case == "half_written":
        (folder / "scene.json").unlink()
    elif case == "missing_asset":
        (folder / "assets" / "splats.ply").unlink()
    elif case == "newer_schema":
        data = json.loads((folder / "scene.json").read_text())
        data["schema_version"] = 99
        (folder / "scene.json").write_text(json.dumps(data))
    assert main(["view", str(folder), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and err[0].startswith("recon: error:")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium)")
def test_viewer_in_a_real_browser(example_run, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    server = subprocess.Popen([sys.executable, "-m", "recon", "view", str(example_run), "--port", str(port),
                               "--device", "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-quic", "--enable-unsafe-swiftshader"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            deadline = time.time() + 60
            while True:  # the server needs a moment to bind
                try:
                    page.goto(f"http://127.0.0.1:{port}")
                    break
                except playwright.Error:
                    if time.time() > deadline or server.poll() is not None:
                        raise
                    time.sleep(0.5)
            page.wait_for_selector("canvas", timeout=60_000)
            rows = page.locator("table.recon-cameras tr.recon-camera")
            rows.first.wait_for(timeout=60_000)
            assert rows.count() == 16
            time.sleep(3)  # splats arrive over the websocket after the panel
            shot = tmp_path / "viewer.png"
            page.locator("canvas").first.screenshot(path=str(shot))
            browser.close()
        from PIL import Image

        pixels = np.asarray(Image.open(shot).convert("RGB")).astype(float)
        assert pixels.std() > 10  # not a blank canvas
        assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 200  # splats and thumbnails, not a flat fill
    finally:
        server.terminate()
        server.wait(timeout=30)
