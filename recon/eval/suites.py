"""Evaluation suites: which scenes a benchmark has, where they are, and how each is run.

A :class:`Suite` lists one :class:`SceneTask` per scene of a benchmark with the
config overrides its protocol needs (../shared/DATASETS.md has the protocols):

* ``dtu``: the 15 test scans of the pixelNeRF/RegNeRF protocol, in the IDR
  layout (``ROOT/scanN/``) or DTU's own (``ROOT/Rectified/scanN/``), training on
  the first 3, 6 or 9 ids of ``data/splits/dtu.json`` and scoring its test ids
  over the object masks, with images down-sampled to 400x300. When DTU's
  ``Points/`` and ``ObsMask/`` are beside the scans, the mesh is scored too.
* ``spare``: the scenes of one SpaRe split file (track 1 = 3 views, track 2 =
  9), with a submission folder of 1600x1200 renders of the test views.
* ``llff``: every LLFF capture (``poses_bounds.npy``) under a folder, with the
  protocol of RegNeRF, FreeNeRF, FSGS, DNGaussian and CoR-GS: images 8x smaller
  than the photos, every 8th view held out, 3, 6 or 9 training views spread
  evenly over the rest (``data/splits/llff.json``), whole-image metrics.
* ``synthetic``: scenes made by ``recon data synth`` (with exact ground truth),
  N views spread over the cap, every other view held out.
* ``folder``: every scene recon can import under a folder.

A scene that cannot run (a missing scan, no masks where the protocol needs
them) keeps its task with the reason in ``problem``, so the evaluation can go
on with the others and say what failed and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recon.errors import InputError
from recon.io import detect_layout
from recon.io import images as image_io
from recon.resources import SPLITS_DIR

DTU_WIDTH = 400  # the protocol's images: 1600x1200 down-sampled 4x
SPARE_TRACKS = {3: 1, 9: 2}


@dataclass
class SceneTask:
    name: str
    path: Path | None
    overrides: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None


@dataclass
class Suite:
    name: str
    root: Path
    preset: str
    tasks: list[SceneTask]
    protocol: dict[str, Any]  # what makes two results comparable (views, track, split)
    anchors: str | None = None  # data/anchors/<name>.yaml
    submission: str | None = None  # "spare": write the challenge's submission folder

    @property
    def views(self) -> int | None:
        return self.protocol.get("views")


def _downscale_to(image: Path, width: int) -> int:
    """The integer factor that brings ``image`` closest to ``width`` pixels wide (at least 1)."""
    w, _ = image_io.probe_image(image)
    return max(1, round(w / width))


def _first_image(folder: Path, patterns: tuple[str, ...]) -> Path | None:
    for pattern in patterns:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    return None


def _check_root(root: Path, what: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"{root}: no such folder (the {what} root)")
    return root.resolve()


def dtu(root: Path, views: int, preset: str = "dtu") -> Suite:
    """The DTU sparse-view suite over the 15 test scans of ``data/splits/dtu.json``."""
    root = _check_root(root, "DTU")
    if views not in (3, 6, 9):
        raise InputError(f"--views {views}: the DTU protocol trains on 3, 6 or 9 views")
    split = json.loads((SPLITS_DIR / "dtu.json").read_text())
    if not any(root.glob("scan*")) and not (root / "Rectified").is_dir():
        raise InputError(f"{root}: not a DTU root (no scanN/ folders in the IDR layout, no Rectified/scanN/)")
    tasks = []
    for scan in split["scans"]:
        name = f"scan{scan}"
        idr, rect = root / name, root / "Rectified" / name
        overrides: dict[str, Any] = {"views.split": "dtu", "views.count": views}
        if idr.is_dir():
            path, masks = idr, idr / "mask"
            image = _first_image(idr, ("image/*.png", "images/*.png"))
        elif rect.is_dir():
            path, image = rect, _first_image(rect, ("rect_*_3_r5000.png", "rect_*.png"))
            masks = next((m for m in (root / "idrmasks" / name / "mask", root / "idrmasks" / name) if m.is_dir()),
                         root / "idrmasks" / name)
        else:
            tasks.append(SceneTask(name, None, problem=f"{name}: missing (looked for {idr} and {rect})"))
            continue
        if not masks.is_dir() or not any(masks.glob("*.png")):
            tasks.append(SceneTask(name, path, problem=f"{name}: no object masks in {masks}; "
                                                       "the DTU protocol scores novel views over them"))
            continue
        if image is None:
            tasks.append(SceneTask(name, path, problem=f"{name}: no images in {path}"))
            continue
        overrides["data.downscale"] = _downscale_to(image, DTU_WIDTH)
        tasks.append(SceneTask(name, path, overrides))
    return Suite("dtu", root, preset, tasks, {"suite": "dtu", "views": views, "split": "dtu"}, anchors="dtu")


def spare(root: Path, track: int, split: str = "development", preset: str = "spare") -> Suite:
    """The scenes of SpaRe's ``Track{1,2}_split_{split}.json`` (track 3 or 9 views)."""
    from recon.io.spare import load_split

    root = _check_root(root, "SpaRe")
    if track not in SPARE_TRACKS:
        raise InputError(f"--track {track}: SpaRe has a 3-view track and a 9-view track")
    stem = f"Track{SPARE_TRACKS[track]}_split_{split}"
    split_file = root / f"{stem}.json"
    if not split_file.is_file():
        found = sorted(p.name for p in root.glob("Track*_split_*.json"))
        raise InputError(f"{split_file}: no such split file (found: {', '.join(found) or 'none'}); "
                         "is this the SpaRe root?")
    entries = load_split(split_file)
    tasks = []
    for name in entries:
        folder = root / name
        if not folder.is_dir():
            tasks.append(SceneTask(name, None, problem=f"{name}: listed in {split_file.name} but {folder} is missing"))
            continue
        tasks.append(SceneTask(name, folder, {"data.spare_split": stem}))
    return Suite("spare", root, preset, tasks, {"suite": "spare", "track": track, "views": track, "split": stem},
                 anchors="spare", submission="spare")


