"""Optimize stage: sparse-view 3DGS or 2DGS from the training views, through gsplat on CUDA.

From the init points, splats are optimised against the training images with
the 3DGS loss (L1 + SSIM), densified and pruned by one of gsplat's strategies
(``DefaultStrategy`` or ``MCMCStrategy``), with the spherical-harmonics degree
raised over time. The sparse-view regularisers of :class:`recon.config.OptimizeConfig`
are switched on by the presets: mask supervision of alpha, opacity and scale
regularisation, pruning of floaters outside the masks' visual hull or seen by
too few views, edge-aware depth smoothness (3DGS), depth distortion and
normal consistency (2DGS), and pseudo-view consistency (a jittered camera's
render against the training image warped into it through the rendered depth).

Without CUDA, the stage trains on recon's reference rasterizer at a small
resolution for ``cpu_steps`` steps, the schedule scaled to them
(:meth:`OptimizeConfig.scaled_to`): a smoke test of the whole pipeline, not a
reconstruction, and it says so.

A step whose loss or parameters are not finite stops the stage; the last good
checkpoint (saved every ``checkpoint_every`` steps) stays in
``assets/optimize/checkpoint.pt``.

Outputs: the ``gaussians/final`` node and ``assets/splats.ply`` (3DGS PLY
layout), renders of the test views in ``assets/renders/``, the loss curve in
``assets/optimize/loss.json``, and ``metrics/optimize`` (PSNR, SSIM, masked
PSNR/SSIM when masks exist, LPIPS when its weights are on disk).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from recon.config import RunConfig
from recon.errors import InputError
from recon.files import atomic_write, write_json
from recon.io import images as image_io
from recon.live import LIVE_DIR, SnapshotWriter
from recon.metrics.images import SSIM_WINDOW
from recon.metrics.poses import compare as compare_poses
from recon.optim.scene import downsample_factor, evaluate_test_views, initial_splats, poses_estimated, test_align_steps
from recon.optim.trainer import Trainer
from recon.render.splats import save_ply
from recon.scene.frames import load_frames, scene_bounds
from recon.scene.graph import Camera, DepthMaps, Gaussians, Metrics, Provenance, SceneGraph, View, refined_id
from recon.scene.names import (
    DEPTH_MVS,
    GAUSSIANS_FINAL,
    OPTIMIZE_LOSS_FILE,
    POINTS_INIT,
    RENDERS_DIR,
    SPLATS_FILE,
    metrics_id,
)

NAME = "optimize"
CONFIG = "optimize"
ON_DEVICE = True  # computes on the run's device: a CPU run's results are not a GPU run's
OUTPUTS = (RENDERS_DIR, "assets/optimize", LIVE_DIR)


def validate(graph: SceneGraph, cfg: RunConfig, device: torch.device) -> None:
    """At the size they are trained at, the training views fit the SSIM loss's window (views of another size than
    most are resampled to it, see :func:`load_frames`); mcmc and absgrad have CUDA."""
    on_gpu = device.type == "cuda"
    if cfg.optimize.strategy == "mcmc" and not on_gpu:
        raise InputError("optimize.strategy=mcmc needs CUDA (gsplat's relocation kernel); "
                         "use strategy=default on the CPU")
    if cfg.optimize.absgrad and not on_gpu:
        raise InputError("optimize.absgrad needs CUDA (gsplat's rasterizer gives the absolute gradients); "
                         "use absgrad=false on the CPU")
    where = graph.source.get("path", graph.name)
    for width, height in {_size(graph, v) for v in graph.views("train")}:
        factor = downsample_factor(width, cfg.optimize, on_gpu)
        if min(width // factor, height // factor) < SSIM_WINDOW:
            raise InputError(f"{where}: training images of {width}x{height} are trained at {width // factor}x"
                             f"{height // factor}; the optimize stage needs at least {SSIM_WINDOW} pixels on a side")


def warn_blank(scene: str, names: list[str], images: torch.Tensor) -> None:
    """Warn of training photos (images [V, H, W, 3] in [0, 1]) of a single colour: a blank photo teaches nothing,
    and a set of them can leave the splats nothing to fit."""
    spread = (images.flatten(1).amax(1) - images.flatten(1).amin(1)).tolist()
    blank = [name for name, s in zip(names, spread) if s < 1 / 255]
    if blank:
        several = len(blank) > 1
        warnings.warn(f"{scene}: optimize: training photo{'s' if several else ''} {', '.join(blank)} "
                      f"{'are' if several else 'is'} a single colour: a blank photo trains nothing", stacklevel=2)


def _size(graph: SceneGraph, view: View) -> tuple[int, int]:
    """A view's (width, height) as the stages see it: its camera's, or its down-sampled image's."""
    if view.camera is not None:
        cam = graph.camera_of(view)
        return cam.width, cam.height
    width, height = image_io.header_size(graph.image_of(view))
    factor = graph.meta.get("downscale", 1)
    return width // factor, height // factor


