"""Views stage: choose the training views and hold out the rest for evaluation.

* A named split (``--split dtu``, files in ``data/splits/``) takes its training
  ids in order (the first ``--views`` of them) and its test ids; other views
  are unused. A split may instead give a rule, ``hold_every: k`` (LLFF's
  protocol): every k-th view in order is a test view, and the ``--views``
  training views are spread evenly over the rest.
* A scene that brings its own split (SpaRe) uses it the same way.
* Otherwise ``--views N`` picks N views spread over the scene: farthest-point
  sampling over camera centres when poses are known (starting from the camera
  nearest the centroid of all centres), else evenly spaced by name. The rest
  become test views.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recon.config import RunConfig
from recon.errors import InputError
from recon.files import read_json_object
from recon.resources import SPLITS_DIR
from recon.scene.camera import camera_center
from recon.scene.graph import Metrics, Provenance, SceneGraph, View
from recon.scene.names import metrics_id

NAME = "views"
CONFIG = "views"


def load_split(name: str) -> dict:
    path = Path(name) if name.endswith(".json") else SPLITS_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SPLITS_DIR.glob("*.json")))
        if name.endswith(".json"):
            what = "is a folder" if path.exists() else "not found"
            raise InputError(f"split file {path.resolve()} {what}; the bundled splits: {known}")
        raise InputError(f"unknown split {name!r}; splits: {known} (or a path to a .json file)")
    split = read_json_object(path, "with 'train' and 'test' id lists, or a 'hold_every' rule")
    if not ({"train", "test"} <= set(split) or isinstance(split.get("hold_every"), int)):
        raise InputError(f"{path}: a split needs 'train' and 'test' id lists, or a 'hold_every' rule")
    return split


def hold_out_split(indices: list[int], hold_every: int, count: int | None) -> tuple[list[int], list[int]]:
    """(train, test) ids of the views ``indices`` (in order): every ``hold_every``-th one tests, ``count`` of the
    rest train.

    The training views sit at ``round(linspace(0, len(rest) - 1, count))`` of the rest, the rounding of
    RegNeRF's and FSGS's loaders (half to even); all of the rest without ``count``.
    """
    test = indices[::hold_every]
    held = set(test)
    rest = [i for i in indices if i not in held]
    if count is None:
        return rest, test
    if count > len(rest):
        raise InputError(f"{len(rest)} views remain after holding out every {hold_every}th, fewer than --views {count}")
    return [rest[int(p)] for p in np.round(np.linspace(0, len(rest) - 1, count))], test


def validate(graph: SceneGraph, cfg: RunConfig, device: torch.device) -> None:
    """Raise before anything is written if the views cannot be chosen; otherwise give the views their roles,
    so that the later stages' checks see this run's training views (``run`` gives them the same again)."""
    assign(graph, cfg)


def run(graph: SceneGraph, cfg: RunConfig, device: torch.device) -> SceneGraph:
    train, test = assign(graph, cfg)
    graph.replace(Metrics(
        id=metrics_id(NAME),
        values={"train": [v.name for v in train], "test": [v.name for v in test],
                "train_indices": [v.index for v in train], "test_indices": [v.index for v in test]},
        provenance=Provenance(stage=NAME, made_from=[v.id for v in train]),
    ))
    return graph


def assign(graph: SceneGraph, cfg: RunConfig) -> tuple[list[View], list[View]]:
    views = graph.views()
    usable = [v for v in views if v.image is not None]
    count = cfg.views.count
    if count is not None and count < 1:
        raise InputError(f"--views must be at least 1, got {count}")
    split = load_split(cfg.views.split) if cfg.views.split else graph.meta.get("split")
    if split is not None and "hold_every" in split:
        train_ids, test_ids = hold_out_split([v.index for v in usable], int(split["hold_every"]), count)
    elif split is not None:
        train_ids, test_ids = _from_split(graph, split, count, cfg.views.split or split.get("name", "scene"))
    else:
        if count is not None and count > len(usable):
            raise InputError(f"{graph.source.get('path', graph.name)}: {len(usable)} usable images, "
                             f"fewer than --views {count}")
        chosen = _spread(graph, usable, count or len(usable), cfg.views.strategy)
        train_ids = [v.index for v in chosen]
        test_ids = [v.index for v in usable if v.index not in set(train_ids)]
    by_index = {v.index: v for v in views}
    train = [by_index[i] for i in train_ids]
    test = [by_index[i] for i in test_ids]
    for v in views:
        v.role = "unused"
    for v in train:
        v.role = "train"
    for v in test:
        v.role = "test"
    return train, test


def _from_split(graph: SceneGraph, split: dict, count: int | None, name: str) -> tuple[list[int], list[int]]:
    train_ids = [int(i) for i in split["train"]]
    if count is not None:
        if count > len(train_ids):
            raise InputError(f"split {name} has {len(train_ids)} training views, fewer than --views {count}")
        train_ids = train_ids[:count]
    test_ids = [int(i) for i in split["test"]]
    by_index = {v.index: v for v in graph.views()}
    for i in train_ids + test_ids:
        if i not in by_index:
            have = sorted(by_index)
            raise InputError(f"{graph.source.get('path', graph.name)}: split {name} needs view {i} but the scene has "
                             f"views {have[0]}..{have[-1]} ({len(have)} in all)")
    for i in train_ids:
        if by_index[i].image is None:
            raise InputError(f"{graph.source.get('path', graph.name)}: training view {i} of split {name} has no image")
    return train_ids, test_ids


def _spread(graph: SceneGraph, views: list[View], count: int, strategy: str) -> list[View]:
    posed = all(v.camera is not None for v in views)
    if strategy == "even" or not posed:
        positions = np.linspace(0, len(views) - 1, count) if count > 1 else np.array([(len(views) - 1) / 2])
        return [views[int(round(p))] for p in positions]
    centers = np.stack([camera_center(graph.camera_of(v).world_to_camera) for v in views])
    first = int(np.argmin(np.linalg.norm(centers - centers.mean(axis=0), axis=1)))
    chosen = [first]
    dist = np.linalg.norm(centers - centers[first], axis=1)
    while len(chosen) < count:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(centers - centers[nxt], axis=1))
    return [views[i] for i in chosen]
