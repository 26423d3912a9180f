"""Poses stage: the training views' cameras, given or estimated from the photos (recon/sfm).

With ``poses.mode=auto`` the stage keeps the given cameras and estimates only
when a training view has none (a folder of plain photos); ``estimate`` always
estimates, so that estimated poses can be scored against the given ones.

Estimation (recon/sfm): SIFT features from the photos at their own size (the
long side capped at ``poses.max_image_size``, whatever ``data.downscale``; up-sampled
2x when the photos are small, ``poses.upsample``), only on the object where
the views have masks, exhaustive matching with two-view verification, then
recon's few-view reconstruction (a two-view start from the best verified
pair, absolute or relative poses for the others, bundle adjustment) or one of
COLMAP's mappers (``poses.mapper``). Photos of one size, EXIF camera and EXIF
focal length share one camera (``SIMPLE_PINHOLE``), with EXIF's focal length
as the prior when there is one, else 1.2 times the long side; where the few-view
reconstruction leaves photos out from that guess, it is built again from 0.8, 1.0
and 0.6 times the long side and the first build that places every photo is taken
(``focal_guess`` in the metrics; COLMAP's mappers are run once). A geometry the photos cannot fix (a camera
that only turned; one plane with an unknown focal length) is refused with
one line. A view that does not register is named with the reason (too few
features, no verified matches, or matched but not placed, and why); the run
stops with exit 2 unless ``--allow-partial`` is given and at least 2 views
registered (the others are then left out). The estimated intrinsics are
scaled from the photos' size to the size the views are trained at.

When the views had given cameras, the estimated ones are aligned to them
(a similarity, recon/metrics/poses.py) and ``metrics/poses`` holds the errors;
``to_dataset`` then includes that alignment, so the mesh stage's metrics and
the exports land in the dataset's frame, and held-out views keep their given
poses, carried into the estimated frame. A held-out photo of the size that one
estimated camera took gets that camera's estimated intrinsics: the splats are
built for them, and a focal length a few percent off would otherwise show as a
zoom that no pose fits. Without given cameras, held-out views have no camera and
are not evaluated. The sparse points become ``points/sfm``.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recon import progress
from recon.config import PosesConfig, RunConfig
from recon.errors import InputError, first_line
from recon.io import FULL_SIZE
from recon.io import images as image_io
from recon.metrics import poses as pose_eval
from recon.scene.camera import transform_world_to_camera
from recon.scene.graph import Camera, Metrics, PointCloud, Provenance, Role, SceneGraph, View
from recon.scene.names import POINTS_SFM, metrics_id
from recon.sfm.check import MAX_IMAGE_SIZE, TOLERANCE, Fit, epipolar_fit
from recon.sfm.matching import CameraPrior, FeatureOptions, Photo, camera_priors
from recon.sfm.reconstruct import guessed, reconstruct

NAME = "poses"
CONFIG = "poses"
GIVEN = "poses_given"  # meta key: the cameras and frame the import gave, restored before every run
GIVEN_SFM = "points/sfm_given"  # the import's SfM points, set aside while the estimated ones stand in
FIT_MIN_MATCHES = 30  # a view with fewer verified matches with the others says nothing about its camera
# Right cameras explain most of a view's verified matches, wrong ones next to none: on the real captures
# (bench/results/given-check-cpu.json) 54 to 100% of all matches against 0.1 to 1.3% for castle-P30's copy, whose
# rotations are stored transposed.
FIT_MIN_SHARE = 0.25


def validate(graph: SceneGraph, cfg: RunConfig, device: torch.device) -> None:
    if cfg.poses.mode == "given":
        missing = [v.name for v in graph.views() if v.image and v.camera is None]
        if missing:
            raise InputError(f"{graph.source.get('path', graph.name)}: --poses given, but {len(missing)} views have "
                             f"no camera ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
    _check_estimable(graph, graph.views("train"), cfg.poses)


def shared_intrinsics(views: list[View], cameras: dict[str, tuple[np.ndarray, np.ndarray]],
                      sizes: dict[str, tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
    """The estimated K of each photo size that one estimated camera covers (every registered view of that size has
    the same K; ``cameras``: view id -> (K, world-to-camera)); sizes that several cameras took are left out."""
    by_size: dict[tuple[int, int], list[np.ndarray]] = {}
    for v in views:
        by_size.setdefault(sizes[v.id], []).append(cameras[v.id][0])
    return {size: Ks[0] for size, Ks in by_size.items() if all(np.allclose(K, Ks[0]) for K in Ks)}


def _estimates(train: list[View], pc: PosesConfig) -> bool:
    """Whether the stage estimates the training views' cameras (rather than keeping the given ones)."""
    return pc.mode == "estimate" or (pc.mode == "auto" and any(v.camera is None for v in train))