def run(graph: SceneGraph, cfg: RunConfig, device: torch.device) -> SceneGraph:
    train_views = graph.views("train")
    oc = cfg.optimize.for_views(len(train_views))
    if any(v.camera is None for v in train_views):
        raise InputError(f"{graph.name}: training views have no camera poses; the poses stage must estimate them first")
    cam0 = graph.camera_of(train_views[0])
    on_gpu = device.type == "cuda"
    factor = downsample_factor(cam0.width, oc, on_gpu)
    if not on_gpu:  # the CPU's short run keeps the schedule's proportions: densification and regularisers run
        oc = oc.scaled_to(min(oc.steps, oc.cpu_steps))
        warnings.warn(f"optimize: no CUDA device; training on the reference rasterizer at "
                      f"{cam0.width // factor}x{cam0.height // factor} for {oc.steps} steps from at most "
                      f"{oc.cpu_points} splats (a smoke test of the pipeline, not a reconstruction)", stacklevel=2)
    torch.manual_seed(cfg.seed)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    frames = load_frames(graph, train_views, factor, training=True)
    warn_blank(graph.name, frames.names, frames.training_images())
    depth = graph.nodes.get(DEPTH_MVS)
    if (oc.depth_weight > 0 or oc.free_space > 0) and isinstance(depth, DepthMaps):
        frames.depths, frames.depth_confidence = stereo_depth(graph, depth, train_views, frames.width, frames.height)
    frames = frames.to(device)
    center, radius = scene_bounds(graph, train_views)
    splats = initial_splats(graph, oc, device, cfg.seed)
    estimated = poses_estimated(graph)
    refine = oc.pose_refine == "on" or (oc.pose_refine == "auto" and estimated)
    checkpoint = graph.resolve("assets/optimize/checkpoint.pt")
    trainer = Trainer(oc, frames, splats, center, radius, device, cfg.seed, checkpoint=checkpoint,
                      refine_poses=refine)
    if oc.co_prune > 0 or oc.co_reg > 0:  # CoR-GS: a second set of splats, its own seed, trained beside this one
        partner = Trainer(oc, frames, splats, center, radius, device, cfg.seed + 1, refine_poses=refine)
        trainer.partner, partner.partner = partner, trainer  # each pulled towards the other's renders (co_reg)
    if cfg.live_every > 0:
        trainer.live = SnapshotWriter(graph.resolve(LIVE_DIR), NAME, oc.kind, oc.steps)
        trainer.live_every = cfg.live_every
    start = time.perf_counter()
    try:
        trainer.train()
    finally:
        if trainer.live is not None:
            trainer.live.close()
        if trainer.partner is not None:  # no cycle left: both sets are freed with this stage
            trainer.partner.partner = None
    train_seconds = time.perf_counter() - start

    splats = trainer.splats  # type: ignore[assignment]
    save_path = graph.resolve(SPLATS_FILE)
    atomic_write(save_path, lambda tmp: save_ply(tmp, splats, oc.kind))
    write_json(graph.resolve(OPTIMIZE_LOSS_FILE),
               {"every": trainer.log_every, "loss": trainer.losses, "photometric": trainer.photometric})
    checkpoint.unlink(missing_ok=True)
    made_from = [POINTS_INIT] + [v.id for v in train_views]
    graph.replace(Gaussians(id=GAUSSIANS_FINAL, path=SPLATS_FILE, count=int(len(splats["means"])),
                            kind=oc.kind, sh_degree=oc.sh_degree, provenance=Provenance(NAME, made_from=made_from)))

    metrics = evaluate_test_views(graph, trainer, factor, align_steps=test_align_steps(oc, estimated, on_gpu))
    if refine:
        metrics["poses"] = record_refined_cameras(graph, train_views, trainer, factor)
    # What the terms against floaters found: the photos' share of dark backdrop, the splats pruned in free space.
    floaters: dict[str, float] = {}
    if trainer.dark is not None:
        floaters["dark_backdrop_share"] = float(trainer.dark.float().mean())
    if oc.free_space > 0 and frames.depths is not None:
        floaters["pruned_in_free_space"] = trainer.free_space_pruned
    if floaters:
        metrics["floaters"] = floaters
    if trainer.partner is not None:
        metrics["co_training"] = {"pruned": trainer.co_pruned, "partner_pruned": trainer.partner.co_pruned,
                                  "partner_gaussians": int(len(trainer.partner.splats["means"]))}
    metrics.update(
        gaussians=int(len(splats["means"])), steps=oc.steps, backend=trainer.backend,
        train_seconds=train_seconds, resolution=[frames.width, frames.height], kind=oc.kind,
        peak_memory_mb=torch.cuda.max_memory_allocated(device) / 2**20 if on_gpu else None,
    )
    graph.replace(Metrics(id=metrics_id(NAME), values=metrics,
                          provenance=Provenance(NAME, made_from=[GAUSSIANS_FINAL])))
    return graph


