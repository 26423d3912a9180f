"""SpaRe (AIM 2024 Sparse Neural Rendering challenge) scenes.

Layout, from the challenge's documentation: a root holding the split files
(``Track1_split_development.json``, ``Track1_split_test.json``,
``Track2_split_*.json``; track 1 = 3 input views, track 2 = 9), the
calibration archives unpacked (``dtu_calibration/``, ``synth_calibration/``:
3x4 projection matrices ``pos_{i+1:03d}.txt`` as in RegNeRF's DTU loader), and
one folder per scene (``scan63``, ``Amplifier``). Each split file maps a scene
name to ``input_views``, ``test_views`` (0-based indices) and ``dataset``
(``DTU`` or synthetic). View ``i`` is camera ``i+1``: DTU images are
``rect_{i+1:03d}_{light}_r5000.png``, synthetic ones
``cam_{i+1:03d}_{light}_0000.png``; lighting 3 (all lights on) is evaluated.

Input views become training views; test views become held-out views, with
their image when the folder has it and without one (render only) otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from recon.errors import InputError
from recon.files import read_json_object
from recon.io.dtu import (
    camera_from_projection,
    focus_normalization,
    header_size,
    light_name,
    normalise,
    read_projection_txt,
    scan_number,
)
from recon.io.layout import ImportOptions, Layout, new_view
from recon.scene.graph import SceneGraph

SPLIT_PATTERN = re.compile(r"^Track(\d)_split_(\w+)\.json$")


def split_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("Track*_split_*.json") if SPLIT_PATTERN.match(p.name))


def load_split(path: Path) -> dict[str, Any]:
    data = read_json_object(path, "keyed by scene name")
    for scene, entry in data.items():
        if not isinstance(entry, dict) or not {"input_views", "test_views"} <= set(entry):
            raise InputError(f"{path}: scene {scene} needs input_views and test_views")
    return data


def is_dtu(entry: dict[str, Any], scene: str) -> bool:
    return str(entry.get("dataset", "")).lower() == "dtu" or scan_number(scene) is not None


def image_name(index: int, light: str, dtu: bool) -> str:
    return f"rect_{index + 1:03d}_{light}_r5000.png" if dtu else f"cam_{index + 1:03d}_{light}_0000.png"


def _candidates(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return [f for f in split_files(path.parent) if path.name in _keys(f)]


def _keys(path: Path) -> set[str]:
    try:
        data = read_json_object(path, "keyed by scene name")
    except InputError:  # not a split file recon can read: it lists nothing (load_split says why when it is chosen)
        return set()
    return set(data)


def choose_split(path: Path, options: ImportOptions) -> Path:
    candidates = _candidates(path)
    if options.spare_split is not None:
        chosen = [c for c in candidates if c.stem == options.spare_split]
        if not chosen:
            raise InputError(f"{path}: split {options.spare_split} does not list this scene "
                             f"(splits that do: {', '.join(c.stem for c in candidates) or 'none'})")
        return chosen[0]
    if len(candidates) == 1:
        return candidates[0]
    light = light_name(options.light)
    complete = []
    for c in candidates:
        entry = load_split(c)[path.name]
        dtu = is_dtu(entry, path.name)
        if all((path / image_name(int(i), light, dtu)).is_file() for i in entry["input_views"]):
            complete.append(c)
    if len(complete) == 1:
        return complete[0]
    raise InputError(f"{path}: several SpaRe splits list this scene ({', '.join(c.stem for c in candidates)}); "
                     f"choose one with --spare-split")


def find_calibration(path: Path, dtu: bool) -> Path:
    """Folder of ``pos_*.txt`` for this scene: a per-scene one if present, else the dataset's."""
    root = path.parent
    preferred = ["dtu_calibration", "DTU_calibration"] if dtu else ["synth_calibration", "SpaRe_calibration"]
    folders = [root / name for name in preferred if (root / name).is_dir()] + [root / "Calibration", path]
    for folder in folders:
        if not folder.is_dir():
            continue
        per_scene = [p.parent for p in folder.rglob("pos_001.txt") if path.name in p.parts]
        if per_scene:
            return per_scene[0]
        shared = sorted(p.parent for p in folder.rglob("pos_001.txt"))
        if shared:
            return shared[0]
    raise InputError(f"{path}: no SpaRe calibration; looked for pos_001.txt under "
                     f"{', '.join(str(root / n) for n in preferred)}, {root / 'Calibration'} and the scene folder")


def read(path: Path, options: ImportOptions) -> SceneGraph:
    split_path = choose_split(path, options)
    entry = load_split(split_path)[path.name]
    dtu = is_dtu(entry, path.name)
    light = light_name(options.light)
    calibration = find_calibration(path, dtu)
    graph = SceneGraph(name=path.name, source={"path": str(path), "files": [str(split_path)]})
    train = [int(i) for i in entry["input_views"]]
    test = [int(i) for i in entry["test_views"]]
    size: tuple[int, int] | None = None
    for index in train:
        image = path / image_name(index, light, dtu)
        if not image.is_file():
            raise InputError(f"{image}: input view {index} of {split_path.name} is missing")
        size = size or header_size(image)
    assert size is not None
    for index in sorted(set(train) | set(test)):
        pos = calibration / f"pos_{index + 1:03d}.txt"
        if not pos.is_file():
            raise InputError(f"{pos}: view {index} of {split_path.name} has no calibration")
        cam = graph.add(camera_from_projection(read_projection_txt(pos), str(pos), size[0], size[1],
                                               f"camera/{index:04d}"))
        graph.source["files"].append(str(pos))
        image = path / image_name(index, light, dtu)
        view = graph.add(new_view(index, image.stem, image if image.is_file() else None, cam.id))
        view.role = "train" if index in train else "test"
    normalise(graph, focus_normalization(graph.cameras()))
    m = SPLIT_PATTERN.match(split_path.name)
    assert m is not None
    graph.meta["spare"] = {
        "split": split_path.stem,
        "track": int(m.group(1)),
        "dataset": "DTU" if dtu else "SpaRe",
        "input_views": train,
        "test_views": test,
        "light": light,
        "image_pattern": image_name(0, "3", dtu).replace("001", "{index:03d}"),
    }
    graph.meta["split"] = {"name": split_path.stem, "train": train, "test": test}
    return graph


LAYOUT = Layout(
    name="spare",
    description="SpaRe challenge scene folder beside its Track*_split_*.json",
    detect=lambda p: bool(_candidates(p)),
    read=read,
)