def _check_estimable(graph: SceneGraph, train: list[View], pc: PosesConfig) -> None:
    if _estimates(train, pc) and len(train) < 2:
        raise InputError(f"{graph.source.get('path', graph.name)}: pose estimation needs at least 2 training views, "
                         f"got {len(train)}")


def run(graph: SceneGraph, cfg: RunConfig, device: torch.device) -> SceneGraph:
    pc = cfg.poses
    _restore_given(graph)
    train = graph.views("train")
    if not _estimates(train, pc):
        fit = ({"given_fit": check_given(graph, train, pc)} if (pc.check_given or pc.given_points) and len(train) >= 2
               else {})
        graph.replace(Metrics(id=metrics_id(NAME), values={"source": "given", **fit}, provenance=Provenance(NAME)))
        return graph
    _check_estimable(graph, train, pc)
    start = time.perf_counter()
    sizes = {v.id: image_io.header_size(graph.image_of(v)) for v in train}  # pixels checked at import
    sfm = estimate(graph, train, pc)
    seconds = time.perf_counter() - start
    if "refused" in sfm.details:  # the views it had not placed have reasons of their own: a blank photo says so
        placed = set(sfm.details.get("refused_placed", []))
        own = [f"{v.name} ({sfm.reasons.get(v.id, 'not placed')})" for v in train if v.id not in placed]
        raise InputError(f"{graph.name}: no poses: {sfm.details['refused']}"
                         + (f"; besides, {'; '.join(own)}" if own else ""))
    failed = [v for v in train if v.id not in sfm.cameras]
    if failed:
        detail = "; ".join(f"{v.name} ({sfm.reasons[v.id]})" for v in failed)
        message = f"{graph.name}: {len(failed)} of {len(train)} views did not register: {detail}"
        if not pc.allow_partial or len(sfm.cameras) < 2:
            hint = "" if len(sfm.cameras) < 2 else " (--allow-partial goes on with the registered views)"
            if not sfm.cameras and all("no verified matches" in sfm.reasons[v.id] for v in failed):
                hint = (" (no two of them matched: photos taken closer together, each seeing most of what the next "
                        "one sees, or the same photos at a larger size register more often)")
            raise InputError(message + hint)
        warnings.warn(message + "; going on without them", stacklevel=2)
        for v in failed:
            v.role = "unused"
    registered = [v for v in train if v.id in sfm.cameras]

    known = {v.id: graph.camera_of(v) for v in graph.views() if v.camera is not None}
    values: dict = {"source": "estimated", "registered": len(registered), "views": len(train),
                    "unregistered": {v.name: sfm.reasons[v.id] for v in failed}, "sfm_points": len(sfm.points),
                    **sfm.details, "seconds": seconds}
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
                             sensor=sfm.sensors[v.id], provenance=Provenance(NAME, made_from=[v.id])))
        v.camera = f"estimated/{v.name}"
    shared = shared_intrinsics(registered, sfm.cameras, sizes)
    for v in graph.views("test"):
        if alignment is not None and v.id in known:  # the given camera, carried into the estimated frame
            cam = known[v.id]
            K = shared.get((cam.width, cam.height), cam.K)  # a photo of the size one estimated camera took: its K
            graph.replace(Camera(id=f"estimated/{v.name}", K=K, world_to_camera=transform_world_to_camera(
                cam.world_to_camera, np.linalg.inv(alignment)), width=cam.width, height=cam.height,
                sensor=cam.sensor, provenance=Provenance(NAME, made_from=made_from)))
            v.camera = f"estimated/{v.name}"
        else:
            v.role = "unused"
    graph.to_dataset = graph.to_dataset @ alignment if alignment is not None else np.eye(4)
    if POINTS_SFM in graph.nodes:  # the import's points, in the given frame: kept for a later run with given poses
        _rename(graph, POINTS_SFM, GIVEN_SFM)
    graph.replace(PointCloud(id=POINTS_SFM, path=None, count=len(sfm.points), kind="sfm", points=sfm.points,
                             colors=sfm.colors, provenance=Provenance(NAME, made_from=made_from)))
    graph.replace(Metrics(id=metrics_id(NAME), values=values, provenance=Provenance(NAME, made_from=made_from)))
    return graph


