"""Views as tensors, and the scene's extent: what the init, optimize and evaluate stages share.

A :class:`Frames` batch holds images [V, H, W, 3], masks [V, H, W] (or None),
world-to-camera matrices [V, 4, 4] and intrinsics [V, 3, 3] for views of one
size, in the conventions of camera.py. Views of other sizes (photos from
different cameras) are resampled to the size most of them have, and their
intrinsics scaled with them (x and y apart, so a different aspect ratio stays
an exact pinhole camera with fx != fy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from recon.errors import InputError
from recon.io import images as image_io
from recon.scene.camera import axes_normal_equations, camera_center, viewing_direction
from recon.scene.graph import SceneGraph, View


@dataclass
class Frames:
    names: list[str]
    images: Tensor | None  # [V, H, W, 3] float32 in [0, 1]; None for views without images
    masks: Tensor | None  # [V, H, W] bool
    viewmats: Tensor  # [V, 4, 4]
    Ks: Tensor  # [V, 3, 3]
    width: int
    height: int
    depths: Tensor | None = None  # [V, H, W] depth that supervises training (0 where unknown)
    depth_confidence: Tensor | None = None  # [V, H, W] in [0, 1]

    def __len__(self) -> int:
        return len(self.names)

    def training_images(self) -> Tensor:
        """``images``, which frames to train on must have."""
        if self.images is None:
            raise InputError(f"views {', '.join(self.names)}: training needs their images")
        return self.images

    def subset(self, indices: list[int]) -> Frames:
        pick = lambda t: None if t is None else t[indices]  # noqa: E731
        return Frames([self.names[i] for i in indices], pick(self.images), pick(self.masks), self.viewmats[indices],
                      self.Ks[indices], self.width, self.height, pick(self.depths), pick(self.depth_confidence))

    def to(self, device: torch.device) -> Frames:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Frames(self.names, move(self.images), move(self.masks), self.viewmats.to(device), self.Ks.to(device),
                      self.width, self.height, move(self.depths), move(self.depth_confidence))


def load_frames(graph: SceneGraph, views: list[View], factor: int = 1, with_images: bool = True,
                training: bool = False, trained: bool = False) -> Frames:
    """Read the views' images and masks (area-down-sampled by ``factor``) and stack their cameras.

    ``training``: frames to train on, which carry masks only when the scene lets masks shape the model
    (:meth:`SceneGraph.training_mask`); frames to score always carry them. ``trained``: the cameras the splats were
    trained with (:meth:`SceneGraph.trained_camera`), for work on finished splats.
    """
    if not views:
        raise InputError(f"{graph.name}: no views to load")
    cams = [graph.trained_camera(v) if trained else graph.camera_of(v) for v in views]
    sizes = [(c.width, c.height) for c in cams]
    width, height = max(set(sizes), key=lambda s: (sizes.count(s), s[0] * s[1]))
    images, masks = [], []
    if with_images and all(v.image for v in views):
        for v, size in zip(views, sizes):
            image = _resized(image_io.read_image(graph.image_of(v)), size, (width, height))
            images.append(image_io.downsample(image, factor))
            mask_path = graph.training_mask(v) if training else v.mask
            if mask_path:
                mask = _resized(image_io.read_mask(graph.resolve(mask_path)).astype(np.float32), size, (width, height))
                masks.append(image_io.downsample(mask, factor) > 0.5)
    Ks = np.stack([np.diag([width / w, height / h, 1.0]) @ c.K for c, (w, h) in zip(cams, sizes)])
    Ks[:, :2] /= factor
    return Frames(
        names=[v.name for v in views],
        images=torch.from_numpy(np.stack(images)).float() if images else None,
        masks=torch.from_numpy(np.stack(masks)) if masks and len(masks) == len(views) else None,
        viewmats=torch.from_numpy(np.stack([c.world_to_camera for c in cams])).float(),
        Ks=torch.from_numpy(Ks).float(),
        width=width // factor,
        height=height // factor,
    )


def _resized(pixels: np.ndarray, size: tuple[int, int], target: tuple[int, int]) -> np.ndarray:
    """An image [H, W, C] or mask [H, W] of ``size`` (width, height) resampled to ``target`` (bilinear, antialiased)."""
    if size == target:
        return pixels
    t = torch.from_numpy(pixels.reshape(pixels.shape[:2] + (-1,))).permute(2, 0, 1)[None]
    out = torch.nn.functional.interpolate(t, size=(target[1], target[0]), mode="bilinear", align_corners=False,
                                          antialias=True)
    return out[0].permute(1, 2, 0).reshape((target[1], target[0]) + pixels.shape[2:]).numpy()


def scene_bounds(graph: SceneGraph, views: list[View]) -> tuple[np.ndarray, float]:
    """(centre [3], radius) of the region the cameras look at.

    The centre is the point nearest (least squares) to the cameras' optical axes. Where the axes are parallel, or
    spread apart so that point lies behind every camera (a forward-facing capture), it is straight ahead of the
    cameras' mean centre instead: where the inverse depth is midway between the cameras' near and far bounds
    (their median) when they have bounds, else one mean camera distance ahead. The radius is what fills each
    camera's narrower half field of view at its distance, averaged over the cameras.
    """
    cams = [graph.camera_of(v) for v in views]
    centers = np.stack([camera_center(c.world_to_camera) for c in cams])
    dirs = np.stack([viewing_direction(c.world_to_camera) for c in cams])
    A, b = axes_normal_equations(centers, dirs)
    focus = np.linalg.solve(A, b) if len(cams) > 1 and np.linalg.cond(A) < 1e8 else None
    if focus is None or bool((((focus - centers) * dirs).sum(1) <= 0).all()):
        bounds = [(c.near, c.far) for c in cams if c.near and c.far]
        if bounds:
            ahead = float(np.median([2 / (1 / near + 1 / far) for near, far in bounds]))
            mean_dir = dirs.mean(0)
            focus = centers.mean(0) + mean_dir / max(float(np.linalg.norm(mean_dir)), 1e-8) * ahead
        else:
            focus = centers.mean(0) + dirs.mean(0) * np.linalg.norm(centers - centers.mean(0), axis=1).mean()
    radii = []
    for cam, c in zip(cams, centers):
        half_fov = min(np.arctan(0.5 * cam.width / cam.K[0, 0]), np.arctan(0.5 * cam.height / cam.K[1, 1]))
        radii.append(np.linalg.norm(c - focus) * np.sin(half_fov))
    return focus, float(np.mean(radii))
