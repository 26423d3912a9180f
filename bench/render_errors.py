"""How a run's held-out renders miss their photos: is it where the camera looks, the colours, or the shapes?

For each render in ``--renders`` (the optimize stage's ``assets/renders/<view name>.png``) and its photo and mask in
``--capture`` (any layout recon imports), over the mask (the whole image without one):

* ``psnr``: the render as it is;
* ``best_shift``: the render shifted by up to ``--max-shift`` pixels (steps of a quarter pixel) to fit the photo best,
  and the PSNR there: a misplaced camera gains much from it (``dx``, ``dy``: how far right and down of the photo's
  the render's content lies);
* ``affine_colour``: each colour channel of the render fitted to the photo's by a gain and an offset: a colour cast
  or a wrong exposure gains much from it;
* ``blurred_photo``: the photo blurred by a Gaussian of ``--blur`` pixels against itself, a yardstick of what a
  render that is right but soft would score.

Without ``--renders`` it scores every photo of the capture (down-sampled by ``--downscale``) blurred against itself
only: the yardstick of captures whose renders are not at hand.

Runs on the CPU in seconds; prints one JSON line per view and writes the report.

    python bench/render_errors.py --capture ../shared/realdata/dtu_scan65 --renders out/dtu_scan65/assets/renders \\
        --out bench/results/render-errors-cpu.json
    python bench/render_errors.py --capture ../shared/realdata/dtu_scan24 --out bench/results/photo-blur-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from recon.io import ImportOptions, import_scene
from recon.io.images import downsample, header_size, read_image, read_mask
from recon.metrics import images as image_metrics


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """recon's PSNR over ``mask``, at most 100 dB (identical images), which JSON can hold."""
    return min(image_metrics.psnr(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(mask)), 100.0)


def shifted(render: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``render`` sampled (dx, dy) pixels right and down of each pixel, bilinear, its edges repeated: content that
    lies (dx, dy) off comes back into place."""
    h, w = render.shape[:2]
    theta = torch.tensor([[[1.0, 0.0, 2 * dx / w], [0.0, 1.0, 2 * dy / h]]], dtype=torch.float32)
    image = torch.from_numpy(render).permute(2, 0, 1)[None].float()
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    out = F.grid_sample(image, grid, align_corners=False, padding_mode="border")
    return out[0].permute(1, 2, 0).numpy()


def photo_and_mask(graph, view, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """``view``'s photo down-sampled by ``factor`` (averaging blocks, as recon does) and its mask (all of it without
    one)."""
    photo = downsample(read_image(graph.image_of(view))[..., :3], factor)
    if view.mask is None:
        return photo, np.ones(photo.shape[:2], bool)
    return photo, downsample(read_mask(graph.resolve(view.mask)), factor) > 0.5


def blurred(photo: np.ndarray, mask: np.ndarray, blur: float) -> float:
    """The photo blurred by a Gaussian of ``blur`` pixels against itself, over ``mask``."""
    return round(psnr(gaussian_filter(photo, (blur, blur, 0)), photo, mask), 3)


def view_errors(render: np.ndarray, photo: np.ndarray, mask: np.ndarray, max_shift: float, blur: float) -> dict:
    steps = np.arange(-max_shift, max_shift + 1e-9, 0.25)
    best = max((psnr(shifted(render, dx, dy), photo, mask), float(dx), float(dy)) for dx in steps for dy in steps)
    fitted = np.empty_like(render)
    for c in range(3):
        design = np.stack([render[..., c][mask], np.ones(int(mask.sum()))], 1)
        gain, offset = np.linalg.lstsq(design, photo[..., c][mask], rcond=None)[0]
        fitted[..., c] = render[..., c] * gain + offset
    return {"psnr": round(psnr(render, photo, mask), 3),
            "best_shift": {"psnr": round(best[0], 3), "dx": best[1], "dy": best[2]},
            "affine_colour": round(psnr(fitted, photo, mask), 3),
            "blurred_photo": blurred(photo, mask, blur),
            "mask_share": round(float(mask.mean()), 3),
            "mean_colour": {"render": np.round(render[mask].mean(0).astype(float), 3).tolist(),
                            "photo": np.round(photo[mask].mean(0).astype(float), 3).tolist()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", type=Path, required=True)
    ap.add_argument("--renders", type=Path, help="the renders (without: each photo blurred against itself only)")
    ap.add_argument("--downscale", type=int, default=1,
                    help="the photos' down-sampling without --renders (with them, the renders' size sets it)")
    ap.add_argument("--max-shift", type=float, default=2.0)
    ap.add_argument("--blur", type=float, default=3.0)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    graph = import_scene(args.capture, ImportOptions())
    report: dict = {"benchmark": "render-errors", "capture": args.capture.name, "blur": args.blur, "note": args.note,
                    "environment": {"device": platform.processor() or "cpu", "torch": torch.__version__,
                                    "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}}
    if args.renders is None:
        report.update(downscale=args.downscale, views=yardsticks(graph, args.downscale, args.blur))
        if not report["views"]:
            raise SystemExit(f"no view of {args.capture} has a photo and a mask that is not empty")
        report["mean"] = {"blurred_photo": round(float(np.mean([r["blurred_photo"] for r in
                                                                report["views"].values()])), 3)}
    else:
        report.update(renders=str(args.renders), max_shift=args.max_shift,
                      views=render_errors(graph, args.renders, args.max_shift, args.blur))
        if not report["views"]:
            raise SystemExit(f"no render in {args.renders} is named after a view of {args.capture}")
        rows = list(report["views"].values())
        report["mean"] = {key: round(float(np.mean([r[key] for r in rows])), 3)
                          for key in ("psnr", "affine_colour", "blurred_photo")}
        report["mean"]["best_shift"] = round(float(np.mean([r["best_shift"]["psnr"] for r in rows])), 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def render_errors(graph, renders: Path, max_shift: float, blur: float) -> dict[str, dict]:
    """view_errors of each render in ``renders`` named after a view of ``graph`` with a photo, by view name."""
    views = {v.name: v for v in graph.views()}
    out = {}
    for path in sorted(renders.glob("*.png")):
        view = views.get(path.stem)
        if view is None or view.image is None:
            continue
        render = read_image(path)[..., :3]
        factor = header_size(graph.image_of(view))[1] // render.shape[0]  # recon down-samples by an integer
        photo, mask = photo_and_mask(graph, view, factor)
        out[view.name] = view_errors(render, photo, mask, max_shift, blur)
        print(json.dumps({"view": view.name, **out[view.name]}), flush=True)
    return out


def yardsticks(graph, downscale: int, blur: float) -> dict[str, dict]:
    """Each photo of ``graph`` blurred against itself (``blurred_photo``), by view name; a view whose mask is empty
    has nothing to score and is left out."""
    out = {}
    for view in graph.views():
        if view.image is None:
            continue
        photo, mask = photo_and_mask(graph, view, downscale)
        if mask.any():
            out[view.name] = {"blurred_photo": blurred(photo, mask, blur), "mask_share": round(float(mask.mean()), 3)}
            print(json.dumps({"view": view.name, **out[view.name]}), flush=True)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
