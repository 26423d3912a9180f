"""From photos to cameras: features and matches, one reconstruction, its checks, and why photos stayed out.

:func:`reconstruct` runs :func:`recon.sfm.matching.match`, then the chosen
mapper (:mod:`recon.sfm.fewview`, or COLMAP's incremental or global mapper),
then :func:`recon.sfm.model.refusal`. A photo left out of the model is named
with the reason: too few features, no verified matches, or matched but not
placed (with the few-view reconstruction's own reason when it has one).
A refused geometry registers nothing: the photos it had placed get the refusal's reason, the others keep
their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recon.sfm import mappers
from recon.sfm.fewview import FewViewOptions, FewViewReconstruction
from recon.sfm.matching import CameraPrior, Correspondences, FeatureOptions, Photo, match
from recon.sfm.model import Model, refusal

MIN_FEATURES = 50
MAPPERS = ("fewview", "incremental", "global")


@dataclass
class Result:
    """A reconstruction of ``photos`` (or None), why each photo outside it is outside, and what matching found.

    ``reasons`` maps a photo's index to one line; ``refused`` is set when a
    model was built but its geometry refused (:func:`recon.sfm.model.refusal`), and ``refused_placed`` holds the
    photos that model had placed.
    """

    model: Model | None
    reasons: dict[int, str]
    features: list[int]
    verified_pairs: int
    refused: str | None = None
    refused_placed: frozenset[int] = frozenset()


def reconstruct(photos: list[Photo], cameras: list[CameraPrior], features: FeatureOptions, mapper: str,
                work: Path) -> Result:
    """Cameras of ``photos`` (see :class:`recon.sfm.matching.Photo`) by ``mapper``, working in the empty folder
    ``work``."""
    import pycolmap

    if mapper not in MAPPERS:
        raise ValueError(f"unknown mapper {mapper!r}")
    pycolmap.logging.minloglevel = 3  # COLMAP says nothing; failures become the caller's one-line messages
    corr = match(photos, cameras, features, work / "match")
    own_reasons: dict[int, str] = {}
    if mapper == "fewview":
        few = FewViewReconstruction(corr, FewViewOptions(min_inliers=features.min_inliers))
        model = few.run()
        own_reasons = few.reasons
    elif mapper == "incremental":
        model = mappers.incremental(corr, features.min_inliers, work / "incremental")
    else:
        model = mappers.global_(corr, work / "global")
    counts = [len(k) for k in corr.keypoints]
    result = Result(model, {}, counts, len(corr.pairs))
    if model is not None:
        focal_known = all(cameras[photos[i].camera].from_exif for i in model.cameras)
        configurations = {key: pair.configuration for key, pair in corr.pairs.items()}
        result.refused = refusal(model, configurations, focal_known)
        if result.refused is not None:
            result.model, result.refused_placed = None, frozenset(model.cameras)
            result.reasons = {i: f"refused: {result.refused}" if i in model.cameras
                              else _reason(corr, i, counts[i], own_reasons.get(i)) for i in range(len(photos))}
            return result
    placed = set(model.cameras) if model is not None else set()
    result.reasons = {i: _reason(corr, i, counts[i], own_reasons.get(i)) for i in range(len(photos)) if i not in placed}
    return result


def _reason(corr: Correspondences, i: int, features: int, detail: str | None) -> str:
    if features < MIN_FEATURES:
        return f"{features} features: too little texture or too small"
    inliers = corr.best_inliers(i)
    if inliers == 0:
        return f"{features} features, no verified matches with the other views"
    line = f"matched the other views ({inliers} inliers at best) but could not be placed"
    return f"{line}: {detail}" if detail else line
