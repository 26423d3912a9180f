"""The splat optimisation loop, shared by the optimize stage and the prior stage.

:class:`Trainer` runs gsplat's densification strategy hooks around a plain
Adam step over the training views, with the sparse-view regularisers of
:class:`recon.config.OptimizeConfig`; the optimize stage trains it from the
init points, the prior stage trains leave-one-out copies of it and continues it
against repaired pseudo views (:class:`Targets`). What the stages do around the loop (initial splats, the
training size, scoring the held-out views) is in recon/optim/scene.py.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recon import progress
from recon.config import OptimizeConfig
from recon.errors import StageError
from recon.files import atomic_write
from recon.live import SnapshotWriter
from recon.optim import regularizers as reg
from recon.optim.adam import Adam
from recon.optim.pose_refine import PoseCorrection
from recon.render import Backend, Render, render, resolve_backend
from recon.scene.frames import Frames


@dataclass
class Targets:
    """Extra supervision from cameras that are not training views: images on black, one weight per view."""

    viewmats: Tensor  # [P, 4, 4]
    Ks: Tensor  # [P, 3, 3]
    images: Tensor  # [P, H, W, 3] in [0, 1]
    weights: Tensor  # [P]
    ssim_weight: float = 0.5


class Trainer:
    """The optimisation loop: gsplat's strategy hooks around a plain Adam step."""

    log_every = 10

    def __init__(self, oc: OptimizeConfig, frames: Frames, splats: dict[str, Tensor], center: np.ndarray,
                 radius: float, device: torch.device, seed: int, checkpoint: Path | None = None,
                 refine_poses: bool = False, title: str | None = None):
        """``oc``: the settings of this run, ``oc.steps`` steps long (:meth:`OptimizeConfig.scaled_to` gives a
        shorter or longer run its schedule); ``splats``: initial parameters (recon.render.splats.init_splats, or
        load_ply of finished ones); ``checkpoint``: where the last good state is kept while training (None: not
        kept)."""
        self.oc, self.frames, self.steps, self.device = oc, frames, oc.steps, device
        self.backend = resolve_backend("auto", device)
        self.title = title or f"optimize ({oc.kind}, {self.backend})"
        if len(splats["means"]) == 0:
            raise StageError(f"{self.title}: no initial splats to train (the initial points are empty)")
        self.center = torch.tensor(center, dtype=torch.float32)  # on the CPU: pseudo cameras are built there
        self.viewmats_cpu = frames.viewmats.cpu()
        self.radius = radius
        self.generator = torch.Generator().manual_seed(seed)
        self.device_generator = torch.Generator(device=device).manual_seed(seed)
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.checkpoint = checkpoint
        self.losses: list[float] = []  # mean total loss per log_every steps
        self.photometric: list[float] = []  # mean photometric term per log_every steps
        self.photometric_sum = torch.zeros((), device=device)
        # Copies: training never changes the caller's tensors.
        self.splats = torch.nn.ParameterDict({k: torch.nn.Parameter(v.detach().to(device).float().clone())
                                              for k, v in splats.items()})
        lrs = {"means": oc.lr_means * radius, "scales": oc.lr_scales, "quats": oc.lr_quats,
               "opacities": oc.lr_opacities, "sh0": oc.lr_sh0, "shN": oc.lr_shN}
        self.optimizers = {k: Adam([{"params": p, "lr": lrs[k], "name": k}], eps=1e-15) for k, p in self.splats.items()}
        self.means_lr0 = lrs["means"]
        self.refine_poses = refine_poses
        self.pose = PoseCorrection(len(frames), radius, device)
        self.pose_optimizer = Adam(
            [{"params": [self.pose.twist], "lr": oc.pose_lr}]
            + ([{"params": [self.pose.log_focal], "lr": oc.pose_lr}] if oc.focal_refine else []))
        self.strategy, self.state = self._strategy()
        self.images = frames.training_images()  # [V, H, W, 3]
        self.masks = frames.masks if oc.use_masks else None  # [V, H, W]: None when masks do not shape the model
        bg = oc.background if oc.background != "auto" else ("random" if self.masks is not None else "black")
        if bg == "random_unless_black" and self.masks is not None:  # the masks say what is empty
            bg = "random"
        self.background = bg
        # random_unless_black: the weight [V, H, W, 1] of the random colour behind each photo pixel
        self.lit = reg.lit(self.images) if bg == "random_unless_black" else None
        # empty_dark: the photos' dark backdrop [V, H, W], left empty (the black background shows there)
        self.dark = reg.dark_regions(self.images, oc.dark_level, reg.backdrop_window(frames.width)) \
            if oc.empty_dark > 0 and bg == "black" else None
        self.live: SnapshotWriter | None = None
        self.live_every = 0
        self.targets: Targets | None = None
        self.target_sum = torch.zeros((), device=device)
        self.target_losses: list[float] = []  # mean weighted target term per log_every steps (with targets)
        # cross_view: which other training views share splats with each (drawn in proportion), and the depth each
        # view rendered last (for the occlusion test; a view is not drawn before it has one)
        self.covisible = reg.covisibility(self.splats["means"].detach(), frames.viewmats, frames.Ks, frames.width,
                                          frames.height).cpu() if oc.cross_view > 0 else None
        self.last_depth: Tensor | None = None
        self.rendered = torch.zeros(len(frames), dtype=torch.bool)
        self.partner: Trainer | None = None  # a second set of splats trained beside these (co_prune, co_reg)
        self.co_pruned = 0  # splats of this set removed for lack of a partner splat near them
        self.free_space_pruned = 0  # splats removed for lying in front of the stereo depth (free_space)

    def _strategy(self):
        from gsplat.strategy import DefaultStrategy, MCMCStrategy

        oc = self.oc
        if oc.strategy == "mcmc":
            strategy = MCMCStrategy(cap_max=oc.mcmc_cap, refine_start_iter=oc.refine_start,
                                    refine_stop_iter=min(oc.refine_stop, self.steps), refine_every=oc.refine_every)
            strategy.check_sanity(self.splats, self.optimizers)
            return strategy, strategy.initialize_state()
        strategy = DefaultStrategy(
            prune_opa=oc.prune_opacity, grow_grad2d=oc.grow_grad2d, refine_start_iter=oc.refine_start,
            refine_stop_iter=min(oc.refine_stop, self.steps), refine_every=oc.refine_every, absgrad=oc.absgrad,
            key_for_gradient="gradient_2dgs" if oc.kind == "2dgs" else "means2d",
        )
        strategy.check_sanity(self.splats, self.optimizers)
        return strategy, strategy.initialize_state(scene_scale=self.radius)

    # --- one step -------------------------------------------------------------------------------
    def _render(self, viewmats, Ks, backgrounds, sh_degree, distloss=False, dropout=True):
        keep = None
        if dropout and self.oc.dropout > 0:  # DropGaussian: a random share of the splats sits out this step
            n = len(self.splats["means"])
            keep = (torch.rand(n, device=self.device, generator=self.device_generator) >= self.oc.dropout).float()
            keep = keep / (1 - self.oc.dropout)
        return render(self.splats, viewmats, Ks, self.frames.width, self.frames.height, kind=self.oc.kind,
                      sh_degree=sh_degree, backgrounds=backgrounds, backend=self.backend,
                      antialiased=self.oc.antialiased, absgrad=self.oc.absgrad, distloss=distloss, opacity_scale=keep)

    def _background(self) -> torch.Tensor:
        """This step's background colour [1, 3] (random_unless_black: black; the photo's render gets its colour in
        :meth:`step`)."""
        if self.background == "random":
            return torch.rand(1, 3, generator=self.device_generator, device=self.device)
        value = 1.0 if self.background == "white" else 0.0
        return torch.full((1, 3), value, device=self.device)

    def step(self, step: int, index: int) -> torch.Tensor:
        oc, f = self.oc, self.frames
        sh_degree = min(step // max(1, oc.sh_degree_interval), oc.sh_degree)
        regularize = step >= oc.regularize_from
        pseudo = regularize and oc.pseudo_views > 0
        binocular = regularize and oc.binocular > 0
        co_reg = regularize and oc.co_reg > 0 and self.partner is not None
        other = self._cross_view_partner(index) if regularize else None
        vm, K = f.viewmats[index : index + 1], f.Ks[index : index + 1]
        if self.refine_poses:
            vm, K = self.pose(slice(index, index + 1), vm, K)
        # Cameras rendered beside the photo's (index 0), with its intrinsics, each drawn only when its term is on:
        # the pseudo camera that both sets render (CoR-GS, index c), the pseudo view (p), the binocular partner (b).
        beside: list[Tensor] = []
        c = p = b = 0
        if co_reg:
            beside.append(reg.jitter_camera(self.viewmats_cpu[index], self.center, oc.pseudo_jitter, self.generator))
            c = len(beside)
        if pseudo:
            beside.append(reg.jitter_camera(self.viewmats_cpu[index], self.center, oc.pseudo_jitter, self.generator))
            p = len(beside)
        if binocular:
            beside.append(reg.shift_camera(self.viewmats_cpu[index], self.center, oc.binocular_shift, self.generator))
            b = len(beside)
        if beside:
            vm = torch.cat([vm, torch.stack(beside).to(self.device)])
            K = torch.cat([K, K[:1].detach().expand(len(beside), 3, 3)])
        bgs = self._background().expand(len(vm), 3)  # one background for the photo and every extra camera
        extra = None
        t = self.targets
        if t is not None:  # one target camera per step, rendered in the same batch on black
            extra = int(torch.randint(len(t.weights), (1,), generator=self.generator))
            vm, K = torch.cat([vm, t.viewmats[extra : extra + 1]]), torch.cat([K, t.Ks[extra : extra + 1]])
            bgs = torch.cat([bgs, torch.zeros(1, 3, device=self.device)])
        out = self._render(vm, K, bgs, sh_degree, distloss=oc.kind == "2dgs" and oc.distortion > 0)
        self.strategy.step_pre_backward(self.splats, self.optimizers, self.state, step, out.info)
        if self.covisible is not None:
            if self.last_depth is None:
                self.last_depth = torch.zeros(len(f), *out.depth.shape[1:], device=self.device)
            self.last_depth[index] = out.depth[0].detach()
            self.rendered[index] = True
        target = self.images[index]
        mask = self.masks[index] if self.masks is not None else None
        if mask is not None:
            m = mask[..., None].float()
            target = target * m + bgs[0] * (1 - m)
        rgb, photo = out.rgb[:1], target[None]
        if self.lit is not None:  # composited as the rasterizer does: colour x transmittance, per pixel
            colour = torch.rand(1, 1, 1, 3, generator=self.device_generator, device=self.device)
            rgb = rgb + (1 - out.alpha[:1]) * colour * self.lit[index]
        sigma = oc.coarse_to_fine * (1 - step / (0.5 * self.steps))
        if sigma > 0:
            rgb, photo = reg.blur(rgb, sigma), reg.blur(photo, sigma)
        loss = reg.photometric(rgb, photo, oc.ssim_weight)
        self.photometric_sum += loss.detach()
        if mask is not None and oc.mask_weight > 0:
            loss = loss + oc.mask_weight * (out.alpha[0, ..., 0] - mask.float()).abs().mean()
        if oc.opacity_reg > 0:
            loss = loss + oc.opacity_reg * torch.sigmoid(self.splats["opacities"]).mean()
        if oc.opacity_entropy > 0:
            loss = loss + oc.opacity_entropy * reg.opacity_entropy(self.splats["opacities"])
        if oc.scale_reg > 0:
            loss = loss + oc.scale_reg * torch.exp(self.splats["scales"]).mean() / self.radius
        if oc.anisotropy > 0:
            axes = 2 if oc.kind == "2dgs" else 3
            loss = loss + oc.anisotropy * reg.anisotropy(self.splats["scales"][:, :axes], oc.max_anisotropy)
        if self.dark is not None:
            loss = loss + oc.empty_dark * reg.empty_where(out.alpha[0], self.dark[index])
        if oc.depth_weight > 0 and f.depths is not None and f.depth_confidence is not None:
            loss = loss + oc.depth_weight * reg.depth_agreement(out.depth[0, ..., 0], f.depths[index],
                                                                f.depth_confidence[index])
        if regularize and oc.depth_smooth > 0 and oc.kind == "3dgs":
            loss = loss + oc.depth_smooth * reg.depth_smoothness(out.depth[:1], self.images[index : index + 1],
                                                                 out.alpha[:1], self.radius)
        if regularize and oc.kind == "2dgs":
            if oc.distortion > 0:
                loss = loss + oc.distortion * out.distortion[:1].mean()
            if oc.normal_consistency > 0:
                loss = loss + oc.normal_consistency * reg.normal_consistency(out.normals[:1],
                                                                             out.depth_normals[:1], out.alpha[:1])
        if pseudo:
            loss = loss + oc.pseudo_views * reg.warp_consistency(
                out.rgb[p], out.depth[p], out.alpha[p], vm[p], K[p], target, out.depth[0].detach(), vm[0], K[0],
                tolerance=0.03 * self.radius)
        if co_reg:  # CoR-GS: the two sets' renders of one pseudo camera agree (the partner's held fixed)
            assert self.partner is not None
            with torch.no_grad():
                theirs = self.partner._render(vm[c : c + 1], K[c : c + 1], bgs[c : c + 1], sh_degree, dropout=False).rgb
            loss = loss + oc.co_reg * reg.photometric(out.rgb[c : c + 1], theirs, oc.ssim_weight)
        if binocular:  # the shifted render, carried into the training view through its depth, against the photo
            loss = loss + oc.binocular * reg.warp_consistency(
                target, out.depth[0], out.alpha[0], vm[0], K[0], out.rgb[b], out.depth[b].detach(), vm[b], K[b],
                tolerance=0.03 * self.radius)
        if other is not None:  # another training photo, carried into this view through its rendered depth
            assert self.last_depth is not None
            vm_o, K_o = f.viewmats[other : other + 1], f.Ks[other : other + 1]
            if self.refine_poses:
                vm_o, K_o = (x.detach() for x in self.pose(slice(other, other + 1), vm_o, K_o))
            loss = loss + oc.cross_view * reg.warp_consistency(
                self.images[index], out.depth[0], out.alpha[0], vm[0], K[0], self.images[other],
                self.last_depth[other], vm_o[0], K_o[0], tolerance=0.03 * self.radius)
        if t is not None and extra is not None:
            term = t.weights[extra] * reg.photometric(out.rgb[-1:], t.images[extra : extra + 1], t.ssim_weight)
            self.target_sum += term.detach()
            loss = loss + term
        # Recorded on the device and checked every log_every steps, to avoid a host sync per step.
        bad = ~torch.isfinite(loss) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(bad, step, self.first_bad_step)
        loss.backward()
        projected = out.info["gradient_2dgs" if oc.kind == "2dgs" else "means2d"]
        if oc.strategy != "mcmc" and projected.grad is None:  # the default strategy reads it (MCMC does not)
            # The reference rasterizer drew no splat, so nothing made the gradient: gsplat's kernels give zeros then.
            assert not bool((out.info["radii"] > 0).any()), "splats were drawn but their 2D means have no gradient"
            projected.grad = torch.zeros_like(projected)
        if oc.strategy == "mcmc":
            self.strategy.step_post_backward(self.splats, self.optimizers, self.state, step, out.info,
                                             lr=self.optimizers["means"].param_groups[0]["lr"])
        else:
            self.strategy.step_post_backward(self.splats, self.optimizers, self.state, step, out.info, packed=False)
        for opt in self.optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        if regularize and oc.opacity_decay > 0 and step < min(oc.refine_stop, self.steps):
            with torch.no_grad():
                self.splats["opacities"].copy_(reg.decayed_opacity(self.splats["opacities"], oc.opacity_decay))
        decay = 0.01 ** (min(step, self.steps) / max(1, self.steps))
        self.optimizers["means"].param_groups[0]["lr"] = self.means_lr0 * decay
        if self.refine_poses:
            self.pose_optimizer.step()
            self.pose_optimizer.zero_grad(set_to_none=True)
            for group in self.pose_optimizer.param_groups:
                group["lr"] = oc.pose_lr * decay
        return loss.detach()

    def _cross_view_partner(self, index: int) -> int | None:
        """The training view whose photo the cross-view term carries into view ``index`` this step (None: none)."""
        if self.covisible is None:
            return None
        weights = self.covisible[index] * self.rendered
        if float(weights.sum()) <= 0:
            return None
        return int(torch.multinomial(weights, 1, generator=self.generator))

    # --- pruning ----------------------------------------------------------------------------------
    @torch.no_grad()
    def prune(self, extra: Tensor | None = None) -> int:
        """Remove the splats outside the masks' hull (hull_prune), those too few views see (min_views), those in front
        of the stereo depth (free_space) and ``extra`` (Bool [N]); the number removed."""
        from gsplat.strategy.ops import remove

        doomed = torch.zeros(len(self.splats["means"]), dtype=torch.bool, device=self.device)
        if extra is not None:
            doomed |= extra
        if self.oc.hull_prune and self.frames.masks is not None:
            doomed |= reg.outside_hull(self.splats["means"], self.frames.viewmats, self.frames.Ks, self.frames.masks)
        if self.oc.min_views > 0:
            doomed |= self.views_seeing() < self.oc.min_views
        if self.oc.free_space > 0 and self.frames.depths is not None:
            free = reg.in_free_space(self.splats["means"], self.frames.viewmats, self.frames.Ks, self.frames.depths,
                                     self.oc.free_space, self.oc.free_space_window)
            self.free_space_pruned += int((free & ~doomed).sum())
            doomed |= free
        if not bool(doomed.any()):
            return 0
        if self.oc.strategy == "mcmc":  # MCMC relocates dead splats instead of removing them
            self.splats["opacities"][doomed] = torch.logit(torch.tensor(1e-4, device=self.device))
        else:
            remove(params=self.splats, optimizers=self.optimizers, state=self.state, mask=doomed)
        return int(doomed.sum())

    @torch.no_grad()
    def prune_both(self) -> None:
        """Both sets pruned; with ``co_prune`` (CoR-GS) each also loses the splats the other set has nothing near."""
        partner = self.partner
        assert partner is not None
        mine = theirs = None
        if self.oc.co_prune > 0:
            distance = self.oc.co_prune * self.radius
            mine = reg.unmatched(self.splats["means"], partner.splats["means"], distance)
            theirs = reg.unmatched(partner.splats["means"], self.splats["means"], distance)
            self.co_pruned += int(mine.sum())
            partner.co_pruned += int(theirs.sum())
        self.prune(extra=mine)
        partner.prune(extra=theirs)

    @property
    def prunes(self) -> bool:
        """Whether any pruning of :meth:`prune` is switched on."""
        return self.oc.hull_prune or self.oc.min_views > 0 or self.oc.free_space > 0

    def views_seeing(self) -> torch.Tensor:
        """How many training views give each splat at least half a pixel of blending weight."""
        counts = torch.zeros(len(self.splats["means"]), device=self.device)
        f = self.frames
        for i in range(len(f) if len(counts) else 0):  # no splats: nothing to render, and no gradient
            probe = torch.zeros(len(self.splats["means"]), 1, device=self.device, requires_grad=True)
            with torch.enable_grad():
                detached = {k: v.detach() for k, v in self.splats.items()}
                out = render(detached, f.viewmats[i : i + 1], f.Ks[i : i + 1], f.width, f.height, kind=self.oc.kind,
                             backend=self.backend, colors=probe + 1.0)
                out.rgb.sum().backward()
            counts += (probe.grad[:, 0] > 0.5).float()  # type: ignore[index]
        return counts

    # --- the loop ---------------------------------------------------------------------------------
    def train(self, start: int = 0, stop: int | None = None) -> None:
        """Steps ``start`` to ``stop`` (default: all ``steps``); a run may be split into calls, e.g. to renew
        targets."""
        oc = self.oc
        stop = self.steps if stop is None else stop
        order: list[int] = []
        last_good = start
        self._save_checkpoint(start)
        running = torch.zeros((), device=self.device)
        with progress.task(self.title, stop - start) as bar:
            for step in range(start, stop):
                if not order:
                    order = torch.randperm(len(self.frames), generator=self.generator).tolist()
                index = order.pop()
                try:
                    running += self.step(step, index)
                    if self.partner is not None:  # the same view, its own randomness; its co_reg term sees
                        self.partner.step(step, index)  # this set's splats as this step left them
                except Exception:
                    self._check_finite(last_good)  # a NaN a few steps back can break later steps
                    raise
                self.check_splats(step, last_good)  # densification's pruning
                checkpoint = (step + 1) % oc.checkpoint_every == 0
                if checkpoint or (step + 1) % self.log_every == 0 or step + 1 == stop:
                    self._check_finite(last_good)
                    self.losses.append(float(running) / self.log_every)
                    self.photometric.append(float(self.photometric_sum) / self.log_every)
                    running.zero_()
                    self.photometric_sum.zero_()
                    if self.targets is not None:
                        self.target_losses.append(float(self.target_sum) / self.log_every)
                        self.target_sum.zero_()
                if step > 0 and step % oc.prune_every == 0 and step <= min(oc.refine_stop, self.steps):
                    if self.partner is not None:
                        self.prune_both()
                    elif self.prunes:
                        self.prune()
                    self.check_splats(step, last_good)  # this stage's pruning
                if checkpoint:
                    if not all(bool(torch.isfinite(p).all()) for p in self.splats.values()):
                        self._fail(step, last_good, "non-finite parameters")
                    self._save_checkpoint(step + 1)
                    last_good = step + 1
                if self.live is not None and (step + 1) % self.live_every == 0:
                    self.live.offer(step + 1, self.splats, {"loss": self.losses[-1] if self.losses else None})  # type: ignore[arg-type]
                bar.advance()
        if not all(bool(torch.isfinite(p).all()) for p in self.splats.values()):
            self._fail(stop - 1, last_good, "non-finite parameters")

    def check_splats(self, step: int, last_good: int) -> None:
        """Stop the stage where pruning left this set, or its partner, without a splat: nothing would render."""
        for trainer, which in ((self, ""), (self.partner, " in the partner set")):
            if trainer is not None and len(trainer.splats["means"]) == 0:
                self._fail(step, last_good, f"no splats{which}: densification and pruning removed every one (are the "
                           "training photos blank, or do the cameras not see the initial points?)")

    def _check_finite(self, last_good: int) -> None:
        for trainer, what in ((self, "a non-finite loss"), (self.partner, "a non-finite loss in the partner splats")):
            bad = int(trainer.first_bad_step) if trainer is not None else -1
            if bad >= 0:
                self._fail(bad, last_good, what)

    def _save_checkpoint(self, step: int) -> None:
        if self.checkpoint is None:
            return
        state = {"step": step, "splats": {k: v.detach().cpu() for k, v in self.splats.items()}}
        buffer = io.BytesIO()
        torch.save(state, buffer)  # in memory first: torch's file writer turns a full disk into an unrelated error
        atomic_write(self.checkpoint, lambda tmp: tmp.write_bytes(buffer.getbuffer()))

    def _fail(self, step: int, last_good: int, what: str) -> None:
        kept = (f"The last good checkpoint (step {last_good}) is kept at {self.checkpoint}"
                if self.checkpoint is not None
                else "No checkpoint is kept")
        raise StageError(f"{self.title}: step {step} produced {what}; stopped. {kept}")

    def render_fn(self, width: int, height: int):
        """``(viewmats [1, 4, 4], Ks [1, 3, 3]) -> [H, W, 3]``: the frozen splats on black, differentiable in the
        camera."""
        frozen = {k: v.detach() for k, v in self.splats.items()}

        def fn(viewmats: torch.Tensor, Ks: torch.Tensor) -> torch.Tensor:
            return render_on_black(frozen, viewmats, Ks, width, height, self.oc, self.backend)[0]

        return fn

    @torch.no_grad()
    def render_view(self, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int) -> torch.Tensor:
        return render_on_black(self.splats, viewmat[None], K[None], width, height, self.oc, self.backend)[0]  # type: ignore[arg-type]

    @torch.no_grad()
    def render_layers(self, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int) -> Render:
        """Colour on black, alpha and depth of one camera ([1, H, W, ...]), rendered as :meth:`render_view` does."""
        return layers_on_black(self.splats, viewmat[None], K[None], width, height, self.oc, self.backend)  # type: ignore[arg-type]


def render_on_black(splats: dict[str, Tensor], viewmats: Tensor, Ks: Tensor, width: int, height: int,
                    oc: OptimizeConfig, backend: Backend = "auto") -> Tensor:
    """Colour [C, H, W, 3] of the splats on black, rendered as the optimize settings ``oc`` train them."""
    return layers_on_black(splats, viewmats, Ks, width, height, oc, backend).rgb


def layers_on_black(splats: dict[str, Tensor], viewmats: Tensor, Ks: Tensor, width: int, height: int,
                    oc: OptimizeConfig, backend: Backend = "auto") -> Render:
    """Colour on black, alpha and depth of the splats, rendered as the optimize settings ``oc`` train them."""
    return render(splats, viewmats, Ks, width, height, kind=oc.kind, sh_degree=oc.sh_degree,
                  backgrounds=torch.zeros(len(viewmats), 3, device=viewmats.device), backend=backend,
                  antialiased=oc.antialiased)
