"""Prior stage: repair renders of unseen views with a diffusion model, and distil them into the splats.

With 3 or 4 views much of an object is seen badly or not at all. This stage
(off unless ``prior.enabled``) continues from the optimize stage's splats:

1. **Training pairs** (degraded render, real image), the way GaussianObject
   makes them: *leave-one-out* runs (the optimiser on all training views but
   one, rendering the held-out view at a few points of its run) and
   *perturbations* (noise on the optimised splats' positions, scales and
   opacities, rendered from every training view). They are cached in
   ``assets/prior/pairs.npz`` and reused while the optimize stage and the pair
   settings stay the same.
2. **Repair model**: a conditional diffusion model trained from scratch on the
   pairs (recon/priors/repair.py), or, with ``prior.checkpoint``, a pretrained
   image-to-image pipeline from the user's disk (recon/priors/pretrained.py).
3. **Distillation**: cameras on a path through the training cameras
   (recon/priors/views.py) are rendered, repaired, and added as targets (L1 and
   SSIM) weighted down with their angle to the nearest training view, for
   ``distill_steps`` more steps over the training views; the pseudo views are
   rendered and repaired again at the start of each round.

Outputs: ``gaussians/prior`` (``assets/prior/splats.ply``), which the mesh
stage, the viewer and ``recon eval`` use instead of ``gaussians/final``; the
held-out renders in ``assets/prior/renders/``; the last round's pseudo views
(render | repaired) in ``assets/prior/pseudo/``; the loss curves in
``assets/prior/loss.json``; and ``metrics/prior``: the held-out metrics, those
before the prior, which prior was used, its loss curve, its pairs and seconds.
"""

from __future__ import annotations

import dataclasses
import io
import time

import numpy as np
import torch

from recon.config import OptimizeConfig, PriorConfig, RunConfig, digest
from recon.devices import resolve_device
from recon.errors import InputError
from recon.io import images as image_io
from recon.optim.trainer import (Targets, Trainer, downsample_factor, evaluate_test_views, initial_splats,
                                 poses_estimated, test_align_steps)
from recon.render import render
from recon.render.splats import load_ply, save_ply
from recon.scene.frames import Frames, load_frames, scene_bounds
from recon.scene.graph import Gaussians, Metrics, Provenance, SceneGraph
from recon.scene.store import atomic_write, write_json

NAME = "prior"
CONFIG = "prior"
PAIRS = "assets/prior/pairs.npz"
# Fields of PriorConfig that change the training pairs (the cache's key).
PAIR_FIELDS = ("loo_views", "loo_steps", "loo_snapshots", "perturb_samples", "perturb_scale")


def enabled(cfg: RunConfig) -> bool:
    return cfg.prior.enabled


def validate(graph: SceneGraph, cfg: RunConfig) -> None:
    pc = cfg.prior
    if not pc.enabled:
        return
    if pc.checkpoint is not None:
        from recon.priors.pretrained import check_folder

        check_folder(pc.checkpoint)
    else:
        from recon.priors.repair import check_channels

        check_channels(pc.channels)
    if pc.distill_rounds < 1 or pc.distill_steps < pc.distill_rounds:
        raise InputError(f"prior.distill_steps ({pc.distill_steps}) must be at least prior.distill_rounds ({pc.distill_rounds}) >= 1")


