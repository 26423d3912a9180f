"""The aggregates of an evaluation: the papers' table (per scene and mean), published numbers beside ours, plots.

Writes into the results folder: ``table.md`` (recon's table, then the
published numbers of ``data/anchors/<suite>.yaml`` with recon's mean as the
last row, then what failed and why), ``table.csv`` (one row per scene and the
mean), ``summary.json``, and ``plots/`` (a metric per scene, a grid of ground
truth / render / error for a few test views, seconds per stage).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from recon.eval import plots
from recon.files import atomic_write, write_json
from recon.metrics.images import CONVENTION_KEYS
from recon.resources import ANCHORS_DIR

# (key, header, digits); a column is shown when some scene has a value for it.
COLUMNS = [
    ("psnr_masked", "PSNR-M", 2), ("ssim_masked", "SSIM-M", 3), ("lpips_masked", "LPIPS-M", 3),
    ("psnr_black", "PSNR-K", 2), ("ssim_black", "SSIM-K", 3), ("lpips_black", "LPIPS-K", 3),
    ("ssim_box", "SSIM-B", 3), ("lpips_box", "LPIPS-B", 3),
    ("psnr", "PSNR", 2), ("ssim", "SSIM", 3), ("lpips", "LPIPS", 3),
    ("chamfer", "Chamfer", 3), ("accuracy", "Acc.", 3), ("completeness", "Comp.", 3),
    ("pose_rotation_deg", "Rot. err (deg)", 2), ("seconds", "s", 1),
]
DEFINITIONS = (
    "PSNR-M: PSNR over the object-mask pixels; SSIM-M / LPIPS-M: on both images with the background "
    "outside the mask set to white; PSNR-K / SSIM-K / LPIPS-K: the whole image with the background set to "
    "black in both images; SSIM-B / LPIPS-B: on both images cropped to the mask's tight bounding "
    "box (SpaRe's SSIM-M / LPIPS-M); Chamfer: mean of accuracy and completeness (DTU: millimetres in "
    "DTU's frame, after its observation masks; synthetic scenes: their own units); s: wall seconds "
    "of the whole scene (import to mesh). LPIPS is left empty when its AlexNet weights are not on disk."
)


def row_values(result: dict) -> dict[str, float | None]:
    values = dict(result.get("metrics", {}))
    values["seconds"] = result.get("seconds")
    return values


def mean_row(results: list[dict]) -> dict[str, float | None]:
    ok = [row_values(r) for r in results if r.get("status") == "ok"]
    out: dict[str, float | None] = {}
    for key, _, _ in COLUMNS:
        vals = [value for v in ok if (value := v.get(key)) is not None]
        out[key] = float(np.mean(vals)) if vals else None
    return out


def shown_columns(results: list[dict]) -> list[tuple[str, str, int]]:
    ok = [row_values(r) for r in results if r.get("status") == "ok"]
    return [c for c in COLUMNS if any(v.get(c[0]) is not None for v in ok)] or COLUMNS[3:4]


def cells(values: dict[str, Any], columns: list[tuple[str, str, int]]) -> list[str]:
    """One table row's formatted values, in the order of ``columns`` (empty where a value is missing)."""
    return ["" if values.get(k) is None else f"{values[k]:.{d}f}" for k, _, d in columns]


def load_anchors(name: str | None) -> dict | None:
    path = ANCHORS_DIR / f"{name}.yaml" if name else None
    if path is None or not path.is_file():
        return None
    return yaml.safe_load(path.read_text())


def markdown(title: str, results: list[dict], anchors: dict | None, views: int | None) -> str:
    columns = shown_columns(results)
    lines = [f"# {title}", "", "| scene | " + " | ".join(h for _, h, _ in columns) + " |",
             "| --- | " + " | ".join("---:" for _ in columns) + " |"]
    for r in results:
        if r.get("status") != "ok":
            failed = ["failed"] + [""] * (len(columns) - 1)
            lines.append(f"| {r['scene']} | " + " | ".join(failed) + " |")
            continue
        v = row_values(r)
        lines.append(f"| {r['scene']} | " + " | ".join(cells(v, columns)) + " |")
    mean = mean_row(results)
    ok = sum(r.get("status") == "ok" for r in results)
    lines.append(f"| **mean ({ok}/{len(results)})** | " + " | ".join(cells(mean, columns)) + " |")
    lines += ["", DEFINITIONS]
    published = anchor_rows(anchors, views)
    if anchors and published:
        lines += ["", f"## Published, {views} views", ""] + published_table(published, mean)
        if anchors.get("note"):
            lines += ["", anchors["note"].strip()]
    failures = [r for r in results if r.get("status") != "ok"]
    if failures:
        lines += ["", "## Failed", ""] + [f"- {r['error']}" for r in failures]
    return "\n".join(lines) + "\n"


