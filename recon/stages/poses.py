"""Poses stage: the training views' cameras, given or estimated from the photos with COLMAP (pycolmap).

With ``poses.mode=auto`` the stage keeps the given cameras and estimates only
when a training view has none (a folder of plain photos); ``estimate`` always
estimates, so that estimated poses can be scored against the given ones.

Estimation: SIFT features (by default also on the images up-sampled 2x and
with a lower peak threshold, for the small images sparse-view scenes often have), exhaustive matching (few views), and
incremental mapping with settings for few views: low inlier minimums, more
two-view initialisation trials, a smaller minimum triangulation angle. Images
of one size share one camera (``SIMPLE_PINHOLE``; COLMAP takes the focal
length from EXIF as its prior when the photos have one). The largest model
wins. A view that does not register is named with the reason (too few
features, no verified matches, or matched but not placed); the run stops with
exit 2 unless ``--allow-partial`` is given and at least 2 views registered
(the others are then left out).

When the views had given cameras, the estimated ones are aligned to them
(Umeyama similarity over the camera centres) and ``metrics/poses`` holds the
errors (recon/eval/poses.py); ``to_dataset`` then includes that alignment,
so the mesh stage's metrics and the exports land in the dataset's frame, and
held-out views keep their given cameras, carried into the estimated frame.
Without given cameras, held-out views have no camera and are not evaluated.
The sparse points become ``points/sfm``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon import progress
from recon.config import PosesConfig, RunConfig
from recon.errors import InputError
from recon.eval import poses as pose_eval
from recon.io import images as image_io
from recon.scene.camera import transform_world_to_camera
from recon.scene.graph import Camera, Metrics, PointCloud, Provenance, SceneGraph, View

NAME = "poses"
CONFIG = "poses"
GIVEN = "poses_given"  # meta key: the cameras and frame the import gave, restored before every run
GIVEN_SFM = "points/sfm_given"  # the import's SfM points, set aside while the estimated ones stand in


def validate(graph: SceneGraph, cfg: RunConfig) -> None:
    if cfg.poses.mode == "given":
        missing = [v.name for v in graph.views() if v.image and v.camera is None]
        if missing:
            raise InputError(f"{graph.source.get('path', graph.name)}: --poses given, but {len(missing)} views have "
                             f"no camera ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
    _check_estimable(graph, graph.views("train"), cfg.poses)


def _estimates(train: list[View], pc: PosesConfig) -> bool:
    """Whether the stage estimates the training views' cameras (rather than keeping the given ones)."""
    return pc.mode == "estimate" or (pc.mode == "auto" and any(v.camera is None for v in train))


def _check_estimable(graph: SceneGraph, train: list[View], pc: PosesConfig) -> None:
    if _estimates(train, pc) and len(train) < 2:
        raise InputError(f"{graph.source.get('path', graph.name)}: pose estimation needs at least 2 training views, "
                         f"got {len(train)}")