def stereo_depth(graph: SceneGraph, node: DepthMaps, views: list[View], width: int,
                 height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The init stage's stereo depth and confidence [V, H, W] of ``views`` at the training size (nearest
    neighbour); zeros for a view the maps do not cover."""
    with np.load(graph.resolve(node.path)) as data:
        depth, confidence = torch.from_numpy(data["depth"]), torch.from_numpy(data["confidence"])
    order = {view_id: i for i, view_id in enumerate(node.views)}
    out_depth = torch.zeros(len(views), height, width)
    out_confidence = torch.zeros(len(views), height, width)
    for k, view in enumerate(views):
        if view.id in order:
            pair = torch.stack([depth[order[view.id]], confidence[order[view.id]]])[None].float()
            out_depth[k], out_confidence[k] = F.interpolate(pair, size=(height, width), mode="nearest")[0]
    return out_depth, out_confidence


def record_refined_cameras(graph: SceneGraph, train_views: list, trainer: Trainer, factor: int) -> dict:
    """Refined training cameras as ``refined/<view>`` nodes; their errors against given cameras when there are some."""
    corrected = trainer.pose.correct_all(trainer.frames.viewmats, trainer.frames.Ks)
    viewmats, Ks = (t.double().cpu().numpy() for t in corrected)
    refined = []
    for view, vm, K in zip(train_views, viewmats, Ks):
        cam = graph.camera_of(view)
        K = K.copy()
        K[:2] *= factor  # back to the full-resolution image
        graph.replace(Camera(id=refined_id(view), K=K, world_to_camera=vm, width=cam.width, height=cam.height,
                             sensor=cam.sensor, provenance=Provenance(NAME, made_from=[view.camera])))
        refined.append(vm)
    values: dict[str, Any] = {"refined": True, "focal_scale": float(torch.exp(trainer.pose.log_focal.detach()))}
    given = graph.meta.get("poses_given", {}).get("cameras", {})
    known = [graph.nodes.get(given.get(v.id) or "") for v in train_views]
    known_w2c = [k.world_to_camera for k in known if isinstance(k, Camera)]
    if len(train_views) >= 3 and len(known_w2c) == len(train_views):
        before = [graph.camera_of(v).world_to_camera for v in train_views]
        values["against_given_before"], _ = compare_poses(before, known_w2c)
        values["against_given_after"], _ = compare_poses(refined, known_w2c)
    return values