def published_table(published: list[dict], mean: dict[str, float | None]) -> list[str]:
    """Markdown lines: each published method, and recon's mean under the same masked convention beside it."""
    keys = [c for c in COLUMNS if any(c[0] in row["values"] for row in published)]
    conventions = any(row.get("convention") for row in published)
    head = ["method", *(h for _, h, _ in keys)] + (["convention", "recon, same convention"] if conventions else [])
    lines = ["| " + " | ".join(head) + " | source |", "| --- | " + " | ".join("---:" for _ in head[1:]) + " | --- |"]
    for row in published:
        extra = []
        if conventions:
            ours = same_convention(mean, row.get("convention"))
            extra = [row.get("convention") or "unknown", " / ".join(c for c in cells(ours, keys) if c) if ours else ""]
        lines.append(f"| {row['name']} | " + " | ".join(cells(row["values"], keys) + extra)
                     + f" | {row['citation']}; {row['source']} |")
    recon_row = cells(mean, keys) + (["mask_mean", ""] if conventions else [])
    lines.append("| **recon (this run)** | " + " | ".join(recon_row)
                 + " | this table |")
    return lines


def same_convention(values: dict[str, float | None], convention: str | None) -> dict[str, float | None] | None:
    """recon's values under the names of the anchors' keys, measured by ``convention`` (None if unknown)."""
    if convention not in CONVENTION_KEYS:
        return None
    rename = CONVENTION_KEYS[convention]
    return {key: values.get(rename.get(key, key)) for key, _, _ in COLUMNS}


def anchor_rows(anchors: dict | None, views: int | None) -> list[dict]:
    if not anchors or views is None:
        return []
    rows = []
    for m in anchors.get("methods", []):
        values = (m.get("views") or {}).get(views) or (m.get("views") or {}).get(str(views))
        if values:
            rows.append({"name": m["name"], "citation": m.get("citation", ""), "source": m.get("source", ""),
                         "values": values, "convention": m.get("masked_convention"), "setting": m.get("setting")})
    return rows


def csv_text(results: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    keys = [k for k, _, _ in COLUMNS]
    writer.writerow(["scene", "status", *keys, "error"])
    for r in results:
        v = row_values(r) if r.get("status") == "ok" else {}
        writer.writerow([r["scene"], r.get("status"), *[v.get(k, "") if v.get(k) is not None else "" for k in keys],
                         r.get("error", "")])
    mean = mean_row(results)
    writer.writerow(["mean", "", *[mean[k] if mean[k] is not None else "" for k in keys], ""])
    return buf.getvalue()


def write_aggregates(out: Path, title: str, results: list[dict], anchors_name: str | None, views: int | None,
                     protocol: dict) -> dict:
    """table.md, table.csv, summary.json and plots/ in ``out``; returns the summary."""
    out = Path(out)
    anchors = load_anchors(anchors_name)
    text = markdown(title, results, anchors, views)
    atomic_write(out / "table.md", lambda tmp: tmp.write_text(text))
    table = csv_text(results)
    atomic_write(out / "table.csv", lambda tmp: tmp.write_text(table))
    written = plots.write_all(out, results, anchor_rows(anchors, views))
    summary = {
        "title": title, "protocol": protocol, "scenes": len(results),
        "ok": sum(r.get("status") == "ok" for r in results),
        "failed": [{"scene": r["scene"], "error": r.get("error")} for r in results if r.get("status") != "ok"],
        "mean": mean_row(results),
        "seconds_per_scene": {r["scene"]: r.get("seconds") for r in results if r.get("status") == "ok"},
        "plots": [str(p.relative_to(out)) for p in written],
    }
    write_json(out / "summary.json", summary)
    return summary
