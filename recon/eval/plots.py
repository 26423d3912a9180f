"""Plots of an evaluation (matplotlib, PNG): a metric per scene, a render grid, seconds per stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon.files import atomic_write
from recon.metrics.images import CONVENTION_KEYS

GRID_ROWS = 6


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _figure()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def write_all(out: Path, results: list[dict], published: list[dict]) -> list[Path]:
    ok = [r for r in results if r.get("status") == "ok"]
    if not ok:
        return []
    written = [metric_per_scene(out / "plots" / "metric_per_scene.png", ok, published),
               time_per_stage(out / "plots" / "time_per_stage.png", ok)]
    grid = render_grid(out / "plots" / "grid.png", out, ok)
    return written + ([grid] if grid else [])


def metric_per_scene(path: Path, results: list[dict], published: list[dict]) -> Path:
    """Bars of PSNR-M (PSNR where there are no masks) per scene, with the mean and published means as lines."""
    plt = _figure()
    key = "psnr_masked" if any(r["metrics"].get("psnr_masked") is not None for r in results) else "psnr"
    names = [r["scene"] for r in results]
    values = [r["metrics"].get(key) or 0.0 for r in results]
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(names) + 2), 3.5))
    ax.bar(names, values, color="#4c72b0")
    ax.axhline(float(np.mean(values)), color="black", lw=1.2, label=f"recon mean {np.mean(values):.2f}")
    for i, row in enumerate(published):
        value = row["values"].get(key)
        if value is not None:
            convention = row.get("convention")
            other = convention is not None and key in CONVENTION_KEYS.get(convention, {})  # not recon's convention
            ax.axhline(value, ls="--", lw=0.8, color=plt.cm.tab10(i % 10),
                       label=f"{row['name']} {value:.2f}" + (" (background black, whole image)" if other else ""))
    ax.set_ylabel({"psnr_masked": "PSNR-M (dB)", "psnr": "PSNR (dB)"}[key])
    ax.tick_params(axis="x", rotation=60)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def time_per_stage(path: Path, results: list[dict]) -> Path:
    """Stacked bars: seconds of each stage per scene."""
    plt = _figure()
    stages = list(dict.fromkeys(s for r in results for s in r.get("stages", {})))
    names = [r["scene"] for r in results]
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(names) + 2), 3.5))
    bottom = np.zeros(len(names))
    for i, stage in enumerate(stages):
        secs = np.array([r.get("stages", {}).get(stage, 0.0) for r in results])
        ax.bar(names, secs, bottom=bottom, label=stage, color=plt.cm.tab10(i % 10))
        bottom += secs
    ax.set_ylabel("seconds")
    ax.tick_params(axis="x", rotation=60)
    ax.legend(fontsize=7)
    return _save(fig, path)


def render_grid(path: Path, out: Path, results: list[dict]) -> Path | None:
    """Rows of ground truth | render | absolute error for the first test views of the scenes."""
    from recon.io import images as image_io

    rows = []
    for r in results:
        for truth_path in sorted((out / "scenes" / r["scene"] / "grid").glob("*_truth.png")):
            render_path = truth_path.with_name(truth_path.name.replace("_truth", "_render"))
            if render_path.is_file():
                rows.append((f"{r['scene']} {truth_path.name.split('_truth')[0]}",
                             image_io.read_image(truth_path), image_io.read_image(render_path)))
            if len(rows) >= GRID_ROWS:
                break
        if len(rows) >= GRID_ROWS:
            break
    if not rows:
        return None
    plt = _figure()
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 2.4 * len(rows)), squeeze=False)
    for (label, truth, render), ax in zip(rows, axes):
        h, w = min(truth.shape[0], render.shape[0]), min(truth.shape[1], render.shape[1])
        truth, render = truth[:h, :w], render[:h, :w]
        error = np.abs(truth - render).mean(-1)
        ax[0].imshow(truth)
        ax[1].imshow(render)
        ax[2].imshow(error, cmap="inferno", vmin=0, vmax=0.5)
        ax[0].set_ylabel(label, fontsize=7)
        for a, title in zip(ax, ("ground truth", "render", "|error|")):
            a.set_xticks([])
            a.set_yticks([])
            a.set_title(title, fontsize=8)
    return _save(fig, path)