def run(graph: SceneGraph, cfg: RunConfig) -> SceneGraph:
    pc, oc = cfg.prior, cfg.optimize
    final = graph.nodes.get("gaussians/final")
    if not isinstance(final, Gaussians):
        raise InputError(f"{graph.name}: no splats to refine (the optimize stage has not run)")
    device = resolve_device(cfg.device)
    on_gpu = device.type == "cuda"
    train_views = graph.views("train")
    factor = downsample_factor(graph.camera_of(train_views[0]).width, oc, on_gpu)
    frames = load_frames(graph, train_views, factor).to(device)
    if frames.images is None:
        raise InputError(f"{graph.name}: the prior needs the training views' images")
    center, radius = scene_bounds(graph, train_views)
    splats = load_ply(graph.resolve(final.path), device)
    torch.manual_seed(cfg.seed)
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    if pc.checkpoint is not None:
        from recon.priors.pretrained import PretrainedRepair

        model = PretrainedRepair(pc.checkpoint, device, cfg.seed, pc.checkpoint_strength, pc.checkpoint_steps,
                                 pc.guidance, pc.prompt)
        pairs_info: dict = {}
        seconds["load"] = time.perf_counter() - start
    else:
        from recon.priors.repair import RepairSettings, SceneRepair

        inputs, targets, pairs_info = training_pairs(graph, cfg, frames, splats, center, radius, device, factor)
        seconds["pairs"] = time.perf_counter() - start
        start = time.perf_counter()
        settings = RepairSettings(channels=list(pc.channels), layers_per_block=pc.layers_per_block, crop=pc.crop,
                                  batch=pc.batch, steps=pc.train_steps if on_gpu else min(pc.train_steps, pc.cpu_model_steps),
                                  lr=pc.lr, timesteps=pc.timesteps, sample_steps=pc.sample_steps, strength=pc.strength)
        model = SceneRepair(settings, device, cfg.seed)
        model.fit(inputs, targets)
        seconds["model"] = time.perf_counter() - start

    start = time.perf_counter()
    trainer, pseudo = distill(graph, cfg, frames, splats, center, radius, device, model, on_gpu)
    seconds["distill"] = time.perf_counter() - start
    prior_splats = trainer.splats
    atomic_write(graph.resolve("assets/prior/splats.ply"), lambda tmp: save_ply(tmp, prior_splats, oc.kind))
    write_json(graph.resolve("assets/prior/loss.json"), {
        "repair": {"every": model.log_every, "loss": model.losses},
        "distill": {"every": trainer.log_every, "loss": trainer.losses, "photometric": trainer.photometric,
                    "pseudo": trainer.target_losses}})
    graph.replace(Gaussians(id="gaussians/prior", path="assets/prior/splats.ply", count=int(len(prior_splats["means"])),
                            kind=oc.kind, sh_degree=final.sh_degree,
                            provenance=Provenance(NAME, made_from=["gaussians/final"] + [v.id for v in train_views])))

    start = time.perf_counter()
    metrics = evaluate_test_views(graph, trainer, factor, align_steps=test_align_steps(oc, poses_estimated(graph), on_gpu),
                                  render_dir="assets/prior/renders")
    seconds["evaluate"] = time.perf_counter() - start
    before = graph.nodes.get("metrics/optimize")
    before_values = {k: v for k, v in (before.values if before is not None else {}).items()
                     if k in ("psnr", "ssim", "lpips", "psnr_masked", "ssim_masked", "lpips_masked")}
    metrics.update(
        prior=model.name, gaussians=int(len(prior_splats["means"])), seconds=seconds, pseudo_views=pseudo,
        before=before_values, backend=trainer.backend,
        gain={k: metrics[k] - v for k, v in before_values.items() if isinstance(metrics.get(k), float) and v is not None},
        model={"pipeline": model.pipeline_class, "parameters": model.parameters,
               "loss_first": model.losses[0] if model.losses else None,
               "loss_last": model.losses[-1] if model.losses else None},
        pairs=pairs_info)
    graph.replace(Metrics(id="metrics/prior", values=metrics, provenance=Provenance(NAME, made_from=["gaussians/prior"])))
    return graph


