"""How a stage's metrics read in one line (the run summary, the viewer's panel)."""

from __future__ import annotations

SUMMARY_KEYS = ("outcome", "views", "layout", "train", "test", "source", "points", "psnr", "ssim", "psnr_masked",
                "ssim_masked",
                "lpips", "gaussians", "backend", "faces", "chamfer")


def summarise(metrics: dict) -> str:
    """One line of the metrics a stage recorded that a person looks at first."""
    parts = []
    metrics = {**metrics, **metrics.get("geometry", {})}
    for key in SUMMARY_KEYS:
        value = metrics.get(key)
        if value is None:
            continue
        if isinstance(value, list):
            value = len(value)
        elif isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"{key}: {value}")
    return ", ".join(parts)
