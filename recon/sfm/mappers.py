"""COLMAP's incremental and global mappers (pycolmap), with settings for few views.

Both read the database that :func:`recon.sfm.matching.match` wrote. The
incremental mapper's defaults are made for hundreds of photos; for a few:

* two-view tracks are triangulated (COLMAP ignores tracks seen by two photos
  only; from 3 to 9 photos taken far apart, they are most of the tracks, and
  without them the starting pair often has too few points to go on);
* a starting pair needs ``2 * min_inliers`` inliers and a 4 degree
  triangulation angle (COLMAP: 100 and 16), a photo is placed from
  ``min_inliers`` points (COLMAP: 30), models of 2 photos are kept (COLMAP: 10).

The global mapper (rotation averaging, then positions and points together)
keeps its defaults but for the model size. The model with the most photos wins.
"""

from __future__ import annotations

from pathlib import Path

from recon.sfm.matching import Correspondences
from recon.sfm.model import Model, from_reconstruction


def incremental(corr: Correspondences, min_inliers: int, work: Path) -> Model | None:
    """COLMAP's incremental mapper over ``corr``'s database; the largest model, or None."""
    import pycolmap

    options = pycolmap.IncrementalPipelineOptions()
    options.min_num_matches = min_inliers
    options.min_model_size = 2
    options.multiple_models = True
    options.random_seed = 0
    options.triangulation.ignore_two_view_tracks = False
    options.mapper.init_min_num_inliers = 2 * min_inliers
    options.mapper.abs_pose_min_num_inliers = min_inliers
    options.mapper.init_max_reg_trials = 4
    options.mapper.init_min_tri_angle = 4.0
    work.mkdir(parents=True, exist_ok=True)
    models = pycolmap.incremental_mapping(corr.database, corr.image_dir, work, options=options)
    return _largest(models, corr, "incremental")


def global_(corr: Correspondences, work: Path) -> Model | None:
    """COLMAP's global mapper over ``corr``'s database; the largest model, or None."""
    import pycolmap

    options = pycolmap.GlobalPipelineOptions()
    options.min_model_size = 2
    options.random_seed = 0
    work.mkdir(parents=True, exist_ok=True)
    models = pycolmap.global_mapping(corr.database, corr.image_dir, work, options=options)
    return _largest(models, corr, "global")


def _largest(models: dict, corr: Correspondences, method: str) -> Model | None:
    best = max(models.values(), key=lambda r: r.num_reg_images(), default=None)
    if best is None or best.num_reg_images() == 0:
        return None
    return from_reconstruction(best, {name: i for i, name in enumerate(corr.names)}, method)
