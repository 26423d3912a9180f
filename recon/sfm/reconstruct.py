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

from dataclasses import dataclass, replace
from pathlib import Path

from recon.sfm import mappers
from recon.sfm.fewview import FewViewOptions, FewViewReconstruction
from recon.sfm.matching import CameraPrior, Correspondences, FeatureOptions, Photo, match
from recon.sfm.model import Model, refusal

MIN_FEATURES = 50
FOCAL_GUESSES = (0.8, 1.0, 0.6)
"""Focal lengths, in times the photo's long side, tried in turn for cameras without EXIF when the first guess
(COLMAP's 1.2) leaves photos out: from a few views bundle adjustment hardly corrects a focal length far from the
truth. A 26 to 32 mm equivalent lens, usual on phones, is 0.75 to 0.92 times the long side of a 4:3 photo; 1.0 and
0.6 cover longer and wider lenses."""
MAPPERS = ("fewview", "incremental", "global")


@dataclass
class Result:
    """A reconstruction of ``photos`` (or None), why each photo outside it is outside, and what matching found.

    ``reasons`` maps a photo's index to one line; ``refused`` is set when a
    model was built but its geometry refused (:func:`recon.sfm.model.refusal`), and ``refused_placed`` holds the
    photos that model had placed. ``focal_guess`` is the focal length, in long sides, that the cameras without EXIF
    started from when it was one of :data:`FOCAL_GUESSES` (None: their own priors).
    """

    model: Model | None
    reasons: dict[int, str]
    features: list[int]
    verified_pairs: int
    refused: str | None = None
    refused_placed: frozenset[int] = frozenset()
    focal_guess: float | None = None


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
    guess = None
    if mapper == "fewview":
        model, own_reasons, guess = _fewview(corr, FewViewOptions(min_inliers=features.min_inliers))
    elif mapper == "incremental":
        model = mappers.incremental(corr, features.min_inliers, work / "incremental")
    else:
        model = mappers.global_(corr, work / "global")
    counts = [len(k) for k in corr.keypoints]
    result = Result(model, {}, counts, len(corr.pairs), focal_guess=guess)
    if model is not None:
        result.refused = _refused(model, corr)
        if result.refused is not None:
            result.model, result.refused_placed = None, frozenset(model.cameras)
            result.reasons = {i: f"refused: {result.refused}" if i in model.cameras
                              else _reason(corr, i, counts[i], own_reasons.get(i)) for i in range(len(photos))}
            return result
    placed = set(model.cameras) if model is not None else set()
    result.reasons = {i: _reason(corr, i, counts[i], own_reasons.get(i)) for i in range(len(photos)) if i not in placed}
    return result


def _fewview(corr: Correspondences, options: FewViewOptions) -> tuple[Model | None, dict[int, str], float | None]:
    """The few-view reconstruction, why photos stayed out of it, and the focal length guess it started from (None:
    the cameras' own priors).

    When it leaves photos out (or builds no model) and a camera's focal length is not from EXIF, it is built again
    from each of :data:`FOCAL_GUESSES` in turn for those cameras, and the first model that places every photo and
    whose geometry is not refused is taken; if none does, the first model stands. Not tried when a photo left out
    has no verified match, which no focal length can place. Each guess costs one more reconstruction (the
    matches are kept). Keeping instead a model that places more photos but not all, or as many with a smaller
    reprojection error, was measured less accurate on two runs of three it changed
    (bench/results/poses-focal-guesses-cpu.json).
    """
    few = FewViewReconstruction(corr, options)
    model, reasons = few.run(), few.reasons
    left_out = set(range(len(corr.keypoints))) - set(model.cameras if model is not None else ())
    if not left_out or all(c.from_exif for c in corr.cameras) or any(corr.best_inliers(i) == 0 for i in left_out):
        return model, reasons, None
    for guess in FOCAL_GUESSES:
        again = FewViewReconstruction(replace(corr, cameras=[guessed(c, guess) for c in corr.cameras]), options)
        other = again.run()
        if other is not None and other.registered == len(corr.keypoints) and _refused(other, corr) is None:
            return other, again.reasons, guess
    return model, reasons, None


def guessed(camera: CameraPrior, guess: float | None) -> CameraPrior:
    """``camera`` with its focal length at ``guess`` times its long side, unless that came from EXIF or ``guess`` is
    None (its own prior)."""
    if camera.from_exif or guess is None:
        return camera
    return replace(camera, focal=guess * max(camera.width, camera.height))


def _refused(model: Model, corr: Correspondences) -> str | None:
    """Why ``model``'s geometry is refused (:func:`recon.sfm.model.refusal`), or None."""
    configurations = {key: pair.configuration for key, pair in corr.pairs.items()}
    focal_known = all(corr.cameras[corr.photo_cameras[i]].from_exif for i in model.cameras)
    return refusal(model, configurations, focal_known)


def _reason(corr: Correspondences, i: int, features: int, detail: str | None) -> str:
    if features < MIN_FEATURES:
        return f"{features} features: too little texture or too small"
    inliers = corr.best_inliers(i)
    if inliers == 0:
        return f"{features} features, no verified matches with the other views"
    line = f"matched the other views ({inliers} inliers at best) but could not be placed"
    return f"{line}: {detail}" if detail else line