def check_given(graph: SceneGraph, train: list[View], pc: PosesConfig) -> dict:
    """How well the given cameras of ``train`` fit their photos at their own size (recon/sfm/check.py), by the
    feature settings estimation uses (on the object where the views have masks and pc.use_masks) with the long side
    at most MAX_IMAGE_SIZE; one warning names the training views whose cameras do not fit. Never raises: the result
    says why it could not judge (pycolmap missing, matching failed, too few matches)."""
    try:
        import pycolmap  # noqa: F401
    except ImportError:
        return {"judged": False, "why": "pycolmap is not installed"}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recon-check-") as tmp, progress.task("checking given cameras", 1) as bar:
        try:
            photos, priors, scales = sfm_photos(graph, train, pc.use_masks)
            cameras = [(np.diag([1 / s, 1 / s, 1.0]) @ graph.camera_of(v).K, graph.camera_of(v).world_to_camera)
                       for v, s in zip(train, scales)]
            features = feature_options(pc, priors, min(pc.max_image_size, MAX_IMAGE_SIZE))
            fit = epipolar_fit(photos, priors, cameras, features, Path(tmp))
        except Exception as exc:  # advisory: whatever goes wrong here must not stop a run with usable cameras
            return {"judged": False, "why": f"feature matching failed: {first_line(exc)}"}
        bar.advance()
    per_view = fit.per_photo()
    judged = any(m >= FIT_MIN_MATCHES for m, _ in per_view)
    values: dict = {"judged": judged, "pairs": len(fit.pairs), "matches": fit.matches, "consistent": fit.consistent,
                    "share": round(fit.share, 4), "per_view": {v.name: list(mc) for v, mc in zip(train, per_view)},
                    "tolerance": TOLERANCE, "min_matches": FIT_MIN_MATCHES, "min_share": FIT_MIN_SHARE,
                    "seconds": time.perf_counter() - start}
    if pc.given_points:
        values["points"] = given_points(graph, train, fit, scales)
    if not judged:
        values["why"] = f"no training view has {FIT_MIN_MATCHES} verified matches with the others"
        return values
    unfit = fit.unfit(FIT_MIN_MATCHES, FIT_MIN_SHARE)
    values["unfit"] = [train[k].name for k in unfit]
    if unfit:
        named = [f"{train[k].name} {per_view[k][1]} of {per_view[k][0]}" for k in unfit]
        shown = ", ".join(named[:6]) + (f" and {len(named) - 6} more" if len(named) > 6 else "")
        warnings.warn(f"{graph.name}: the given cameras of {len(unfit)} of {len(train)} training views do not fit "
                      f"the photos ({fit.consistent} of all {fit.matches} verified feature matches lie on the "
                      f"cameras' epipolar lines and in front of them, per view {shown}; right cameras explain most); "
                      f"check the cameras' convention (world-to-camera or camera-to-world, OpenCV or OpenGL axes, "
                      f"rotations transposed), a background that stands still while the object turns (masks), or "
                      f"use --poses estimate", stacklevel=2)
    return values


def given_points(graph: SceneGraph, views: list[View], fit: Fit, scales: list[float]) -> int:
    """The matches ``fit`` says the given cameras of ``views`` explain, as ``points/sfm`` coloured from the photo each
    was seen in (keypoints at the photo's own size times ``scales``: the image's pixels); how many. None is written
    when the scene has SfM points of its own or no match is explained."""
    if POINTS_SFM in graph.nodes or not len(fit.points):
        return 0
    images = {k: image_io.read_image(graph.image_of(views[k])) for k in {k for k, _ in fit.pixels}}  # each once
    colors = []
    for k, keypoints in fit.pixels:
        image = images[k]
        px = np.clip((keypoints * scales[k]).astype(int), 0, [image.shape[1] - 1, image.shape[0] - 1])
        colors.append(image[px[:, 1], px[:, 0], :3])
    graph.replace(PointCloud(id=POINTS_SFM, path=None, count=len(fit.points), kind="sfm", points=fit.points,
                             colors=np.concatenate(colors).astype(np.float64),
                             provenance=Provenance(NAME, made_from=[v.id for v in views])))
    return len(fit.points)


def _restore_given(graph: SceneGraph) -> None:
    """Undo an earlier run of this stage (whose own nodes the pipeline has dropped).

    Views point at the imported cameras again and have the roles the views
    stage gave them, the imported frame holds, and the import's SfM points are back.
    """
    given = graph.meta.get(GIVEN)
    if given is None:
        graph.meta[GIVEN] = {"cameras": {v.id: v.camera for v in graph.views()},
                             "to_dataset": graph.to_dataset.tolist()}
        return
    chosen = graph.node(metrics_id("views"), Metrics).values
    roles: dict[str, Role] = {**{name: "test" for name in chosen["test"]},
                              **{name: "train" for name in chosen["train"]}}
    for v in graph.views():
        v.camera = given["cameras"].get(v.id)
        v.role = roles.get(v.name, "unused")
    graph.to_dataset = np.asarray(given["to_dataset"], dtype=np.float64)
    if GIVEN_SFM in graph.nodes:
        _rename(graph, GIVEN_SFM, POINTS_SFM)


def _rename(graph: SceneGraph, old: str, new: str) -> None:
    node = graph.nodes.pop(old)
    node.id = new
    graph.add(node)


