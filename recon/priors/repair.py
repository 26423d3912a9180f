"""A conditional diffusion model that repairs renders, trained from scratch on one scene's pairs.

The model is diffusers' ``UNet2DModel`` whose input is the noisy clean image
concatenated with the degraded render (6 channels), and which predicts the
clean image (``prediction_type="sample"``) at a DDIM timestep. It is trained
on random crops of (degraded render, real image) pairs, centred on the object,
with flips, quarter turns and a colour gain shared by both images; sampling
runs a few DDIM steps over the whole image, starting from pure noise
(``strength`` 1) or from the render noised part of the way (``strength`` < 1).

Images are float32 [N, H, W, 3] in [0, 1]; the network sees [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from recon import progress
from recon.errors import InputError, StageError
from recon.priors import require


@dataclass
class RepairSettings:
    channels: list[int]
    layers_per_block: int
    crop: int
    batch: int
    steps: int
    lr: float
    timesteps: int
    sample_steps: int
    strength: float


def check_channels(channels: list[int]) -> None:
    if not channels or any(c % 8 for c in channels):
        raise InputError(f"prior.channels {channels}: give one or more widths, each a multiple of 8")


def check_installed() -> None:
    """InputError unless the packages the model is built from are installed."""
    require(("diffusers",), "the prior stage")


def _diffusers():
    check_installed()
    import diffusers

    return diffusers


class SceneRepair:
    """Train with :meth:`fit` on pairs, then :meth:`repair` renders of the same scene."""

    name = "scene"
    pipeline_class = "UNet2DModel + DDIMScheduler"

    def __init__(self, settings: RepairSettings, device: torch.device, seed: int):
        check_channels(settings.channels)
        diffusers = _diffusers()
        self.s, self.device, self.seed = settings, device, seed
        torch.manual_seed(seed)
        levels = len(settings.channels)
        self.unet = diffusers.UNet2DModel(
            sample_size=settings.crop, in_channels=6, out_channels=3, layers_per_block=settings.layers_per_block,
            block_out_channels=tuple(settings.channels), down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels, norm_num_groups=8,
        ).to(device)
        self.scheduler = diffusers.DDIMScheduler(
            num_train_timesteps=settings.timesteps, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
            clip_sample=True, clip_sample_range=1.0, set_alpha_to_one=True, timestep_spacing="trailing")
        self.multiple = 2 ** (levels - 1)
        self.losses: list[float] = []
        self.log_every = 10
        self.done = 0  # training steps taken
        self.gen = torch.Generator().manual_seed(seed)
        self.gen_device = torch.Generator(device=device).manual_seed(seed)
        self.optimizer: torch.optim.Optimizer | None = None

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    # --- training -----------------------------------------------------------------------------
    def fit(self, inputs: Tensor, targets: Tensor, until: int | None = None) -> list[float]:
        """Train on pairs (degraded [N, H, W, 3], real [N, H, W, 3]) from where the last call stopped to step
        ``until`` (default: the last); the learning-rate schedule spans all ``steps`` whatever the pairs of each call.
        Returns the mean loss per ``log_every`` steps so far."""
        s = self.s
        until = s.steps if until is None else min(until, s.steps)
        if until <= self.done:
            return self.losses
        crops = _CropSampler(inputs, targets,
                             min(s.crop, inputs.shape[1], inputs.shape[2]) // self.multiple * self.multiple,
                             self.gen, self.device)
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=s.lr, weight_decay=1e-4)
            warmup = max(1, s.steps // 20)
            self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer,
                lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(i, s.steps) / s.steps)))
        opt = self.optimizer
        self.unet.train()
        running, count = torch.zeros((), device=self.device), 0
        with progress.task("prior: repair model", until - self.done) as bar:
            for step in range(self.done, until):
                cond, clean = crops.batch(s.batch)
                noise = torch.randn(clean.shape, generator=self.gen_device, device=self.device)
                t = torch.randint(0, s.timesteps, (len(clean),), generator=self.gen_device, device=self.device)
                noisy = self.scheduler.add_noise(clean, noise, t)
                pred = self.unet(torch.cat([noisy, cond], 1), t).sample
                loss = F.l1_loss(pred, clean)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
                opt.step()
                self.lr_schedule.step()
                running += loss.detach()
                count += 1
                if (step + 1) % self.log_every == 0 or step + 1 == until:
                    value = float(running) / count
                    if not math.isfinite(value):
                        raise StageError(f"prior: the repair model's loss became {value} at step {step}; "
                                         f"lower prior.lr (now {s.lr})")
                    self.losses.append(value)
                    running.zero_()
                    count = 0
                bar.advance()
        self.done = until
        self.unet.eval()
        return self.losses

    # --- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def repair(self, images: Tensor, chunk: int = 8) -> Tensor:
        """Repaired copies of renders [N, H, W, 3] (same size, on the renders' device)."""
        out = [self._repair(images[i : i + chunk]) for i in range(0, len(images), chunk)]
        return torch.cat(out).to(images.device)

    def _repair(self, images: Tensor) -> Tensor:
        s = self.s
        n, h, w, _ = images.shape
        cond = images.to(self.device).permute(0, 3, 1, 2) * 2 - 1
        ph, pw = -h % self.multiple, -w % self.multiple
        cond = F.pad(cond, (0, pw, 0, ph), mode="replicate")
        self.scheduler.set_timesteps(s.sample_steps, device=self.device)
        timesteps = self.scheduler.timesteps
        gen = torch.Generator(device=self.device).manual_seed(self.seed)
        noise = torch.randn(cond.shape, generator=gen, device=self.device)
        if s.strength < 1.0:  # start part of the way down from the render itself
            timesteps = timesteps[min(len(timesteps) - 1, int(round((1 - s.strength) * len(timesteps)))):]
            x = self.scheduler.add_noise(cond, noise, timesteps[:1].repeat(n))
        else:
            x = noise
        for t in timesteps:
            pred = self.unet(torch.cat([x, cond], 1), t.expand(n)).sample
            x = self.scheduler.step(pred, t, x, generator=gen).prev_sample
        return ((x[:, :, :h, :w].clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).float()


class _CropSampler:
    """Random crops of pairs, centred on pixels that are not background in either image, augmented alike.

    Pairs stay on the model's device and a batch is cut with one gather: crop centres are drawn uniformly
    over every pair's foreground pixels (so larger objects give more crops).
    """

    def __init__(self, inputs: Tensor, targets: Tensor, crop: int, gen: torch.Generator, device: torch.device):
        self.pairs = torch.stack([inputs, targets], 1).to(device).float()  # [N, 2, H, W, 3]
        self.crop, self.gen, self.device = crop, gen, device
        n, _, h, w, _ = self.pairs.shape
        foreground = (self.pairs.amax(-1) > 0.02).any(1)  # [N, H, W]
        where = torch.nonzero(foreground)
        self.where = where if len(where) else torch.nonzero(torch.ones_like(foreground))
        self.offsets = torch.arange(crop, device=device)

    def batch(self, size: int) -> tuple[Tensor, Tensor]:
        h, w = self.pairs.shape[2:4]
        c = self.crop
        pick = self.where[torch.randint(len(self.where), (size,), generator=self.gen).to(self.device)]
        i = pick[:, 0]
        y0 = (pick[:, 1] - c // 2).clamp(0, h - c)
        x0 = (pick[:, 2] - c // 2).clamp(0, w - c)
        ys = (y0[:, None] + self.offsets)[:, :, None]  # [B, c, 1]
        xs = (x0[:, None] + self.offsets)[:, None, :]  # [B, 1, c]
        crops = self.pairs[i[:, None, None], :, ys, xs]  # [B, c, c, 2, 3]
        crops = crops.permute(0, 3, 4, 1, 2)  # [B, 2, 3, c, c]
        flip = torch.rand(size, generator=self.gen).to(self.device) < 0.5
        crops = torch.where(flip[:, None, None, None, None], crops.flip(-1), crops)
        turns = torch.randint(4, (size,), generator=self.gen).to(self.device)
        crops = torch.stack([torch.rot90(crop, int(k), dims=(-2, -1)) for crop, k in zip(crops, turns.tolist())])
        gain = 1 + 0.2 * (torch.rand(size, 1, 3, 1, 1, generator=self.gen).to(self.device) - 0.5)  # shared by both
        crops = (crops * gain).clamp(0, 1) * 2 - 1
        return crops[:, 0], crops[:, 1]
