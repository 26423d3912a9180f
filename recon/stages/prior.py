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
3. **Check** (``prior.validate``, with 3 or more training views): the
   training view that the pseudo cameras of the others pass nearest is held
   out; a repair model trained for half its steps on the other views' pairs
   repairs pseudo views for that view's leave-one-out splats, which are
   distilled exactly as in step 4. Unless the held-out view's masked PSNR gains
   at least ``validate_margin`` dB, the prior is not applied: the scene keeps
   the optimize stage's splats, and ``metrics/prior`` says why. Otherwise the
   model finishes training on all pairs.
4. **Distillation**: cameras on a path through the training cameras
   (recon/priors/views.py) are rendered, repaired, and added as targets (L1 and
   SSIM) weighted down with their angle to the nearest training view, for
   ``distill_steps`` more steps over the training views; the pseudo views are
   rendered and repaired again at the start of each round.

Outputs, when applied: ``gaussians/prior`` (``assets/prior/splats.ply``),
which the mesh stage, the viewer and ``recon eval`` use instead of
``gaussians/final``; the held-out renders in ``assets/prior/renders/``; the
last round's pseudo views (render | repaired) in ``assets/prior/pseudo/``.
Always: the loss curves in ``assets/prior/loss.json`` and ``metrics/prior``
(whether the prior was applied and the check's result, which prior was used,
its loss curve, its pairs and seconds, the metrics before the prior, and when
applied the held-out metrics and their gain).
"""

from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import dataclass

import numpy as np
import torch

from recon.config import OptimizeConfig, PriorConfig, RunConfig, digest
from recon.errors import InputError
from recon.files import atomic_write, write_json
from recon.io import images as image_io
from recon.optim.scene import downsample_factor, evaluate_test_views, initial_splats, poses_estimated, test_align_steps
from recon.optim.trainer import Targets, Trainer, render_on_black
from recon.priors import RepairModel
from recon.render.splats import load_ply, save_ply
from recon.scene.frames import Frames, load_frames, scene_bounds
from recon.scene.graph import Gaussians, Metrics, Provenance, SceneGraph
from recon.scene.names import (
    GAUSSIANS_FINAL,
    GAUSSIANS_PRIOR,
    PRIOR_LOSS_FILE,
    PRIOR_RENDERS_DIR,
    PRIOR_SPLATS_FILE,
    metrics_id,
)

NAME = "prior"
CONFIG = "prior"
ON_DEVICE = True  # computes on the run's device: a CPU run's results are not a GPU run's
PAIRS = "assets/prior/pairs.npz"
HELD_SPLATS = "assets/prior/held-out.ply"  # the leave-one-out splats that the check distils into
# The pairs and the check's splats stay: they are a cache with a key of its own.
OUTPUTS = (PRIOR_LOSS_FILE, PRIOR_RENDERS_DIR, "assets/prior/pseudo")
# Fields of PriorConfig that change the training pairs (the cache's key).
PAIR_FIELDS = ("loo_views", "loo_steps", "loo_snapshots", "perturb_samples", "perturb_scale")


def enabled(cfg: RunConfig) -> bool:
    return cfg.prior.enabled


def validate(graph: SceneGraph, cfg: RunConfig, device: torch.device) -> None:
    pc = cfg.prior
    if not pc.enabled:
        return
    if pc.checkpoint is not None:
        from recon.priors.pretrained import check_folder, check_installed

        check_folder(pc.checkpoint)
    else:
        from recon.priors.repair import check_channels, check_installed

        check_channels(pc.channels)
    check_installed()
    if pc.validate and pc.loo_steps <= 0:
        raise InputError("prior.validate needs leave-one-out runs: set prior.loo_steps above 0 or prior.validate false")
    if pc.distill_rounds < 1 or pc.distill_steps < pc.distill_rounds:
        raise InputError(f"prior.distill_steps ({pc.distill_steps}) must be at least prior.distill_rounds "
                         f"({pc.distill_rounds}) >= 1")


@dataclass
class PriorContext:
    """What every step of the stage reads: the run's settings, the training views (at the size they are trained
    at), the scene's centre and radius, and the device."""

    cfg: RunConfig
    frames: Frames
    center: np.ndarray
    radius: float
    device: torch.device

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    def steps(self, gpu_steps: int) -> int:
        """``gpu_steps`` on CUDA; on the CPU at most ``optimize.cpu_steps`` (a smoke test)."""
        return gpu_steps if self.on_gpu else min(gpu_steps, self.cfg.optimize.cpu_steps)