@dataclass
class Estimate:
    """The training views' estimated cameras, at the size the views are trained at, and what SfM found."""

    cameras: dict[str, tuple[np.ndarray, np.ndarray]]  # view id -> (K [3, 3], world_to_camera [4, 4])
    sensors: dict[str, str]  # view id -> the camera it shares intrinsics with
    reasons: dict[str, str]  # view id -> why it did not register
    points: np.ndarray  # [P, 3]
    colors: np.ndarray  # [P, 3] in [0, 1]
    details: dict  # for metrics/poses: the mapper, feature settings, cameras, features per view


def sfm_photos(graph: SceneGraph, views: list[View],
               use_masks: bool) -> tuple[list[Photo], list[CameraPrior], list[float]]:
    """Per view, the photo at its own size (before data.downscale) with its mask if ``use_masks`` and it has one, as
    SfM reads it; the cameras the photos share (recon.sfm.matching.camera_priors); and each view's scale from the
    photo's pixels to the trained image's."""
    full_size = graph.meta.get(FULL_SIZE, {})
    factor = int(graph.meta.get("downscale", 1))
    paths, masks, scales = [], [], []
    for v in views:
        original = full_size.get(v.id)
        paths.append(Path(original["image"]) if original else graph.image_of(v))
        mask = (original["mask"] if original else v.mask) if use_masks else None
        masks.append(None if mask is None else (Path(mask) if original else graph.resolve(mask)))
        scales.append(1.0 / factor if original else 1.0)
    priors, photo_cameras = camera_priors(paths)
    return [Photo(path, mask, c) for path, mask, c in zip(paths, masks, photo_cameras)], priors, scales


def feature_options(pc: PosesConfig, cameras: list[CameraPrior], max_image_size: int) -> FeatureOptions:
    """The feature settings of ``pc`` for photos of ``cameras`` read at most ``max_image_size`` pixels on their long
    side (up-sampled by upsample=auto when that side is short)."""
    long_side = max(min(max(c.width, c.height), max_image_size) for c in cameras)
    upsample = pc.upsample == "on" or (pc.upsample == "auto" and long_side <= pc.upsample_below)
    return FeatureOptions(max_image_size=max_image_size, max_features=pc.max_features, upsample=upsample,
                          affine=pc.wide_baseline, guided=pc.guided_matching, min_inliers=pc.min_inliers)


def estimate(graph: SceneGraph, views: list[View], pc: PosesConfig) -> Estimate:
    """Structure from motion over ``views``' photos at their own size, in a scratch folder.

    Nothing of COLMAP's leaks out but the result; its errors become one line.
    """
    photos, cameras, scales = sfm_photos(graph, views, pc.use_masks)
    photo_cameras = [p.camera for p in photos]
    features = feature_options(pc, cameras, pc.max_image_size)
    mapper = pc.mapper if pc.mapper != "auto" else ("fewview" if len(views) <= pc.fewview_max_views else "incremental")
    with tempfile.TemporaryDirectory(prefix="recon-sfm-") as tmp, progress.task("estimating poses", 1) as bar:
        try:
            result = reconstruct(photos, cameras, features, mapper, Path(tmp))
        except (RuntimeError, ValueError) as exc:  # COLMAP's own errors become one line
            raise InputError(f"{graph.name}: pose estimation failed: {first_line(exc)}") from None
        bar.advance()
    model = result.model
    registered = model.cameras if model is not None else {}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, (K, w2c) in registered.items():
        K = K.copy()
        K[:2] *= scales[i]
        out[views[i].id] = (K, w2c)
    focal = {photo_cameras[i]: float(K[0, 0]) for i, (K, _) in registered.items()}
    details = {
        "mapper": mapper, "features": features.describe(), "max_image_size": pc.max_image_size,
        "masks": any(p.mask is not None for p in photos), "verified_pairs": result.verified_pairs,
        "features_per_view": {v.name: n for v, n in zip(views, result.features)},
        "cameras": [{"size": [c.width, c.height], "focal_px": focal.get(k),
                     "focal_prior_px": guessed(c, result.focal_guess).focal,
                     "focal_prior_from_exif": c.from_exif,
                     "views": [v.name for v, of in zip(views, photo_cameras) if of == k]}
                    for k, c in enumerate(cameras)],
    }
    if result.focal_guess is not None:
        details["focal_guess"] = result.focal_guess
    if result.refused:
        details["refused"] = result.refused
        details["refused_placed"] = [views[i].id for i in sorted(result.refused_placed)]
    points = model.points if model is not None else np.zeros((0, 3))
    colors = model.colors if model is not None else np.zeros((0, 3))
    return Estimate(out, {v.id: f"sfm/{c}" for v, c in zip(views, photo_cameras)},
                    {views[i].id: why for i, why in result.reasons.items()}, points, colors, details)