def run(graph: SceneGraph, cfg: RunConfig) -> SceneGraph:
    pc = cfg.poses
    _restore_given(graph)
    train = graph.views("train")
    if not _estimates(train, pc):
        graph.replace(Metrics(id="metrics/poses", values={"source": "given"}, provenance=Provenance(NAME)))
        return graph
    _check_estimable(graph, train, pc)
    start = time.perf_counter()
    sizes = {v.id: image_io.probe_image(graph.resolve(v.image)) for v in train}
    sfm = estimate(graph, train, pc, single_camera=len(set(sizes.values())) == 1)
    seconds = time.perf_counter() - start
    failed = [v for v in train if v.id not in sfm.cameras]
    if failed:
        detail = "; ".join(f"{v.name} ({sfm.reasons[v.id]})" for v in failed)
        message = f"{graph.name}: {len(failed)} of {len(train)} views did not register: {detail}"
        if not pc.allow_partial or len(sfm.cameras) < 2:
            hint = "" if len(sfm.cameras) < 2 else " (--allow-partial goes on with the registered views)"
            raise InputError(message + hint)
        warnings.warn(message + "; going on without them", stacklevel=2)
        for v in failed:
            v.role = "unused"
    registered = [v for v in train if v.id in sfm.cameras]

    known = {v.id: graph.camera_of(v) for v in graph.views() if v.camera is not None}
    values: dict = {"source": "estimated", "registered": len(registered), "views": len(train),
                    "unregistered": {v.name: sfm.reasons[v.id] for v in failed}, "sfm_points": len(sfm.points),
                    "focal_px": sfm.focal, "focal_prior_from_exif": sfm.exif_prior, "seconds": seconds}
    alignment = None
    if len(registered) >= 3 and all(v.id in known for v in registered):
        errors, alignment = pose_eval.compare([sfm.cameras[v.id][1] for v in registered],
                                              [known[v.id].world_to_camera for v in registered])
        values.update(against_given=errors)

    made_from = [v.id for v in registered]
    for v in registered:
        K, w2c = sfm.cameras[v.id]
        width, height = sizes[v.id]
        graph.replace(Camera(id=f"estimated/{v.name}", K=K, world_to_camera=w2c, width=width, height=height,
                             sensor="estimated", provenance=Provenance(NAME, made_from=[v.id])))
        v.camera = f"estimated/{v.name}"
    for v in graph.views("test"):
        if alignment is not None and v.id in known:  # the given camera, carried into the estimated frame
            cam = known[v.id]
            graph.replace(Camera(id=f"estimated/{v.name}", K=cam.K, world_to_camera=transform_world_to_camera(
                cam.world_to_camera, np.linalg.inv(alignment)), width=cam.width, height=cam.height,
                sensor=cam.sensor, provenance=Provenance(NAME, made_from=made_from)))
            v.camera = f"estimated/{v.name}"
        else:
            v.role = "unused"
    graph.to_dataset = graph.to_dataset @ alignment if alignment is not None else np.eye(4)
    if "points/sfm" in graph.nodes:  # the import's points, in the given frame: kept for a later run with given poses
        _rename(graph, "points/sfm", GIVEN_SFM)
    graph.replace(PointCloud(id="points/sfm", path=None, count=len(sfm.points), kind="sfm", points=sfm.points,
                             colors=sfm.colors, provenance=Provenance(NAME, made_from=made_from)))
    graph.replace(Metrics(id="metrics/poses", values=values, provenance=Provenance(NAME, made_from=made_from)))
    return graph


def _restore_given(graph: SceneGraph) -> None:
    """Undo an earlier run of this stage (whose own nodes the pipeline has dropped).

    Views point at the imported cameras again and have the roles the views
    stage gave them, the imported frame holds, and the import's SfM points are back.
    """
    given = graph.meta.get(GIVEN)
    if given is None:
        graph.meta[GIVEN] = {"cameras": {v.id: v.camera for v in graph.views()}, "to_dataset": graph.to_dataset.tolist()}
        return
    chosen = graph.nodes["metrics/views"].values
    roles = {**{name: "test" for name in chosen["test"]}, **{name: "train" for name in chosen["train"]}}
    for v in graph.views():
        v.camera = given["cameras"].get(v.id)
        v.role = roles.get(v.name, "unused")
    graph.to_dataset = np.asarray(given["to_dataset"], dtype=np.float64)
    if GIVEN_SFM in graph.nodes:
        _rename(graph, GIVEN_SFM, "points/sfm")


def _rename(graph: SceneGraph, old: str, new: str) -> None:
    node = graph.nodes.pop(old)
    node.id = new
    graph.add(node)


@dataclass
class Estimate:
    cameras: dict[str, tuple[np.ndarray, np.ndarray]]  # view id -> (K, world_to_camera)
    reasons: dict[str, str]  # view id -> why it did not register
    points: np.ndarray
    colors: np.ndarray
    focal: float | None
    exif_prior: bool


