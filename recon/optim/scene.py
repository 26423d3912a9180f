"""Where the training loop meets the scene graph: the splats a run starts from, the size it trains at, and the
held-out views scored (and their renders written) for any :class:`~recon.optim.trainer.Trainer`; used by the
optimize and prior stages."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recon.config import OptimizeConfig
from recon.errors import InputError
from recon.files import atomic_write
from recon.io import images as image_io
from recon.io import ply
from recon.metrics.images import image_metrics, lpips_status, mean_metrics
from recon.metrics.poses import rotation_angle
from recon.optim.pose_refine import align_to_image
from recon.optim.trainer import Trainer
from recon.render.fill import fill_unseen, unseen
from recon.render.splats import init_splats
from recon.scene.camera import camera_center
from recon.scene.frames import load_frames
from recon.scene.graph import Metrics, PointCloud, SceneGraph
from recon.scene.names import POINTS_INIT, RENDERS_DIR, metrics_id


def evaluate_test_views(graph: SceneGraph, trainer: Trainer, factor: int, align_steps: int = 0,
                        render_dir: str = RENDERS_DIR) -> dict:
    """Render every posed test view; write the renders to ``render_dir``; metrics against the images that exist.

    With ``align_steps``, each view's camera is first fitted to its photo with the splats frozen
    (pose_refine.align_to_image); the metrics of the unaligned cameras are kept under ``unaligned``. Each view
    records the share of its pixels that no training camera sees (``unseen``, recon/render/fill.py); with
    ``optimize.fill_unseen`` their empty part is filled from the render around them, and the metrics before the fill
    are kept under ``unfilled`` (``unaligned`` scores the given camera's render, unfilled).
    """
    test = [v for v in graph.views("test") if v.camera is not None]
    per_view: dict[str, dict] = {}
    unaligned: dict[str, dict] = {}
    unfilled: dict[str, dict] = {}
    moved: list[tuple[float, float]] = []
    if not test:
        return {"test_views": 0}
    frames = load_frames(graph, test, factor, with_images=all(v.image for v in test)).to(trainer.device)
    with torch.no_grad():  # the training cameras as the splats were fitted to them: which pixels they see
        trained_cameras = trainer.pose.correct_all(trainer.frames.viewmats.to(trainer.device),
                                                   trainer.frames.Ks.to(trainer.device))
    # PNG encoding (tens of ms a view) runs on threads while the GPU renders the next views.
    with ThreadPoolExecutor(max_workers=max(1, min(8, torch.get_num_threads()))) as writer:  # the CPUs' share
        writes = []
        for i, view in enumerate(test):
            viewmat, K = frames.viewmats[i], frames.Ks[i]
            mask = frames.masks[i] if frames.masks is not None else None
            photo = frames.images[i] if frames.images is not None else None
            if align_steps > 0 and photo is not None:
                unaligned[view.name] = image_metrics(trainer.render_view(viewmat, K, frames.width,
                                                                         frames.height).clamp(0, 1), photo, mask)
                target = photo if mask is None else photo * mask[..., None]
                with torch.enable_grad():
                    aligned = align_to_image(trainer.render_fn(frames.width, frames.height), viewmat, K, target,
                                             trainer.radius, align_steps, trainer.oc.test_pose_lr)
                moved.append(_pose_change(viewmat, aligned, trainer.radius))
                viewmat = aligned
            layers = trainer.render_layers(viewmat, K, frames.width, frames.height)
            hole = unseen(layers.depth[0], layers.alpha[0], viewmat, K, *trained_cameras, trainer.frames.width,
                          trainer.frames.height)
            image = layers.rgb[0].clamp(0, 1)
            if trainer.oc.fill_unseen:
                if photo is not None:
                    unfilled[view.name] = image_metrics(image, photo, mask)
                image = fill_unseen(layers.rgb[0], layers.alpha[0], hole).clamp(0, 1)
            render_path = graph.resolve(f"{render_dir}/{view.name}.png")
            writes.append(writer.submit(atomic_write, render_path, image_io.write_image, image.cpu().numpy()))
            if photo is not None:
                per_view[view.name] = {**image_metrics(image, photo, mask), "unseen": float(hole.float().mean())}
        for write in writes:
            write.result()  # a failed write fails the stage
    summary = mean_metrics(list(per_view.values())) if per_view else {}
    status = lpips_status()
    out: dict[str, Any] = {**summary, "test_views": len(test), "lpips_status": status or "available",
                           "per_view": per_view}
    if unaligned:
        rot, trans = np.array(moved).T
        out.update(unaligned={**mean_metrics(list(unaligned.values())), "per_view": unaligned},
                   test_pose_align={"steps": align_steps, "rotation_change_deg": float(rot.mean()),
                                    "translation_change": float(trans.mean())})
    if unfilled:
        out.update(unfilled={**mean_metrics(list(unfilled.values())), "per_view": unfilled})
    return out


def downsample_factor(width: int, oc: OptimizeConfig, on_gpu: bool) -> int:
    """Training images are the views' at full size on CUDA, at most ``oc.cpu_max_width`` wide on the reference
    rasterizer."""
    return 1 if on_gpu else max(1, math.ceil(width / oc.cpu_max_width))


def initial_splats(graph: SceneGraph, oc: OptimizeConfig, device: torch.device, seed: int) -> dict[str, Tensor]:
    """Splats at the init stage's points; on the CPU a random subset of at most ``oc.cpu_points`` of them."""
    init = graph.get(POINTS_INIT, PointCloud)
    if init is None:
        raise InputError(f"{graph.name}: no initial points (the init stage has not run)")
    path = graph.file_of(init)
    points, colors = ply.read_points(path)
    if colors is None:
        raise InputError(f"{path}: the initial points have no colours")
    if device.type != "cuda" and len(points) > oc.cpu_points:
        keep = np.random.default_rng(seed).choice(len(points), oc.cpu_points, replace=False)
        points, colors = points[keep], colors[keep]
    return init_splats(points, colors, oc.sh_degree, oc.kind, oc.init_scale, oc.init_opacity, device)


def poses_estimated(graph: SceneGraph) -> bool:
    node = graph.get(metrics_id("poses"), Metrics)
    return node is not None and node.values.get("source") == "estimated"


def test_align_steps(oc: OptimizeConfig, estimated: bool, on_gpu: bool) -> int:
    """Alignment steps of each held-out camera before scoring (0: scored as given)."""
    if not (oc.test_pose_align == "on" or (oc.test_pose_align == "auto" and estimated)):
        return 0
    return oc.test_pose_steps if on_gpu else min(oc.test_pose_steps, oc.cpu_align_steps)


def _pose_change(before: torch.Tensor, after: torch.Tensor, radius: float) -> tuple[float, float]:
    """(rotation angle in degrees, camera-centre shift in scene radii) between two world-to-camera matrices."""
    b, a = before.double().cpu().numpy(), after.double().cpu().numpy()
    return rotation_angle(a[:3, :3] @ b[:3, :3].T), float(np.linalg.norm(camera_center(a) - camera_center(b)) / radius)
