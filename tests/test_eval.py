"""`recon eval`: suites in the DTU, SpaRe and synthetic layouts, tables and plots, resume, Ray, bad input."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from builders import build_llff, build_rectified, build_spare
from PIL import Image

from recon.cli import main
from recon.config import preset_settings

# The tiny preset's settings laid over each suite's preset, and smaller still.
TINY = [f"{key}={value}" for key, value in preset_settings("tiny").items() if key != "device"] + [
    "optimize.cpu_steps=20", "optimize.steps=20", "mesh.cpu_resolution=32", "mesh.extra_views=2",
    "mesh.cpu_max_width=48",
]


def evaluate(*argv, sets: tuple[str, ...] = ()) -> int:
    return main(["eval", *[str(a) for a in argv], "--device", "cpu", "--set", *TINY, *sets])


@pytest.fixture(scope="module")
def dtu_root(tmp_path_factory) -> Path:
    """Two of the 15 DTU test scans in DTU's own layout (49 views, so the protocol's ids exist)."""
    from recon.data.synth import SynthSpec, synthesize

    tmp = tmp_path_factory.mktemp("dtu")
    synthesize(tmp / "mug49", SynthSpec("mug", layout="dtu", views=49, width=48, height=36, gt_spacing=0.05, aux=False))
    root = tmp / "DTU"
    for scan in (8, 21):
        build_rectified(tmp / "mug49", root, scan=scan)
    return root


def test_dtu_eval_writes_the_papers_table_with_published_numbers_and_lists_missing_scans(dtu_root, tmp_path, capsys):
    out = tmp_path / "results"
    assert evaluate("dtu", "--root", dtu_root, "--views", 3, "--out", out) == 1  # 13 of the 15 scans are not here
    err = capsys.readouterr().err
    assert "13 of 15 scenes failed" in err and "scan30: missing" in err
    for scan in ("scan8", "scan21"):
        result = json.loads((out / "scenes" / f"{scan}.json").read_text())
        assert result["status"] == "ok" and result["train_views"] == [25, 22, 28]
        assert len(result["test_views"]) == 25 and result["metrics"]["psnr_masked"] > 5
    table = (out / "table.md").read_text()
    assert "| scan8 |" in table and "**mean (2/15)**" in table and "PSNR-M" in table
    assert "## Published, 3 views" in table and "| RegNeRF | 18.89 |" in table and "recon (this run)" in table
    assert "## Failed" in table and "scan114: missing" in table
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["scene"] for r in rows][:2] == ["scan8", "scan21"] and rows[-1]["scene"] == "mean"
    scan8 = json.loads((out / "scenes" / "scan8.json").read_text())
    assert float(rows[0]["psnr_masked"]) == pytest.approx(scan8["metrics"]["psnr_masked"])
    for plot in ("metric_per_scene.png", "time_per_stage.png", "grid.png"):
        assert Image.open(out / "plots" / plot).size[0] > 100
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] == 2 and len(summary["failed"]) == 13

    # Resume: finished scenes are reused; --force redoes them.
    stamp = (out / "scenes" / "scan8.json").stat().st_mtime_ns
    assert evaluate("dtu", "--root", dtu_root, "--views", 3, "--out", out, "--scenes", "scan8,scan21") == 0
    assert "scan8 (reused)" in capsys.readouterr().err.replace("\n", " ") or \
        (out / "scenes" / "scan8.json").stat().st_mtime_ns == stamp
    assert (out / "scenes" / "scan8.json").stat().st_mtime_ns == stamp
    assert evaluate("dtu", "--root", dtu_root, "--views", 3, "--out", out, "--scenes", "scan8", "--force") == 0
    assert (out / "scenes" / "scan8.json").stat().st_mtime_ns != stamp


def test_dtu_scan_without_masks_fails_alone(dtu_root, tmp_path, capsys):
    root = tmp_path / "DTU"
    shutil.copytree(dtu_root, root)
    shutil.rmtree(root / "idrmasks" / "scan21")
    out = tmp_path / "results"
    assert evaluate("dtu", "--root", root, "--views", 3, "--out", out, "--scenes", "scan8,scan21") == 1
    err = capsys.readouterr().err
    assert "scan21: no object masks" in err
    assert json.loads((out / "scenes" / "scan8.json").read_text())["status"] == "ok"


@pytest.mark.parametrize("argv, message", [
    (["dtu", "--root", "{tmp}/nowhere"], "no such folder"),
    (["dtu", "--root", "{tmp}"], "not a DTU root"),
    (["spare", "--root", "{tmp}"], "Track1_split_development.json: no such split file"),
    (["synthetic", "--root", "{tmp}"], "no synthetic scenes"),
    (["dtu", "--root", "{dtu}", "--scenes", "scan999"], "scan999 not in the dtu suite"),
])
def test_bad_eval_input_is_one_line_and_exit_2(dtu_root, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, dtu=dtu_root) for a in argv]
    assert evaluate(*argv, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("recon: error:")


def test_spare_eval_writes_a_submission_folder_and_zip(synthetic_scene, tmp_path):
    root = tmp_path / "SpaRe"
    build_spare(synthetic_scene, root, "Amplifier", inputs=(1, 4, 7), tests=(2, 9))
    out = tmp_path / "results"
    assert evaluate("spare", "--root", root, "--track", 3, "--out", out) == 0
    names = sorted(p.name for p in (out / "submission" / "Amplifier").iterdir())
    assert names == ["cam_003_3_0000.png", "cam_010_3_0000.png"]
    with Image.open(out / "submission" / "Amplifier" / "cam_003_3_0000.png") as im:
        assert im.size == (80, 60)  # the photos' own size (1600x1200 for SpaRe's data)
    with zipfile.ZipFile(out / "submission.zip") as archive:
        assert sorted(archive.namelist()) == ["Amplifier/cam_003_3_0000.png", "Amplifier/cam_010_3_0000.png"]
    assert json.loads((out / "scenes" / "Amplifier.json").read_text())["status"] == "ok"


def test_ray_writes_what_the_sequential_run_writes(synthetic_scene, tmp_path):
    pytest.importorskip("ray")
    root = tmp_path / "synthetic"
    for name in ("a", "b"):
        shutil.copytree(synthetic_scene, root / name)
    assert evaluate("synthetic", "--root", root, "--views", 3, "--out", tmp_path / "in-turn") == 0
    try:
        assert evaluate("synthetic", "--root", root, "--views", 3, "--out", tmp_path / "ray", "--ray") == 0
    finally:
        import ray

        ray.shutdown()
    placement = json.loads((tmp_path / "ray" / "ray.json").read_text())
    assert placement["workers"] >= 1 and placement["gpus_per_worker"] == 0 and "first_scene_seconds" in placement
    for name in ("a", "b"):
        in_turn, on_ray = (json.loads((tmp_path / out / "scenes" / f"{name}.json").read_text())
                           for out in ("in-turn", "ray"))
        assert on_ray["status"] == "ok" and on_ray["metrics"]["chamfer"] > 0
        numbers = {k for k, v in in_turn["metrics"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        # Ray's workers run as many threads as their share of the CPUs (OMP_NUM_THREADS, one on a 2-core machine):
        # the TSDF fusion's sums fall in another order, and the fused cloud differs by a few points in a million.
        expected = {k: in_turn["metrics"][k] for k in numbers}
        assert {k: on_ray["metrics"][k] for k in numbers} == pytest.approx(expected, rel=1e-3)
        assert {k: v for k, v in on_ray["metrics"].items() if k not in numbers} == \
            {k: v for k, v in in_turn["metrics"].items() if k not in numbers}  # lpips None, names
        assert on_ray["train_views"] == in_turn["train_views"] and set(on_ray["stages"]) == set(in_turn["stages"])
        assert (tmp_path / "ray" / "runs" / name / "scene.json").is_file()
    for out in ("in-turn", "ray"):
        assert "| a |" in (tmp_path / out / "table.md").read_text()
        assert sorted(p.name for p in (tmp_path / out / "plots").iterdir()) == \
            sorted(p.name for p in (tmp_path / "in-turn" / "plots").iterdir())


def test_ray_places_one_worker_per_gpu_with_its_share_of_the_cpus():
    from recon.errors import InputError
    from recon.eval.runner import ray_slots

    def node(gpus: float, cpus: float, alive: bool = True) -> dict:
        return {"Alive": alive, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}

    two_gpus = [node(2, 32)]
    assert ray_slots(two_gpus, 1.0, 8) == (1.0, 16, 2)
    assert ray_slots(two_gpus, 0.5, 8) == (0.5, 8, 4)  # two scenes share each GPU
    assert ray_slots(two_gpus, 0.4, 8) == (0.4, 8, 4)  # two shares of 0.4 fit in a GPU; Ray never splits one
    assert ray_slots(two_gpus, 1.0, 1) == (1.0, 16, 1)  # never more workers than scenes
    # a head without GPUs adds no worker; the smaller machine's share holds everywhere; a dead node counts for none
    assert ray_slots([node(0, 64), node(8, 128), node(2, 16), node(4, 64, alive=False)], 1.0, 20) == (1.0, 8, 10)
    assert ray_slots([node(0, 2)], 1.0, 5) == (0.0, 1, 2)  # no GPUs: one CPU each
    with pytest.raises(InputError, match="no machine of the Ray cluster has that many GPUs"):
        ray_slots(two_gpus, 4.0, 8)


def test_ray_gpus_is_a_share_below_one_or_whole_gpus(synthetic_scene, tmp_path, capsys):
    assert evaluate("synthetic", "--root", tmp_path, "--ray", "--ray-gpus", 1.5, "--out", tmp_path / "out") == 2
    assert "--ray-gpus 1.5: give the GPUs each scene holds" in capsys.readouterr().err


def test_each_scene_reports_its_stages_as_they_start(synthetic_scene, tmp_path):
    from recon.config import parse_override
    from recon.eval.runner import evaluate_scene
    from recon.eval.suites import SceneTask

    heard = []
    task = SceneTask("mug", synthetic_scene, {"views.count": 3})
    result, _ = evaluate_scene("synthetic", "default", task, "k", str(tmp_path), "cpu", dict(map(parse_override, TINY)),
                               None, report=lambda scene, stage: heard.append((scene, stage)))
    assert result["status"] == "ok"
    assert heard == [("mug", stage) for stage in ("views", "poses", "init", "optimize", "mesh")]  # the prior is off


def test_dtu_eval_reads_the_idr_layout(dtu_root, tmp_path):
    root = tmp_path / "DTU_idr"
    shutil.copytree(dtu_root.parent / "mug49", root / "scan8")  # recon's synthetic scenes are in the IDR layout
    out = tmp_path / "results"
    assert evaluate("dtu", "--root", root, "--views", 3, "--out", out, "--scenes", "scan8") == 0
    result = json.loads((out / "scenes" / "scan8.json").read_text())
    assert result["train_views"] == [25, 22, 28] and result["metrics"]["chamfer"] > 0  # gt/ of the synthetic scan


def test_folder_eval_runs_what_imports_and_names_what_does_not(synthetic_scene, tmp_path, capsys):
    root = tmp_path / "scenes"
    shutil.copytree(synthetic_scene, root / "mug")
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not a scene")
    out = tmp_path / "results"
    assert evaluate("folder", "--root", root, "--views", 3, "--out", out) == 1
    assert json.loads((out / "scenes" / "mug.json").read_text())["status"] == "ok"
    failed = json.loads((out / "scenes" / "notes.json").read_text())
    assert failed["status"] == "failed" and "unknown scene layout" in failed["error"]
    assert "notes" in capsys.readouterr().err


def test_llff_eval_holds_out_every_8th_view_and_scores_whole_images(tmp_path, capsys):
    from recon.data.synth import SynthSpec, synthesize

    synthesize(tmp_path / "mug",
               SynthSpec("mug", layout="dtu", views=12, width=48, height=36, gt_spacing=0.05, aux=False))
    root = tmp_path / "llff"
    build_llff(tmp_path / "mug", root / "fern")
    out = tmp_path / "results"
    # The images are already the protocol's size here: no further down-sampling.
    assert evaluate("llff", "--root", root, "--views", 3, "--out", out, sets=("data.downscale=1",)) == 0
    result = json.loads((out / "scenes" / "fern.json").read_text())
    # 12 views: 0 and 8 held out; the 10 others at linspace(0, 9, 3) = 0, 4.5 (to 4), 9.
    assert result["train_views"] == [1, 5, 11] and result["test_views"] == [0, 8]
    assert result["metrics"]["psnr"] > 5 and result["metrics"]["psnr_masked"] is None
    table = (out / "table.md").read_text()
    assert "## Published, 3 views" in table and "| CoR-GS | 20.45 |" in table


def test_split_ids_of_the_protocols():
    from recon.stages.views import hold_out_split, load_split

    dtu = load_split("dtu")
    assert dtu["train"][:3] == [25, 22, 28] and dtu["train"][3:] == [40, 44, 48, 0, 8, 13] and len(dtu["test"]) == 25
    assert not set(dtu["train"]) & set(dtu["test"])
    assert load_split("llff")["hold_every"] == 8
    train, test = hold_out_split(list(range(20)), 8, 3)  # LLFF's fern: 20 images
    assert test == [0, 8, 16] and train == [1, 10, 19]
    assert hold_out_split(list(range(20)), 8, 6)[0] == [1, 4, 7, 12, 15, 19]
    # 34 images: 29 remain; linspace gives 3.5, 10.5, 17.5 and 24.5, rounded half to even (4, 10, 18, 24).
    assert hold_out_split(list(range(34)), 8, 9)[0] == [1, 5, 9, 12, 17, 21, 25, 28, 33]


def test_bad_settings_or_results_folder_stop_an_evaluation_before_it_writes(dtu_root, tmp_path, capsys):
    out = tmp_path / "results"
    assert evaluate("dtu", "--root", dtu_root, "--views", 3, "--out", out, sets=("optimize.dropuot=0.1",)) == 2
    assert "optimize.dropuot" in capsys.readouterr().err and not out.exists()
    taken = tmp_path / "taken"
    taken.write_text("mine")
    assert evaluate("dtu", "--root", dtu_root, "--views", 3, "--out", taken) == 2
    assert "exists and is not a folder" in capsys.readouterr().err and taken.read_text() == "mine"


def test_an_evaluation_runs_on_the_device_its_settings_name_unless_one_is_given(tmp_path, monkeypatch):
    from recon import pipeline
    from recon.eval.runner import evaluate_scene
    from recon.eval.suites import SceneTask

    seen = []

    def stop(path, cfg, *args, **kwargs):
        seen.append(cfg.device)
        raise RuntimeError("stopped")

    monkeypatch.setattr(pipeline, "run_scene", stop)
    task = SceneTask("scan8", tmp_path)
    for device, overrides in ((None, {"device": "cpu"}), (None, {}), ("auto", {"device": "cpu"})):
        result, _ = evaluate_scene("dtu", "default", task, "key", str(tmp_path), device, overrides, None)
        assert result["status"] != "ok"
    assert seen == ["cpu", "auto", "auto"]


def test_a_result_is_reused_only_under_the_settings_it_was_made_with(tmp_path):
    from recon.config import load_config
    from recon.eval.runner import EvalOptions, scene_key
    from recon.eval.suites import SceneTask, Suite

    suite = Suite("dtu", tmp_path, "default", [], {"views": 3})
    task = SceneTask("scan8", tmp_path)
    key = scene_key(suite, task, EvalOptions(tmp_path))
    decay = load_config("default").optimize.opacity_decay
    # The same settings however they are spelled (the device aside) reuse; a different resolved setting does not.
    assert scene_key(suite, task, EvalOptions(tmp_path, overrides={"optimize.opacity_decay": decay})) == key
    assert scene_key(suite, task, EvalOptions(tmp_path, overrides={"device": "cpu"})) == key
    assert scene_key(suite, task, EvalOptions(tmp_path, overrides={"optimize.opacity_decay": 0.0})) != key