def estimate(graph: SceneGraph, views: list[View], pc, single_camera: bool) -> Estimate:
    """Structure from motion over ``views`` in a scratch folder; nothing of COLMAP's leaks out but the result."""
    import pycolmap

    pycolmap.logging.minloglevel = 3  # COLMAP says nothing; failures become our own one-line messages
    with tempfile.TemporaryDirectory(prefix="recon-sfm-") as tmp, progress.task("estimating poses", 3) as bar:
        root = Path(tmp)
        (root / "images").mkdir()
        names = {}
        for i, v in enumerate(views):
            src = graph.resolve(v.image)
            if image_io.stored_upright_rgb(src):
                name = f"{i:04d}{src.suffix.lower()}"
                try:
                    os.symlink(src.resolve(), root / "images" / name)
                except OSError:
                    shutil.copy(src, root / "images" / name)
            else:  # COLMAP reads the stored pixels as they are: give it the upright RGB image recon sees
                name = f"{i:04d}.png"
                image_io.write_image(root / "images" / name, image_io.read_image(src))
            names[name] = v
        database = root / "database.db"
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = "SIMPLE_PINHOLE"
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.use_gpu = False
        extraction.sift.max_num_features = pc.max_features
        if pc.dense_features:
            extraction.sift.first_octave = -1
            extraction.sift.peak_threshold = 0.004
        matching = pycolmap.FeatureMatchingOptions()
        matching.use_gpu = False
        if pc.wide_baseline:
            extraction.sift.estimate_affine_shape = True
            extraction.sift.domain_size_pooling = True
        matching.guided_matching = pc.guided_matching
        mode = pycolmap.CameraMode.SINGLE if single_camera else pycolmap.CameraMode.PER_IMAGE
        try:
            pycolmap.extract_features(database, root / "images", image_names=sorted(names), camera_mode=mode,
                                      reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)
            bar.advance()
            verification = pycolmap.TwoViewGeometryOptions()
            verification.min_num_inliers = pc.min_inliers
            pycolmap.match_exhaustive(database, matching_options=matching, verification_options=verification,
                                      device=pycolmap.Device.cpu)
            bar.advance()
            options = pycolmap.IncrementalPipelineOptions()
            options.min_num_matches = pc.min_inliers
            options.min_model_size = 2
            options.multiple_models = True
            options.mapper.init_min_num_inliers = 2 * pc.min_inliers
            options.mapper.abs_pose_min_num_inliers = pc.min_inliers
            options.mapper.init_max_reg_trials = 4
            options.mapper.init_min_tri_angle = 4.0
            options.random_seed = 0
            (root / "sparse").mkdir()
            models = pycolmap.incremental_mapping(database, root / "images", root / "sparse", options=options)
            bar.advance()
        except Exception as exc:  # COLMAP's own errors become one line
            raise InputError(f"{graph.name}: pose estimation failed: {str(exc).strip().splitlines()[0]}") from None
        db = pycolmap.Database.open(str(database))
        try:
            return _collect(db, models, names)
        finally:
            db.close()


def _collect(db, models: dict, names: dict[str, View]) -> Estimate:
    import pycolmap

    best = max(models.values(), key=lambda r: r.num_reg_images(), default=None)
    cameras: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    points, colors = np.zeros((0, 3)), np.zeros((0, 3))
    focal, exif = None, False
    if best is not None:
        for image in best.images.values():
            if not image.has_pose:
                continue
            cam = image.camera
            w2c = np.eye(4)
            w2c[:3, :4] = image.cam_from_world().matrix()
            cameras[names[image.name].id] = (np.asarray(cam.calibration_matrix(), dtype=np.float64), w2c)
            focal, exif = float(cam.mean_focal_length()), bool(cam.has_prior_focal_length)
        if best.num_points3D():
            points = np.stack([p.xyz for p in best.points3D.values()])
            colors = np.stack([p.color for p in best.points3D.values()]) / 255.0
    reasons = {}
    ids = {im.name: im.image_id for im in db.read_all_images()}
    best_inliers: dict[int, int] = {}
    for pair, count in zip(*db.read_two_view_geometry_num_inliers()):
        for image_id in pycolmap.pair_id_to_image_pair(pair):
            best_inliers[image_id] = max(best_inliers.get(image_id, 0), count)
    for name, view in names.items():
        if view.id in cameras:
            continue
        image_id = ids.get(name)
        features = db.num_keypoints_for_image(image_id) if image_id is not None else 0
        inliers = best_inliers.get(image_id, 0)
        if features < 50:
            reasons[view.id] = f"{features} features: too little texture or too small"
        elif inliers == 0:
            reasons[view.id] = f"{features} features, no verified matches with the other views"
        else:
            reasons[view.id] = f"matched the other views ({inliers} inliers at best) but could not be placed"
    return Estimate(cameras, reasons, points, colors, focal, exif)