def llff(root: Path, views: int, preset: str = "llff") -> Suite:
    """The LLFF captures under ``root`` (or ``root`` itself), each at its every-8th hold-out."""
    from recon.io import llff as llff_io

    root = _check_root(root, "LLFF")
    if views not in (3, 6, 9):
        raise InputError(f"--views {views}: the LLFF protocol trains on 3, 6 or 9 views")
    folders = [root] if llff_io.detect(root) else sorted(p for p in root.iterdir() if p.is_dir() and llff_io.detect(p))
    if not folders:
        raise InputError(f"{root}: no LLFF captures (folders with {llff_io.FILE_NAME} and images/ or images_N/)")
    tasks = [SceneTask(f.name, f, {"views.split": "llff", "views.count": views}) for f in folders]
    return Suite("llff", root, preset, tasks, {"suite": "llff", "views": views, "split": "llff"}, anchors="llff")


def synthetic(root: Path, views: int, preset: str = "default") -> Suite:
    """Scenes rendered by ``recon data synth`` under ``root`` (or ``root`` itself)."""
    root = _check_root(root, "synthetic")
    folders = sorted(p.parent.parent for p in root.rglob("gt/scene.json"))
    if not folders:
        raise InputError(f"{root}: no synthetic scenes (folders with gt/scene.json, made by `recon data synth`)")
    tasks = [SceneTask(f.name, f, {"views.count": views}) for f in folders]
    _unique_names(tasks, root)
    return Suite("synthetic", root, preset, tasks, {"suite": "synthetic", "views": views})


def folder(root: Path, views: int | None, preset: str = "default") -> Suite:
    """Every scene folder recon can import under ``root`` (or ``root`` itself when it is one)."""
    root = _check_root(root, "scenes")
    candidates = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    tasks = []
    for path in candidates:
        try:
            detect_layout(path)
        except InputError as exc:
            tasks.append(SceneTask(path.name, path, problem=str(exc)))
            continue
        tasks.append(SceneTask(path.name, path, {} if views is None else {"views.count": views}))
    if not any(t.problem is None for t in tasks):
        try:
            detect_layout(root)
        except InputError:
            raise InputError(f"{root}: no scene recon can import here or in its sub-folders") from None
        tasks = [SceneTask(root.name, root, {} if views is None else {"views.count": views})]
    return Suite("folder", root, preset, tasks, {"suite": "folder", "views": views})


def _unique_names(tasks: list[SceneTask], root: Path) -> None:
    seen: dict[str, int] = {}
    for t in tasks:
        seen[t.name] = seen.get(t.name, 0) + 1
    for t in tasks:
        if seen[t.name] > 1 and t.path is not None:
            t.name = "_".join(t.path.relative_to(root).parts)
