"""Benchmark the poses stage on real captures: registration, pose errors, AUC and seconds from a few views.

Every capture under ``--data`` runs through the pipeline up to the poses stage
with ``poses.mode=estimate`` (partial registrations allowed, so that the rate is
measured) and is scored against its reference cameras: registered views,
rotation and translation errors after a similarity alignment (recon/metrics/poses.py),
relative-pose AUC at 5/10/20 degrees, the focal length's error, and the stage's
seconds (features, matching and reconstruction). With ``--refine`` the pipeline
goes on through the optimize stage with and without pose refinement (a GPU run).

Captures are read as they lie: a DTU/IDR scan (``image/``, ``cameras*.npz``) by
recon's importer; a COLMAP model (``sparse/0`` and ``images/``), a ``transforms.json``
and an LLFF capture (``poses_bounds.npy``, ``images_N/``, ``masks_N/``) are first written as IDR
folders in a scratch folder (links to the photos and masks, the reference cameras
as ``world_mat = K [R | t]``), so that every capture meets the same importer;
castle_p30's rotations, stored transposed, are corrected first (bench/captures.py).
LLFF stores per photo a camera-to-world [R | t] with axes (down, right, back) and
``h, w, f`` of the full-size photos; OpenCV's axes are (right, down, forward).

Views: DTU scans (folder names starting with ``dtu``) take the DTU protocol's
training ids (``--split dtu``); the other captures take views spread by
farthest-point sampling over the reference centres and, separately, a run of
consecutive views from the middle of the capture.

With ``--exif`` every photo is written again as a JPEG (quality 95) whose EXIF
holds its reference focal length as a 35 mm equivalent, rounded to whole
millimetres as cameras write it: what SfM does when the focal length is known,
as it is for phone and camera photos (the captures here have no EXIF).

    python bench/poses.py --data DIR --views 3,4,6,9 [--captures a,b] [--exif]
        [--variant NAME=PRESET[,k=v...]] --out FILE
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from recon import progress
from recon.config import load_config
from recon.io import images as image_io
from recon.io.llff import opencv_world_to_camera
from recon.pipeline import run_scene
from recon.scene.camera import intrinsics_matrix

sys.path.insert(0, str(Path(__file__).parent))
from captures import captures_under, corrected  # noqa: E402
from optimize import environment, parse_variant, record  # noqa: E402

Reference = tuple[list[Path], list[Path], list[tuple[np.ndarray, np.ndarray]]]
"""Photos, masks (or none) and (K [3, 3], world_to_camera [4, 4]) per photo."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--captures", default="", help="comma-separated capture folder names (default: all)")
    ap.add_argument("--views", default="3,4,6,9")
    ap.add_argument("--selections", default="spread,consecutive", help="for captures other than DTU scans")
    ap.add_argument("--variant", action="append", default=[], help="NAME=PRESET[,section.key=value...]")
    ap.add_argument("--exif", action="store_true", help="give every photo its reference focal length as EXIF")
    ap.add_argument("--refine", action="store_true",
                    help="also run the optimize stage with and without pose refinement")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    progress.set_enabled(False)
    warnings.simplefilter("ignore")
    variants = [parse_variant(v) for v in args.variant] or [("default", "default", {})]
    report = {"benchmark": "poses", "environment": {**environment(), "machine": platform.machine(),
                                                    "cpu_cores": os.cpu_count()},
              "variants": {name: {"preset": preset, "overrides": sets} for name, preset, sets in variants}, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for capture in captures_under(args.data, args.captures):
            scene = as_idr(capture, work / "scenes", args.exif)
            if scene is None:
                continue
            count = len(list((scene / "image").iterdir()))
            selections = ["dtu"] if capture.name.startswith("dtu") else args.selections.split(",")
            for selection in selections:
                for n in [int(v) for v in args.views.split(",")]:
                    views = view_settings(selection, n, count, work / "splits" / f"{capture.name}-{n}.json")
                    for name, preset, sets in variants:
                        base = {**sets, **views, "poses.mode": "estimate", "poses.allow_partial": True}
                        modes = ["off", "on"] if args.refine else [None]
                        for refine in modes:
                            settings = base if refine is None else {**base, "optimize.pose_refine": refine}
                            row = {"capture": capture.name, "selection": selection, "views": n, "variant": name,
                                   "exif": args.exif, "refine": refine}
                            row.update(measure(scene, load_config(preset, settings), work / "out",
                                               f"{capture.name}-{selection}-{n}-{name}",
                                               "poses" if refine is None else "optimize"))
                            record(report, row, summarise, args.out)
    for row in report.get("summary", []):
        print(json.dumps(row))
    return 0


def view_settings(selection: str, n: int, count: int, split_path: Path) -> dict:
    """The views settings that pick ``n`` training views by ``selection`` among ``count``."""
    if selection == "dtu":
        return {"views.count": n, "views.split": "dtu"}
    if selection == "spread":
        return {"views.count": n, "views.strategy": "farthest"}
    first = (count - n) // 2
    train = list(range(first, first + n))
    split_path.parent.mkdir(parents=True, exist_ok=True)
    split_path.write_text(json.dumps({"name": "consecutive", "train": train,
                                      "test": [i for i in range(count) if i not in train]}))
    return {"views.split": str(split_path)}


def as_idr(capture: Path, root: Path, exif: bool) -> Path | None:
    """The capture itself if recon reads it with its reference cameras as they are, else an IDR copy in ``root``.

    The copy links to the photos and masks, or with ``exif`` holds the photos rewritten with their focal length.
    """
    if is_idr(capture) and not exif:
        return capture
    reference = read_reference(capture, root / "corrected")
    if reference is None:
        return None
    images, masks, cameras = reference
    out = root / capture.name
    (out / "image").mkdir(parents=True)
    for f, (K, _) in zip(images, cameras):
        if exif:
            write_with_focal(f, K, out / "image" / f"{f.stem}.jpg")
        else:
            os.symlink(f.resolve(), out / "image" / f.name)
    if masks:
        (out / "mask").mkdir()
        for f in masks:
            os.symlink(f.resolve(), out / "mask" / f.name)
    np.savez(out / "cameras.npz", **{f"world_mat_{i}": np.vstack([K @ w2c[:3], [0, 0, 0, 1]])
                                     for i, (K, w2c) in enumerate(cameras)})
    return out


def is_idr(capture: Path) -> bool:
    return any((capture / f).is_file() for f in ("cameras.npz", "cameras_sphere.npz"))


def read_reference(capture: Path, scratch: Path) -> Reference | None:
    """Photos, masks and (K, world_to_camera) per photo of an IDR scan, an LLFF capture, a COLMAP model (a known
    defect corrected in a copy under ``scratch``, bench/captures.py) or a ``transforms.json``, or None for anything
    else."""
    if is_idr(capture):
        return read_imported(capture)
    if (capture / "poses_bounds.npy").is_file():
        return read_llff(capture)
    if (capture / "sparse" / "0").is_dir():
        return read_imported(corrected(capture, scratch))
    if (capture / "transforms.json").is_file():
        return read_imported(capture)
    return None


def write_with_focal(src: Path, K: np.ndarray, dst: Path) -> None:
    """``src`` as a JPEG at ``dst`` with EXIF FocalLengthIn35mmFilm from ``K`` (whole millimetres, by the diagonal)."""
    from PIL import Image

    with Image.open(src) as im:
        rgb = im.convert("RGB")
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = int(round(K[0, 0] * np.hypot(36, 24) / np.hypot(*rgb.size)))
    rgb.save(dst, exif=exif, quality=95)


def read_imported(capture: Path) -> Reference:
    """Photos, masks and (K, world_to_camera) per photo of an IDR scan, a COLMAP model or a ``transforms.json``, as
    recon imports it (in its normalised frame)."""
    from recon.io import import_scene

    graph = import_scene(capture)
    views = graph.views()
    cameras = [(graph.camera_of(v).K, graph.camera_of(v).world_to_camera) for v in views]  # in recon's normalised frame
    masks = [Path(v.mask) for v in views if v.mask]
    return [Path(v.image) for v in views], masks if len(masks) == len(views) else [], cameras


def read_llff(capture: Path) -> Reference:
    """Photos (the first ``images_N/``), masks (``masks_N/`` if any) and (K, world_to_camera) per photo."""
    image_dir = sorted(p for p in capture.glob("images_*") if p.is_dir())[0]
    images = image_io.list_images(image_dir)
    mask_dir = capture / image_dir.name.replace("images", "masks")
    masks = sorted(mask_dir.iterdir()) if mask_dir.is_dir() else []
    rows = np.load(capture / "poses_bounds.npy")[:, :15].reshape(-1, 3, 5)
    from PIL import Image

    cameras = []
    for m, image in zip(rows, images):
        _, full_width, focal = m[:, 4]
        with Image.open(image) as im:
            width, height = im.size
        f = focal * width / full_width
        cameras.append((intrinsics_matrix(f, f, width / 2, height / 2), opencv_world_to_camera(m[:, :4])))
    return images, masks, cameras


def measure(scene: Path, cfg, out_root: Path, name: str, until: str) -> dict:
    try:
        graph = run_scene(scene, cfg, out_root, name=name, until=until, force=True).graph
    except Exception as exc:  # nothing registered, or a refused geometry, is a result too
        return {"registered": 0, "error": f"{type(exc).__name__}: {exc}"}
    p = graph.nodes["metrics/poses"].values
    row = {"registered": p["registered"], "sfm_seconds": p["seconds"], "sfm_points": p["sfm_points"],
           "mapper": p["mapper"], "features": p["features"], "unregistered": p["unregistered"],
           "focal_guess": p.get("focal_guess")}
    given = graph.meta["poses_given"]["cameras"]
    focal_errors = [abs(graph.camera_of(v).K[0, 0] / graph.nodes[given[v.id]].K[0, 0] - 1.0)
                    for v in graph.views("train") if v.camera and v.camera.startswith("estimated/")]
    if focal_errors:
        row["focal_error_rel"] = float(np.mean(focal_errors))
    if "against_given" in p:
        row.update(pose_row(p["against_given"], "sfm"))
    if until == "optimize":
        o = graph.nodes["metrics/optimize"].values
        row.update(psnr=o.get("psnr"), psnr_masked=o.get("psnr_masked"), test_views=o.get("test_views"),
                   optimize_seconds=graph.stages["optimize"].seconds)
        if "unaligned" in o:  # held-out cameras fitted to their photos before scoring; the raw scores beside
            row.update(psnr_masked_unaligned=o["unaligned"].get("psnr_masked"),
                       psnr_unaligned=o["unaligned"].get("psnr"),
                       test_pose_change_deg=o["test_pose_align"]["rotation_change_deg"],
                       test_pose_change_rel=o["test_pose_align"]["translation_change"])
        after = o.get("poses", {}).get("against_given_after")
        if after:
            row.update(pose_row(after, "refined"))
    return row


def pose_row(errors: dict, prefix: str) -> dict:
    return {f"{prefix}_rotation_deg": errors["rotation_error_deg"]["mean"],
            f"{prefix}_rotation_median_deg": errors["rotation_error_deg"]["median"],
            f"{prefix}_rotation_max_deg": errors["rotation_error_deg"]["max"],
            f"{prefix}_translation_rel": errors["translation_error_relative"],
            f"{prefix}_auc": errors["auc"]}


def summarise(runs: list[dict]) -> list[dict]:
    """Per (variant, views, refine): registration over the captures, mean errors where the poses were scored."""
    rows = []
    for key in sorted({(r["variant"], r["views"], r["refine"] or "") for r in runs}):
        sel = [r for r in runs if (r["variant"], r["views"], r["refine"] or "") == key]
        scored = [r for r in sel if "sfm_rotation_deg" in r]
        row = {"variant": key[0], "views": key[1], "refine": key[2] or None, "runs": len(sel),
               "registration_rate": float(np.mean([r["registered"] / key[1] for r in sel])),
               "fully_registered": sum(r["registered"] == key[1] for r in sel), "scored": len(scored)}
        for prefix in ("sfm", "refined"):
            have = [r for r in scored if f"{prefix}_rotation_deg" in r]
            if have:
                rotations = [r[f"{prefix}_rotation_median_deg"] for r in have]
                row[f"{prefix}_rotation_median_deg"] = float(np.median(rotations))
                row[f"{prefix}_translation_rel"] = float(np.mean([r[f"{prefix}_translation_rel"] for r in have]))
                row[f"{prefix}_auc"] = {t: float(np.mean([r[f"{prefix}_auc"][t] for r in have]))
                                        for t in ("5", "10", "20")}
        seconds = [r["sfm_seconds"] for r in sel if "sfm_seconds" in r]
        if seconds:
            row["sfm_seconds"] = float(np.mean(seconds))
        for name in ("psnr_masked", "psnr_masked_unaligned", "test_pose_change_deg"):
            values = [r[name] for r in sel if r.get(name) is not None]
            if values:
                row[name] = float(np.mean(values))
        rows.append(row)
    return rows


if __name__ == "__main__":
    sys.exit(main())