@dataclass
class Pairs:
    """Training pairs of the repair model, and the leave-one-out splats the check distils into."""

    inputs: torch.Tensor  # [P, H, W, 3] degraded renders
    targets: torch.Tensor  # [P, H, W, 3] real images
    views: np.ndarray  # [P] the training view of each pair
    held_splats: dict | None  # the run without the check's view (None without a check)
    info: dict  # how many of each kind, and whether they came from the cache


@dataclass
class Distilled:
    """The distillation's trainer (its splats are the result), what its pseudo views were, and the last round's
    pseudo views as rendered and as repaired [N, H, W, 3]."""

    trainer: Trainer
    pseudo: dict
    renders: torch.Tensor
    repaired: torch.Tensor


def run(graph: SceneGraph, cfg: RunConfig, device: torch.device) -> SceneGraph:
    final = graph.nodes.get(GAUSSIANS_FINAL)
    if not isinstance(final, Gaussians):
        raise InputError(f"{graph.name}: no splats to refine (the optimize stage has not run)")
    train_views = graph.views("train")
    factor = downsample_factor(graph.camera_of(train_views[0]).width, cfg.optimize, device.type == "cuda")
    frames = load_frames(graph, train_views, factor, training=True, trained=True).to(device)
    if frames.images is None:
        raise InputError(f"{graph.name}: the prior needs the training views' images")
    center, radius = scene_bounds(graph, train_views)
    ctx = PriorContext(cfg, frames, center, radius, device)
    splats = load_ply(graph.resolve(final.path), device)
    torch.manual_seed(cfg.seed)
    seconds: dict[str, float] = {}
    held = check_view(frames, center) if cfg.prior.validate else None

    model, pairs = repair_model(graph, ctx, splats, factor, held, seconds)
    result = None
    if held is not None:
        start = time.perf_counter()
        held_splats = pairs.held_splats if pairs is not None else None
        if held_splats is None:  # no training pairs were made: one leave-one-out run for the check
            *_, held_splats = leave_one_out(graph, ctx, _targets(frames), [held], held)
        assert held_splats is not None  # validate() keeps prior.loo_steps above 0 while there is a check
        result = check(ctx, held, held_splats, model)
        seconds["validate"] = time.perf_counter() - start
    before = graph.get(metrics_id("optimize"), Metrics)
    before_values = {k: v for k, v in (before.values if before is not None else {}).items()
                     if k in ("psnr", "ssim", "lpips", "psnr_masked", "ssim_masked", "lpips_masked")}
    summary = dict(prior=model.name, before=before_values, validation=result,
                   pairs=pairs.info if pairs is not None else {},
                   model={"pipeline": model.pipeline_class, "parameters": model.parameters})
    if result is not None and not result["passed"]:  # the scene keeps the optimize stage's splats
        write_json(graph.resolve(PRIOR_LOSS_FILE), {"repair": {"every": model.log_every, "loss": model.losses}})
        _record(graph, summary, model, seconds, applied=False,
                gain={k: 0.0 for k, v in before_values.items() if v is not None})
        return graph
    if pairs is not None:  # the checked model saw half its steps without the held-out view: it finishes on all
        from recon.priors.repair import SceneRepair

        assert isinstance(model, SceneRepair)  # pairs come with the scene's own model only
        start = time.perf_counter()
        model.fit(pairs.inputs, pairs.targets)
        seconds["model"] += time.perf_counter() - start
    apply(graph, ctx, splats, model, factor, summary, before_values, seconds)
    return graph


