"""A pretrained image-to-image pipeline from the user's disk as the repair model.

``prior.checkpoint: PATH`` names a folder saved by diffusers'
``save_pretrained`` (``model_index.json`` and one folder per component), for
example a Stable Diffusion checkpoint (loaded as its image-to-image pipeline)
or a ControlNet image-to-image pipeline (the render is its control image too).
Nothing is downloaded: the folder must hold every component.
"""

from __future__ import annotations

import inspect
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recon import progress
from recon.errors import InputError
from recon.priors import require


class PretrainedRepair:
    """Repairs renders with a local diffusers image-to-image pipeline; it is not trained on the scene."""

    def __init__(self, folder: str | Path, device: torch.device, seed: int, strength: float, steps: int,
                 guidance: float, prompt: str):
        self.folder = Path(folder).expanduser()
        self.device, self.seed = device, seed
        if not 0 < strength <= 1:
            raise InputError(f"prior.checkpoint_strength {strength}: must be in (0, 1]")
        # img2img runs int(steps * strength) steps: at least one
        self.strength, self.guidance, self.prompt = strength, guidance, prompt
        self.steps = max(steps, math.ceil(1 / strength))
        self.pipe = load_pipeline(self.folder, device)
        self.params = inspect.signature(self.pipe.__call__).parameters
        self.name = f"checkpoint:{self.folder}"
        self.pipeline_class = type(self.pipe).__name__
        self.parameters = None  # not trained here: nothing to count
        self.losses: list[float] = []
        self.log_every = None

    @torch.no_grad()
    def repair(self, images: Tensor) -> Tensor:
        from PIL import Image

        params = self.params
        out = []
        h, w = images.shape[1:3]
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        with progress.task("prior: repair (pretrained)", len(images)) as bar:
            for image in images:
                pil = Image.fromarray((image.clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8))
                kwargs = dict(image=pil, strength=self.strength, num_inference_steps=self.steps, output_type="np",
                              generator=gen)
                if "prompt" in params:
                    kwargs["prompt"] = self.prompt
                if "guidance_scale" in params:
                    kwargs["guidance_scale"] = self.guidance
                if "control_image" in params:
                    kwargs["control_image"] = pil
                try:
                    result = np.asarray(self.pipe(**kwargs).images[0], dtype=np.float32)
                except Exception as exc:  # a pipeline that loads but cannot run this way
                    reason = str(exc).splitlines()[0] if str(exc) else ""
                    raise InputError(f"prior.checkpoint {self.folder}: the {self.pipeline_class} pipeline failed on a "
                                     f"{w}x{h} render ({type(exc).__name__}: {reason})") from None
                tensor = torch.from_numpy(result).permute(2, 0, 1)[None]
                if tensor.shape[-2:] != (h, w):
                    tensor = torch.nn.functional.interpolate(tensor, size=(h, w), mode="bilinear", antialias=True,
                                                             align_corners=False)
                out.append(tensor[0].permute(1, 2, 0).clamp(0, 1))
                bar.advance()
        return torch.stack(out).to(images.device)


def check_installed() -> None:
    """InputError unless the packages a saved pipeline is loaded with are installed."""
    require(("diffusers", "transformers"), "prior.checkpoint")


def check_folder(folder: str | Path) -> Path:
    """``folder`` if it looks like a saved diffusers pipeline; one clear line if not."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"prior.checkpoint {folder}: no such folder")
    if not (folder / "model_index.json").is_file():
        raise InputError(f"prior.checkpoint {folder}: not a diffusers pipeline folder (no model_index.json)")
    return folder


def load_pipeline(folder: Path, device: torch.device):
    """The image-to-image pipeline saved in ``folder``; one clear line when it is missing or unusable."""
    folder = check_folder(folder)
    check_installed()
    from diffusers import AutoPipelineForImage2Image
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # recon shows its own progress
    diffusers_logging.set_verbosity_error()
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    try:
        with warnings.catch_warnings():  # diffusers' deprecation notes about the folder's own config
            warnings.simplefilter("ignore", FutureWarning)
            pipe = AutoPipelineForImage2Image.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(f"prior.checkpoint {folder}: cannot load an image-to-image pipeline from it "
                         f"({type(exc).__name__}: {first})") from None
    params = inspect.signature(pipe.__call__).parameters
    if "image" not in params or "strength" not in params:
        raise InputError(f"prior.checkpoint {folder}: {type(pipe).__name__} is not an image-to-image pipeline "
                         "(it takes no image and strength)")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