# --- training pairs ----------------------------------------------------------------------------------
def training_pairs(graph: SceneGraph, cfg: RunConfig, frames: Frames, splats: dict, center: np.ndarray, radius: float,
                   device: torch.device, factor: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(degraded [P, H, W, 3], real [P, H, W, 3], what they are), from the cache when it matches."""
    pc, oc = cfg.prior, cfg.optimize
    record = graph.stages.get("optimize")
    # The optimize stage's key covers the input, every earlier stage, the optimize settings and the seed.
    key = digest({k: getattr(pc, k) for k in PAIR_FIELDS}, record.key if record else None, factor)
    path = graph.resolve(PAIRS)
    if path.is_file():
        try:
            with np.load(path) as cached:
                if str(cached["key"]) == key:
                    info = {"leave_one_out": int(cached["loo"]), "perturbed": int(cached["perturbed"]), "cached": True}
                    return (torch.from_numpy(cached["inputs"]).float() / 255, torch.from_numpy(cached["targets"]).float() / 255,
                            info)
        except (OSError, KeyError, ValueError):
            pass  # unreadable or from another version: make them again
    targets_all = _targets(frames)
    loo_in, loo_out = leave_one_out(graph, cfg, frames, targets_all, center, radius, device)
    pert_in, pert_out = perturbed(splats, frames, targets_all, oc, pc, radius, device, cfg.seed)
    inputs = torch.cat(loo_in + pert_in).cpu()
    targets = torch.cat(loo_out + pert_out).cpu()
    as_u8 = lambda t: (t.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)  # noqa: E731
    buf = io.BytesIO()
    info = {"leave_one_out": sum(len(t) for t in loo_in), "perturbed": sum(len(t) for t in pert_in), "cached": False}
    np.savez_compressed(buf, key=np.array(key), inputs=as_u8(inputs), targets=as_u8(targets),
                        loo=np.array(info["leave_one_out"]), perturbed=np.array(info["perturbed"]))
    atomic_write(path, lambda tmp: tmp.write_bytes(buf.getvalue()))
    # The network trains on what was stored (8 bits), so a cached rerun trains on the same pairs.
    return torch.from_numpy(as_u8(inputs)).float() / 255, torch.from_numpy(as_u8(targets)).float() / 255, info


def _targets(frames: Frames) -> torch.Tensor:
    """The training images as the renders should look: the object on black when there are masks."""
    if frames.masks is None:
        return frames.images
    return frames.images * frames.masks[..., None].float()


def _scaled(oc: OptimizeConfig, steps: int) -> OptimizeConfig:
    """The optimize settings with their schedule (densification window, regularisers, SH degrees) scaled to a
    run of ``steps``; densification and pruning keep their intervals."""
    s = steps / max(1, oc.steps)
    scale = lambda n: max(1, int(round(n * s)))  # noqa: E731
    return dataclasses.replace(oc, steps=steps, refine_start=scale(oc.refine_start), refine_stop=scale(oc.refine_stop),
                               regularize_from=scale(oc.regularize_from), sh_degree_interval=scale(oc.sh_degree_interval),
                               pose_refine="off")


def leave_one_out(graph: SceneGraph, cfg: RunConfig, frames: Frames, targets: torch.Tensor, center: np.ndarray,
                  radius: float, device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Renders of held-out training views by runs on the others, at ``loo_snapshots`` points of each run."""
    pc, oc = cfg.prior, cfg.optimize
    n = len(frames)
    if n < 2 or pc.loo_views <= 0 or pc.loo_steps <= 0:
        return [], []
    steps = pc.loo_steps if device.type == "cuda" else min(pc.loo_steps, oc.cpu_steps)
    loo_oc = _scaled(oc, steps)
    held = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(pc.loo_views, n))})
    stops = sorted({max(1, int(round(steps * (k + 1) / pc.loo_snapshots))) for k in range(max(1, pc.loo_snapshots))})
    inputs, outputs = [], []
    for i in held:
        rest = [j for j in range(n) if j != i]
        trainer = Trainer(loo_oc, frames.subset(rest), initial_splats(graph, oc, device, cfg.seed), center, radius,
                          steps, device, cfg.seed + 1 + i, title=f"prior: pairs, without {frames.names[i]}")
        begin = 0
        for stop in stops:
            trainer.train(begin, stop)
            begin = stop
            inputs.append(trainer.render_view(frames.viewmats[i], frames.Ks[i], frames.width, frames.height).clamp(0, 1)[None])
            outputs.append(targets[i : i + 1])
    return inputs, outputs