def repair_model(graph: SceneGraph, ctx: PriorContext, splats: dict, factor: int, held: int | None,
                 seconds: dict[str, float]) -> tuple[RepairModel, Pairs | None]:
    """The repair model and its training pairs: the user's pretrained pipeline (no pairs), or a model of the
    scene trained on its pairs (for the check, only half its steps and without the pairs of view ``held``)."""
    pc = ctx.cfg.prior
    start = time.perf_counter()
    if pc.checkpoint is not None:
        from recon.priors.pretrained import PretrainedRepair

        model = PretrainedRepair(pc.checkpoint, ctx.device, ctx.cfg.seed, pc.checkpoint_strength, pc.checkpoint_steps,
                                 pc.guidance, pc.prompt)
        seconds["load"] = time.perf_counter() - start
        return model, None
    from recon.priors.repair import RepairSettings, SceneRepair

    pairs = training_pairs(graph, ctx, splats, factor, held)
    seconds["pairs"] = time.perf_counter() - start
    start = time.perf_counter()
    model_steps = pc.train_steps if ctx.on_gpu else min(pc.train_steps, pc.cpu_model_steps)
    settings = RepairSettings(channels=list(pc.channels), layers_per_block=pc.layers_per_block, crop=pc.crop,
                              batch=pc.batch, steps=model_steps, lr=pc.lr, timesteps=pc.timesteps,
                              sample_steps=pc.sample_steps, strength=pc.strength)
    scene_model = SceneRepair(settings, ctx.device, ctx.cfg.seed)
    if held is not None:  # the model that is checked must not have seen the held-out view
        others = pairs.views != held
        scene_model.fit(pairs.inputs[others], pairs.targets[others], until=settings.steps // 2)
    seconds["model"] = time.perf_counter() - start
    return scene_model, pairs


def apply(graph: SceneGraph, ctx: PriorContext, splats: dict, model: RepairModel, factor: int, summary: dict,
          before_values: dict, seconds: dict[str, float]) -> None:
    """Distil the repaired pseudo views into the scene's splats; write ``gaussians/prior``, its files, and the
    held-out views' metrics with their gain."""
    oc = ctx.cfg.optimize
    final = graph.node(GAUSSIANS_FINAL, Gaussians)
    start = time.perf_counter()
    distilled = distill(ctx, splats, model)
    _write_pseudo(graph, distilled.renders, distilled.repaired)
    seconds["distill"] = time.perf_counter() - start
    trainer = distilled.trainer
    prior_splats = trainer.splats
    atomic_write(graph.resolve(PRIOR_SPLATS_FILE), lambda tmp: save_ply(tmp, prior_splats, oc.kind))  # type: ignore[arg-type]
    write_json(graph.resolve(PRIOR_LOSS_FILE), {
        "repair": {"every": model.log_every, "loss": model.losses},
        "distill": {"every": trainer.log_every, "loss": trainer.losses, "photometric": trainer.photometric,
                    "pseudo": trainer.target_losses}})
    train_views = graph.views("train")
    graph.replace(Gaussians(id=GAUSSIANS_PRIOR, path=PRIOR_SPLATS_FILE, count=int(len(prior_splats["means"])),
                            kind=oc.kind, sh_degree=final.sh_degree,
                            provenance=Provenance(NAME, made_from=[GAUSSIANS_FINAL] + [v.id for v in train_views])))
    start = time.perf_counter()
    align = test_align_steps(oc, poses_estimated(graph), ctx.on_gpu)
    metrics = evaluate_test_views(graph, trainer, factor, align_steps=align, render_dir=PRIOR_RENDERS_DIR)
    seconds["evaluate"] = time.perf_counter() - start
    metrics.update(summary, gaussians=int(len(prior_splats["means"])), pseudo_views=distilled.pseudo,
                   backend=trainer.backend, gain={k: metrics[k] - v for k, v in before_values.items()
                                                  if isinstance(metrics.get(k), float) and v is not None})
    _record(graph, metrics, model, seconds, applied=True)


def _record(graph: SceneGraph, values: dict, model: RepairModel, seconds: dict, applied: bool, **extra) -> None:
    result = values.get("validation")
    said = f" (check on {result['view']}: {result['gain']:+.2f} dB)" if result else ""
    outcome = f"applied{said}" if applied else f"not applied, the optimize stage's splats stay{said}"
    values = dict(values, applied=applied, outcome=outcome, seconds=seconds, **extra)
    values["model"] = dict(values["model"], loss_first=model.losses[0] if model.losses else None,
                           loss_last=model.losses[-1] if model.losses else None)
    made_from = [GAUSSIANS_PRIOR] if applied else [GAUSSIANS_FINAL]
    graph.replace(Metrics(id=metrics_id(NAME), values=values, provenance=Provenance(NAME, made_from=made_from)))


# --- the check ------------------------------------------------------------------------------------
def check_view(frames: Frames, center: np.ndarray) -> int | None:
    """The training view that the pseudo cameras of the others pass nearest (None with fewer than 3 views)."""
    from recon.priors.views import angle_to_path

    if len(frames) < 3:
        return None
    w2c = frames.viewmats.double().cpu().numpy()
    distances = [angle_to_path(np.delete(w2c, i, 0), w2c[i], center) for i in range(len(w2c))]
    return int(np.argmin(distances))


def check(ctx: PriorContext, held: int, splats: dict, model: RepairModel) -> dict:
    """Distil into the leave-one-out splats of training view ``held`` with the views it was trained on, as the
    stage would into the scene's, and score the held-out view before and after (masked PSNR when masks exist)."""
    from recon.metrics.images import psnr

    frames = ctx.frames
    rest = [j for j in range(len(frames)) if j != held]
    trainer = distill(dataclasses.replace(ctx, frames=frames.subset(rest)), splats, model,
                      title=f"prior: check on {frames.names[held]}").trainer
    viewmat, K, image = frames.viewmats[held], frames.Ks[held], frames.training_images()[held]
    mask = frames.masks[held].bool() if frames.masks is not None else None
    with torch.no_grad():
        before = render_on_black(splats, viewmat[None], K[None], frames.width, frames.height, ctx.cfg.optimize,
                                 trainer.backend)[0].clamp(0, 1)
    after = trainer.render_view(viewmat, K, frames.width, frames.height).clamp(0, 1)
    psnr_before, psnr_after = psnr(before, image, mask), psnr(after, image, mask)
    gain = psnr_after - psnr_before
    return {"view": frames.names[held], "metric": "psnr_masked" if mask is not None else "psnr",
            "before": psnr_before, "after": psnr_after, "gain": gain, "margin": ctx.cfg.prior.validate_margin,
            "passed": bool(gain >= ctx.cfg.prior.validate_margin)}


# --- training pairs ------------------------------------------------------------------------------
def training_pairs(graph: SceneGraph, ctx: PriorContext, splats: dict, factor: int, held: int | None) -> Pairs:
    """The repair model's training pairs, with the leave-one-out splats of view ``held`` (None without it), from
    the cache when it matches."""
    pc, oc, frames, device = ctx.cfg.prior, ctx.cfg.optimize, ctx.frames, ctx.device
    record = graph.stages.get("optimize")
    # The optimize stage's key covers the input, every earlier stage, the optimize settings and the seed.
    key = digest({k: getattr(pc, k) for k in PAIR_FIELDS}, record.key if record else None, factor, held)
    path, held_path = graph.resolve(PAIRS), graph.resolve(HELD_SPLATS)
    if path.is_file() and (held is None or held_path.is_file()):
        try:
            with np.load(path) as cached:
                if str(cached["key"]) == key:
                    info = {"leave_one_out": int(cached["loo"]), "perturbed": int(cached["perturbed"]), "cached": True}
                    return Pairs(torch.from_numpy(cached["inputs"]).float() / 255,
                                 torch.from_numpy(cached["targets"]).float() / 255, cached["views"],
                                 load_ply(held_path, device) if held is not None else None, info)
        except (OSError, KeyError, ValueError):
            pass  # unreadable or from another version: make them again
    targets_all = _targets(frames)
    n = len(frames)
    loo = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(pc.loo_views, n))}) if pc.loo_views > 0 else []
    if held is not None and held not in loo:
        loo = sorted(loo + [held])  # its run is needed for the check, so its pairs come with it
    loo_in, loo_out, loo_views, held_splats = leave_one_out(graph, ctx, targets_all, loo, held)
    pert_in, pert_out, pert_views = perturbed(splats, frames, targets_all, oc, pc, ctx.radius, device, ctx.cfg.seed)
    inputs = torch.cat(loo_in + pert_in).cpu()
    targets = torch.cat(loo_out + pert_out).cpu()
    views = np.array(loo_views + pert_views, dtype=np.int64)
    as_u8 = lambda t: (t.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)  # noqa: E731
    buf = io.BytesIO()
    info = {"leave_one_out": sum(len(t) for t in loo_in), "perturbed": sum(len(t) for t in pert_in), "cached": False}
    if held_splats is not None:
        atomic_write(held_path, lambda tmp: save_ply(tmp, held_splats, oc.kind))
    np.savez_compressed(buf, key=np.array(key), inputs=as_u8(inputs), targets=as_u8(targets), views=views,
                        loo=np.array(info["leave_one_out"]), perturbed=np.array(info["perturbed"]))
    atomic_write(path, lambda tmp: tmp.write_bytes(buf.getvalue()))
    # The network trains on what was stored (8 bits), so a cached rerun trains on the same pairs.
    stored_held = load_ply(held_path, device) if held_splats is not None else None  # as stored, likewise
    return Pairs(torch.from_numpy(as_u8(inputs)).float() / 255, torch.from_numpy(as_u8(targets)).float() / 255, views,
                 stored_held, info)


