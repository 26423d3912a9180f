"""How much of real photos the optimize stage's dark-backdrop term (optimize.empty_dark) counts as backdrop.

A pixel counts where every pixel of the block around it (1/20 of the image wide, at least 5) has its brightest
channel below the level: a black backdrop, not the dark detail of an object. For each capture's photos, brought to
the given width as training brings them (a photo all black, a thinned copy's stand-in, left out), this records the
share of each photo that counts at each level, and the brightest channel's percentiles inside what counts at the
highest level (how dark the backdrop records). Runs on the CPU; prints the report and writes it.

    python bench/dark_regions.py --capture ../shared/realdata/dtu_scan65:400:22,25,28 \\
        --capture ../shared/realdata/ethiopian_head:500 --levels 0.05,0.06,0.08,0.1 \\
        --out bench/results/dark-regions-cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from optimize import environment  # noqa: E402

FOLDERS = ("image", "images_8", "images_4", "images")


def photos(capture: Path) -> list[Path]:
    """The photos of a capture in the first of its image folders that holds any (DTU's image/, LLFF's images_N/)."""
    for name in FOLDERS:
        found = sorted(p for p in (capture / name).glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if found:
            return found
    raise SystemExit(f"{capture}: no photos in any of {', '.join(FOLDERS)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", action="append", required=True,
                    help="FOLDER:WIDTH[:ID,ID...] (the ids' photos, by position, are listed one by one)")
    ap.add_argument("--levels", default="0.05,0.06,0.08,0.1")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--note", default="")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from recon.io import images as image_io
    from recon.optim import regularizers as reg

    levels = [float(x) for x in args.levels.split(",")]
    report = {"benchmark": "dark-regions", "environment": environment(), "note": args.note, "levels": levels,
              "captures": []}
    for spec in args.capture:
        folder, width, *ids = spec.split(":")
        files = photos(Path(folder))
        listed = [int(i) for i in ids[0].split(",")] if ids else []  # positions in the folder's sorted listing
        images, kept, placeholders = [], [], 0
        for position, f in enumerate(files):
            pixels = torch.from_numpy(image_io.read_image(f)[..., :3].astype(np.float32))
            if not bool(pixels.any()):  # a thinned copy's stand-in for a photo its protocol does not read
                placeholders += 1
                continue
            kept.append(position)
            height = round(pixels.shape[0] * int(width) / pixels.shape[1])
            images.append(F.interpolate(pixels.permute(2, 0, 1)[None], size=(height, int(width)), mode="area")[0])
        batch = torch.stack(images).permute(0, 2, 3, 1)
        window = reg.backdrop_window(int(width))
        row: dict = {"capture": Path(folder).name, "photos": len(images), "all_black_left_out": placeholders,
                     "width": int(width), "window": window,
                     "levels": {}}
        for level in levels:
            dark = reg.dark_regions(batch, level, window)
            share = dark.float().mean((1, 2))
            row["levels"][str(level)] = {"mean_share": round(float(share.mean()), 4),
                                         "max_share": round(float(share.max()), 4),
                                         "listed_shares": {i: round(float(share[kept.index(i)]), 3)
                                                           for i in listed if i in kept}}
        dark = reg.dark_regions(batch, max(levels), window)
        inside = batch.amax(-1)[dark]
        row["brightest_channel_percentiles_50_90_99"] = \
            [round(float(q), 3) for q in np.percentile(inside.numpy(), [50, 90, 99])] if len(inside) else None
        report["captures"].append(row)
        print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