@torch.no_grad()
def perturbed(splats: dict, frames: Frames, targets: torch.Tensor, oc: OptimizeConfig, pc: PriorConfig, radius: float,
              device: torch.device, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every training view rendered from ``perturb_samples`` noisy copies of the splats, at rising noise levels."""
    gen = torch.Generator(device=device).manual_seed(seed)
    noise = lambda t, sigma: t + sigma * torch.randn(t.shape, generator=gen, device=device)  # noqa: E731
    inputs, outputs = [], []
    for k in range(pc.perturb_samples):
        level = pc.perturb_scale * (k + 1) / pc.perturb_samples
        noisy = dict(splats, means=noise(splats["means"], 0.02 * radius * level),
                     scales=noise(splats["scales"], 0.3 * level), opacities=noise(splats["opacities"], 0.5 * level))
        out = render(noisy, frames.viewmats, frames.Ks, frames.width, frames.height, kind=oc.kind,
                     sh_degree=oc.sh_degree, backgrounds=torch.zeros(len(frames), 3, device=device))
        inputs.append(out.rgb.clamp(0, 1))
        outputs.append(targets)
    return inputs, outputs


# --- distillation ----------------------------------------------------------------------------------
def distill(graph: SceneGraph, cfg: RunConfig, frames: Frames, splats: dict, center: np.ndarray, radius: float,
            device: torch.device, model, on_gpu: bool) -> tuple[Trainer, dict]:
    """Continue the splats over the training views plus repaired pseudo views; (trainer, pseudo-view summary)."""
    from recon.priors.views import path_cameras

    pc, oc = cfg.prior, cfg.optimize
    steps = pc.distill_steps if on_gpu else min(pc.distill_steps, oc.cpu_steps)
    rounds = max(1, min(pc.distill_rounds, steps))
    # No densification; every SH degree from the start; positions at a fraction of their learning rate.
    distill_oc = dataclasses.replace(oc, steps=steps, refine_stop=0, sh_degree_interval=0, pose_refine="off",
                                     lr_means=oc.lr_means * pc.distill_lr_means)
    trainer = Trainer(distill_oc, frames, splats, center, radius, steps, device, cfg.seed, title="prior: distil")
    viewmats, distance = path_cameras(frames.viewmats.double().cpu().numpy(), center, pc.pseudo_views, pc.elevation)
    summary = {"count": len(viewmats), "distance_deg_mean": float(np.degrees(distance.mean())) if len(distance) else None,
               "distance_deg_max": float(np.degrees(distance.max())) if len(distance) else None}
    if len(viewmats) == 0:
        trainer.train()
        return trainer, summary
    vm = torch.tensor(viewmats, dtype=torch.float32, device=device)
    Ks = frames.Ks[:1].expand(len(vm), 3, 3).contiguous()
    weights = torch.tensor(pc.distill_weight * np.exp(-distance / pc.falloff), dtype=torch.float32, device=device)
    summary["weight_mean"] = float(weights.mean())
    bounds = [int(round(steps * r / rounds)) for r in range(rounds + 1)]
    for r in range(rounds):
        renders = torch.stack([trainer.render_view(vm[i], Ks[i], frames.width, frames.height).clamp(0, 1)
                               for i in range(len(vm))])
        repaired = model.repair(renders)
        trainer.targets = Targets(vm, Ks, repaired, weights, pc.distill_ssim)
        trainer.train(bounds[r], bounds[r + 1])
    if oc.hull_prune or oc.min_views > 0:
        trainer.prune()
    _write_pseudo(graph, renders, repaired)
    return trainer, summary


def _write_pseudo(graph: SceneGraph, renders: torch.Tensor, repaired: torch.Tensor) -> None:
    """The last round's pseudo views, render beside repair, as PNGs."""
    side = torch.cat([renders, repaired], 2).cpu().numpy()
    for k, pixels in enumerate(side):
        atomic_write(graph.resolve(f"assets/prior/pseudo/{k:03d}.png"), lambda tmp, p=pixels: image_io.write_image(tmp, p))