def _targets(frames: Frames) -> torch.Tensor:
    """The training images as the renders should look: the object on black when there are masks."""
    images = frames.training_images()
    if frames.masks is None:
        return images
    return images * frames.masks[..., None].float()


def leave_one_out(graph: SceneGraph, ctx: PriorContext, targets: torch.Tensor, held: list[int], keep: int | None = None
                  ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int], dict | None]:
    """Renders of each of the ``held`` training views by a run on the others, at ``loo_snapshots`` points of the run:
    (renders, real images, their views, the finished splats of the run without view ``keep``)."""
    cfg, frames, device = ctx.cfg, ctx.frames, ctx.device
    pc, oc = cfg.prior, cfg.optimize
    n = len(frames)
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    views: list[int] = []
    kept = None
    if n < 2 or pc.loo_steps <= 0:
        return inputs, outputs, views, kept
    steps = ctx.steps(pc.loo_steps)
    loo_oc = dataclasses.replace(oc.scaled_to(steps), pose_refine="off")
    stops = sorted({max(1, int(round(steps * (k + 1) / pc.loo_snapshots))) for k in range(max(1, pc.loo_snapshots))})
    for i in held:
        rest = [j for j in range(n) if j != i]
        trainer = Trainer(loo_oc, frames.subset(rest), initial_splats(graph, oc, device, cfg.seed), ctx.center,
                          ctx.radius, device, cfg.seed + 1 + i, title=f"prior: pairs, without {frames.names[i]}")
        begin = 0
        for stop in stops:
            trainer.train(begin, stop)
            begin = stop
            render = trainer.render_view(frames.viewmats[i], frames.Ks[i], frames.width, frames.height)
            inputs.append(render.clamp(0, 1)[None])
            outputs.append(targets[i : i + 1])
            views.append(i)
        if i == keep:
            kept = {k: v.detach() for k, v in trainer.splats.items()}
    return inputs, outputs, views, kept


@torch.no_grad()
def perturbed(splats: dict, frames: Frames, targets: torch.Tensor, oc: OptimizeConfig, pc: PriorConfig, radius: float,
              device: torch.device, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
    """Every training view rendered from ``perturb_samples`` noisy copies of the splats, at rising noise levels."""
    gen = torch.Generator(device=device).manual_seed(seed)
    noise = lambda t, sigma: t + sigma * torch.randn(t.shape, generator=gen, device=device)  # noqa: E731
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    views: list[int] = []
    for k in range(pc.perturb_samples):
        level = pc.perturb_scale * (k + 1) / pc.perturb_samples
        noisy = dict(splats, means=noise(splats["means"], 0.02 * radius * level),
                     scales=noise(splats["scales"], 0.3 * level), opacities=noise(splats["opacities"], 0.5 * level))
        out = render_on_black(noisy, frames.viewmats, frames.Ks, frames.width, frames.height, oc)
        inputs.append(out.clamp(0, 1))
        outputs.append(targets)
        views.extend(range(len(frames)))
    return inputs, outputs, views


# --- distillation ----------------------------------------------------------------------------------
def distill(ctx: PriorContext, splats: dict, model: RepairModel, title: str = "prior: distil") -> Distilled:
    """Continue the splats over the training views plus repaired pseudo views."""
    from recon.priors.views import path_cameras

    cfg, frames, center, device = ctx.cfg, ctx.frames, ctx.center, ctx.device
    pc, oc = cfg.prior, cfg.optimize
    steps = ctx.steps(pc.distill_steps)
    rounds = max(1, min(pc.distill_rounds, steps))
    # No densification; every SH degree and regulariser from the start (the splats are trained ones), but no early
    # blur, which is for splats that have not yet found the photos' coarse structure; positions at a fraction of their
    # learning rate.
    distill_oc = dataclasses.replace(oc, steps=steps, refine_stop=0, sh_degree_interval=0, regularize_from=0,
                                     coarse_to_fine=0.0, pose_refine="off",
                                     lr_means=oc.lr_means * pc.distill_lr_means)
    trainer = Trainer(distill_oc, frames, splats, center, ctx.radius, device, cfg.seed, title=title)
    viewmats, distance = path_cameras(frames.viewmats.double().cpu().numpy(), center, pc.pseudo_views, pc.elevation)
    summary = {"count": len(viewmats),
               "distance_deg_mean": float(np.degrees(distance.mean())) if len(distance) else None,
               "distance_deg_max": float(np.degrees(distance.max())) if len(distance) else None}
    empty = torch.zeros(0, frames.height, frames.width, 3, device=device)
    if len(viewmats) == 0:
        trainer.train()
        return Distilled(trainer, summary, empty, empty)
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
    if trainer.prunes:
        trainer.prune()
        trainer.check_splats(steps, steps)
    return Distilled(trainer, summary, renders, repaired)


def _write_pseudo(graph: SceneGraph, renders: torch.Tensor, repaired: torch.Tensor) -> None:
    """The last round's pseudo views, render beside repair, as PNGs."""
    side = torch.cat([renders, repaired], 2).cpu().numpy()
    for k, pixels in enumerate(side):
        atomic_write(graph.resolve(f"assets/prior/pseudo/{k:03d}.png"), image_io.write_image, pixels)
