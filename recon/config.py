"""Run configuration: dataclasses with defaults, YAML presets in ``configs/``, overrides.

A run's config is resolved in three layers: the dataclass defaults below, a
preset (``configs/<name>.yaml``, or any YAML file), then overrides from the
command line (``--views 4`` or ``--set optimize.steps=500``; a layer that sets
``optimize.steps`` without ``optimize.steps_per_view`` fixes the run's length, see
:func:`load_config`). The resolved
config is written next to the run's outputs as ``config.yaml``. Each stage
reads its own section; a digest of that section (and the seed) decides whether
a finished stage can be reused when a run is repeated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from recon.errors import InputError, first_line
from recon.resources import CONFIGS_DIR


@dataclass
class DataConfig:
    """How the input scene is read."""

    downscale: int = 1
    """Integer down-sampling of the images (DTU's protocol uses 4: 1600x1200 -> 400x300)."""
    max_side: int = 1600
    """The long side the stages train at, at most (pixels; 0: no cap): when the largest photo's long side is above
    it, every photo is down-sampled by the smallest integer factor that brings that one within it (in place of
    data.downscale's factor when that leaves it larger), said once in a warning. 3DGS's training script brings photos
    wider than 1600 to 1600 wide; a 12-megapixel phone photo (4032x3024) trains at 1344x1008. At full size a
    3072x2048 capture took 3.2 times the optimize time and the GPU memory (2.0 times end to end) for the same
    held-out PSNR (bench/results/run-e2e-h200.json)."""
    light: int = 3
    """DTU/SpaRe lighting index 0-6 (3 = all lights on; 7 = DTU's 'max')."""
    strict: bool = False
    """Treat recoverable problems (frames without images, unregistered images) as errors."""
    masks: bool = True
    """Read object masks when the scene has them."""
    train_masks: bool = True
    """Let the masks shape the model (visual-hull init, mask loss, hull pruning, the mesh's hull cleaning). False
    keeps them for the masked metrics only: the published per-scene DTU methods train on whole images."""
    spare_split: str | None = None
    """SpaRe split file stem (e.g. Track1_split_development) when several list the scene."""


@dataclass
class ViewsConfig:
    """Which views train the model and which are held out."""

    count: int | None = None
    """Number of training views; None uses every view with an image."""
    split: str | None = None
    """Named split from data/splits/ (e.g. dtu); its training ids are taken in order."""
    strategy: Literal["farthest", "even"] = "farthest"
    """Without a split: farthest-point over camera centres, or evenly by name."""


@dataclass
class PosesConfig:
    """Camera poses: the given ones, or estimated from the training photos (structure from motion)."""

    mode: Literal["auto", "given", "estimate"] = "auto"
    """auto: estimate when a training view has no camera; estimate: even when cameras are given (to score them)."""
    allow_partial: bool = False
    """Go on with the registered views when some do not register (at least 2 must)."""
    max_image_size: int = 3200
    """Features come from the photos at their own size (whatever data.downscale), the long side capped at this many
    pixels."""
    max_features: int = 8192
    """SIFT features per image."""
    upsample: Literal["auto", "on", "off"] = "auto"
    """SIFT from the photo up-sampled 2x (first octave -1) with a lower peak threshold (0.004), for more features:
    auto = when the long side (after max_image_size) is at most upsample_below pixels."""
    upsample_below: int = 1000
    """The long side, in pixels, up to which upsample=auto up-samples (larger photos have features enough, and
    up-sampling them costs 4x the time)."""
    use_masks: bool = True
    """Features only on the object (the mask dilated by 2%) where the training views have masks: on a turntable the
    background stands still and would match as a camera that did not move."""
    min_inliers: int = 15
    """Fewest verified matches for an image pair or a registration."""
    mapper: Literal["auto", "fewview", "incremental", "global"] = "auto"
    """fewview: recon's few-view reconstruction (recon/sfm/fewview.py); incremental or global: COLMAP's mappers with
    few-view settings; auto: fewview up to fewview_max_views training views, incremental beyond."""
    fewview_max_views: int = 20
    """With mapper=auto, the most training views the few-view reconstruction takes."""
    wide_baseline: bool = False
    """Affine-covariant SIFT with domain-size pooling: COLMAP's features for views far apart (slower)."""
    guided_matching: bool = False
    """Match again under each pair's verified two-view geometry."""
    check_given: bool = True
    """With given cameras, match features between the training photos (1024 pixels at most on the long side) and
    warn, naming them, about the training views whose cameras explain under a quarter of their 30 or more verified
    matches (within 0.4% of the long side of the cameras' epipolar geometry, and in front of both cameras): a rotation
    transposed, camera-to-world read as world-to-camera, OpenGL axes read as OpenCV's. The counts are in
    metrics/poses (given_fit); skipped without pycolmap. Costs SIFT on the training photos (0.6 to 6.8 s on 2 cores
    for the real captures)."""
    given_points: bool = False
    """With given cameras and a scene without SfM points: the verified matches between the training photos that the
    cameras explain (as ``check_given`` counts them, which this runs), triangulated with the given cameras into
    ``points/sfm``, coloured from the photos (as COLMAP's point triangulator with known poses: matches joined into
    tracks where they share a keypoint, one point per track over all its photos): what ``init.source sfm`` starts
    from, and 3DGS's usual initialisation. On in the default preset, where they seed the splats when stereo is set
    aside (``init.mvs_min_coverage``); off in object, whose next source is the masks' visual hull."""


@dataclass
class InitConfig:
    """Where the optimiser's first Gaussians come from, and the multi-view-stereo depth that supervises optimize."""

    source: Literal["auto", "mvs", "sfm", "hull", "random"] = "auto"
    """auto: multi-view stereo when two or more training views look at the scene, else SfM points if the scene has
    them, else a visual hull when every training view has a mask, else random. A source that finds too little
    falls back to the next one, and says why."""
    points: int = 20_000
    """Number of points for the hull and random initialisations."""
    hull_resolution: int = 96
    """Voxels per axis of the carving grid."""
    mvs_plane_step: float = 1.0
    """Depth hypotheses per view are evenly spaced in inverse depth, this many pixels apart in the source that sees
    them move most (recon/geometry/mvs.py)."""
    mvs_max_planes: int = 512
    """At most this many depth hypotheses per view."""
    mvs_window: int = 7
    """Side of the patch, in pixels, whose normalised cross-correlation scores a depth."""
    mvs_sources: int = 4
    """Other views each view is matched against (those with the nearest viewing directions)."""
    mvs_best_sources: int = 0
    """A depth's score is the mean NCC of this many of its best-scoring sources (0: half of them, rounded up). 1 keeps
    depths that only one other view sees: at 4 views it gained on views far apart (the museum head +0.9 dB masked,
    castle-P30 +0.3) and lost on forward-facing fern (-0.3), an H3DS head (-0.5, one run) and at 6 views on the DTU
    scan (-1.9; real-ablation-8)."""
    mvs_scales: int = 1
    """Image scales stereo sweeps, each half the size of the last: a pixel that scores below ``mvs_min_score`` at its
    own scale takes the depth of a coarser scale that scores enough (a wider patch, for faint texture)."""
    mvs_min_score: float = 0.5
    """Lowest NCC score a depth may have (the cross-view check then vets it). It was 0.7: 0.5 keeps more of the fine
    stone and brick grain of DTU scans 24 and 37, which scores 0.5 to 0.8, and gained there at 3 views (+1.3 / +1.4 dB
    masked; scan 65 +0.1, the LLFF captures -0.05 to -0.08, the museum head +0.05); 0.6 gained a little less on DTU and
    left the LLFF captures level, 0.4 scored as 0.5 (bench/results/real-ablation-16-h200.json)."""
    mvs_min_consistent: int = 1
    """Other views whose own depth must agree with a pixel's (within ``mvs_max_reprojection`` pixels and
    ``mvs_max_depth_ratio`` of its depth)."""
    mvs_max_reprojection: float = 1.0
    """Pixels a point may land from where it started, carried into another view and back through that view's
    depth, for the two views to agree."""
    mvs_max_depth_ratio: float = 0.01
    """Share of its depth by which a pixel's depth and the one another view carries back to it may differ, for the
    two views to agree (docs/results.md, the sixteenth round, has what looser tolerances keep on a DTU scan; 2 pixels
    and 2% lost 0.1 to 1.9 dB on three DTU scans at 3 views in the seventeenth)."""
    mvs_max_side: int = 800
    """Views are matched at most this many pixels on their long side (down-sampled by an integer factor)."""
    mvs_cpu_max_side: int = 128
    """The same without CUDA (a smoke test, like optimize.cpu_max_width)."""
    mvs_points: int = 150_000
    """At most this many fused points seed the splats (a random subset of them)."""
    mvs_min_points: int = 1000
    """Fewer fused points than this and the next source is used instead."""
    mvs_min_coverage: float = 0.0
    """Stereo that keeps a depth for less than this share of the pixels it could have (those with texture, as stereo
    judges it: a featureless backdrop or wall does not count; inside the masks where they shape the model; the mean
    over the training views, ``mvs.coverage`` in metrics/init) is set aside, its points and its depths: the next
    source seeds the splats. 0: off (the default preset: 0.14; object: off). At 3 / 4 views the default's stereo
    keeps depths for 2.7 / 11.6% and 3.7 / 10.1% of the textured pixels of the H3DS heads, 4.4 / 8.0% of castle-P30's,
    18.8 / 16.5% of the museum head's, 29 to 36% of the DTU scans' (3 views) and 50 to 61% of the LLFF captures'
    (bench/results/stereo-texture-cpu.json). Of its points on the object, the share inside every held-out view's mask
    is 43 and 51% on the heads, 56% on the museum head and 95% on DTU scan 65 (stereo-coverage-cpu.json): where
    stereo covers little, what it keeps is often wrong. Setting it aside on the heads and castle-P30 at 3 and 4 views,
    with ``poses.given_points`` (real-ablation-19-h200.json, docs/results.md, round nineteen): castle-P30 +2.5 / +2.3
    dB (from SfM points), the heads +0.5 to +0.9 (from random points); with masks in training the heads lost 4.3 and
    1.9 (from the masks' hull)."""
    mvs_random: float = 0.0
    """Random points in the common view volume added to the MVS points, as a share of their number (for what no
    two views see)."""
    mvs_fill: float = 0.0
    """Points where stereo kept no depth, as a share of the stereo points: pixels drawn from each view's holes (inside
    its mask where masks shape the model), at depths interpolated in inverse depth from the depths around them that
    stereo kept, less those another view's kept depth shows to be empty space. 0: none. At 3 views
    (real-ablation-11-h200.json) 0.2 / 0.5 / 1.0 lowered the mean, every capture at 0.5 and 1.0: the DTU scan -1.0 /
    -1.8 / -2.3 dB masked, fern -0.1 / -0.2 / -0.5, horns 0.0 / -0.2 / -0.5, flower 0.0 / -0.2 / -0.2. With the
    masks in training (object, real-ablation-22-h200.json) 0.3 / 1.0 lost too: DTU scans 24 and 65 -0.4 to -0.9, the
    H3DS heads -0.2 to -0.6."""
    mvs_min_confirmed: float = 0.0
    """Share of the scene's SfM points (those the training views see, at least 20) that stereo must confirm, a view
    that sees one having kept a depth within 5% of its own; below it stereo is set aside, its points and depths,
    and the SfM points seed the splats. 0: stereo is used whatever it confirms."""
    mvs_sfm: bool = False
    """Add the scene's SfM points to the MVS points (those of an estimate, a COLMAP model, or poses.given_points):
    matched features reach surfaces that stereo's patches keep too little of."""
    sfm_min_points: int = 20
    """Fewer SfM points than this and the next source is used instead: a handful of points places a handful of
    splats. The given cameras' matches on an H3DS head at 6 views triangulate into 4 points, from which the default
    lost 1.7 dB masked against random points; castle-P30's 36 at 3 views gained 2.8 against random points
    (real-ablation-20-h200.json, real-ablation-19-h200.json). metrics/init records a count set aside
    (``sfm_rejected``)."""


@dataclass
class OptimizeConfig:
    """Gaussian splatting optimisation (gsplat on CUDA, the reference rasterizer elsewhere)."""

    kind: Literal["3dgs", "2dgs"] = "3dgs"
    """3D Gaussians (3DGS), or flat 2D discs with ray-splat intersection (2DGS, for surfaces)."""
    steps: int = 3000
    """Optimisation steps on CUDA (the schedule below is set for this many; see :meth:`scaled_to`); with
    ``steps_per_view``, the fewest."""
    steps_per_view: int = 0
    """When above 0, a run of V training views trains max(``steps``, min(``steps_per_view`` x V, ``max_steps``))
    steps, the schedule scaled to them (:meth:`for_views`), so that each view is trained on about as often whatever
    the count; 0: ``steps`` at any count. A preset or command line that sets ``steps`` without this sets it to 0: the
    run is then exactly ``steps`` long."""
    max_steps: int = 0
    """The most steps ``steps_per_view`` lengthens a run to (0: no limit), for captures of many views."""
    strategy: Literal["default", "mcmc"] = "default"
    """gsplat densification strategy: DefaultStrategy (3DGS paper) or MCMCStrategy (needs CUDA)."""
    sh_degree: int = 3
    """Highest spherical-harmonics degree of the splats' colour (0: one colour, view-independent)."""
    sh_degree_interval: int = 1000
    """Steps between raising the active spherical-harmonics degree by one."""
    use_masks: bool = True
    """Train on the masked object (target composited on the background) when the training views have masks."""
    background: Literal["auto", "random", "random_unless_black", "black", "white"] = "auto"
    """auto: random behind masked targets when masks exist, else black. Random behind whole photos moved real captures
    with textured backgrounds by -0.06 to +0.62 dB (real-ablation-11-h200.json) and lost 11.5 dB masked on the bundled
    example at 6 views, whose backdrop is featureless black (background-example-h200.json): splats that cover such a
    backdrop in one view can sit anywhere along its rays, in front of the object in another. random_unless_black: a
    random colour behind the photo's pixels that are not black and black behind those that are (the brightest channel
    below 0.02, random above 0.08, blended between), so that every lit pixel must be covered by splats while a black
    backdrop may stay empty; the other cameras of a step (binocular, pseudo) render on black. With masks, random."""
    coarse_to_fine: float = 0.0
    """Standard deviation, in pixels of the training size, of a Gaussian blur of the render and the photo in the
    photometric term at step 0, shrinking linearly to none at half the run: the splats fit the photos' coarse
    structure before their detail; 0: off."""
    ssim_weight: float = 0.2
    """Share of (1 - SSIM) in the photometric loss; the rest is L1."""
    lr_means: float = 1.6e-4
    """Times the scene radius; decays exponentially to 1% over the run."""
    lr_scales: float = 5e-3
    """Adam learning rate of the log-scales."""
    lr_quats: float = 1e-3
    """Adam learning rate of the rotations (quaternions)."""
    lr_opacities: float = 5e-2
    """Adam learning rate of the opacity logits."""
    lr_sh0: float = 2.5e-3
    """Adam learning rate of the base colour (degree-0 coefficients)."""
    lr_shN: float = 2.5e-3 / 20
    """Adam learning rate of the higher spherical-harmonics coefficients."""
    init_opacity: float = 0.1
    """Opacity of every initial splat."""
    init_scale: float = 1.0
    """Times the mean distance to the three nearest initial points."""
    refine_start: int = 500
    """Step from which gsplat's strategy densifies (clones, splits) and prunes."""
    refine_stop: int = 15_000
    """Step after which the strategy stops densifying (beyond ``steps``: never)."""
    refine_every: int = 100
    """Steps between densification rounds."""
    grow_grad2d: float = 2e-4
    """Mean screen-space position gradient above which a splat is cloned or split (DefaultStrategy)."""
    prune_opacity: float = 0.005
    """Opacity below which a splat is pruned."""
    absgrad: bool = False
    """Densify by the absolute screen-space gradient (AbsGS); raise grow_grad2d with it (gsplat suggests 0.0008)."""
    mcmc_cap: int = 200_000
    """Most splats MCMCStrategy grows to."""
    antialiased: bool = False
    """gsplat's antialiased rasterization (Mip-Splatting's 2D filter with opacity compensation)."""
    # Sparse-view regularisers; each is off at 0 / false.
    mask_weight: float = 0.0
    """Alpha supervised by the object mask (when the training views have masks)."""
    opacity_reg: float = 0.0
    """Weight of the mean opacity (fewer, more decisive splats)."""
    scale_reg: float = 0.0
    """Weight of the mean splat scale, in scene radii (against large splats)."""
    hull_prune: bool = False
    """Prune Gaussians that project outside a training view's mask (free space by the visual hull)."""
    min_views: int = 0
    """Prune Gaussians seen (at least half a pixel of blending weight) by fewer training views; 0 is off."""
    free_space: float = 0.0
    """Prune, every ``prune_every`` steps while densification runs, the splats whose centre lies in front of a
    training view's multi-view-stereo depth (init's ``depth/mvs``; the smallest in the ``free_space_window`` block
    around the centre's pixel) by more than this share of it: the stereo depth says that ray is empty up to the
    surface, so a splat there is a floater; 0: off. Needs stereo depth (none: nothing pruned); judged by the given
    cameras, before any refinement. 0.05 gained 0.2 to 0.6 dB on two DTU scans and horns at 3 views, the others level
    (bench/results/real-ablation-17-h200.json)."""
    free_space_window: int = 5
    """Side, in pixels of the training images (the stereo depth is brought to their size), of the block around a
    splat's pixel whose smallest stereo depth judges it (free_space; an even side is taken as the next odd one). A
    splat with no stereo depth in its block is not judged; a wider block reaches over stereo's holes and judges the
    splats there by the nearest surface around them. 33 lowered the mean of eight captures at 4 views (512 pixels
    wide) by 0.57 dB, seven of the eight lower (fountain-P11 by 2.4; bench/results/real-ablation-24-h200.json)."""
    prune_every: int = 500
    """Steps between the hull, min-views, free-space and co-prunings (while densification runs)."""
    empty_dark: float = 0.0
    """Weight of the rendered opacity over the photo's dark regions (every pixel of a block 1/20 of the image wide,
    at least 5 pixels, with its brightest channel below ``dark_level``): a black backdrop is left empty, which the
    black background renders as it is, instead of covered by splats that may sit anywhere along its rays, in front of
    the object in another view. Only when training on black (``background`` black, or auto without masks); 0: off.
    0.1 at level 0.06 gained 0.2 and 0.9 dB masked on two DTU scans at 3 views (real-ablation-17-h200.json)."""
    dark_level: float = 0.06
    """Brightest channel below which a photo's pixel counts as dark for ``empty_dark`` (DTU's black backdrop records
    0.02 to 0.04 in the median, 99% of it below 0.05 to 0.08: bench/results/dark-regions-cpu.json; at 0.1 a museum
    object's dark bronze counted too and lost 0.3 dB)."""
    depth_smooth: float = 0.0
    """Weight of the edge-aware total variation of the training view's rendered depth (3DGS): the mean difference,
    in scene radii, between neighbouring pixels' depths where the render is opaque, each weighted by exp(-10 x their
    colour difference in the photo), so that depth may jump at the photo's edges and stays smooth elsewhere; from
    ``regularize_from`` on. A term between neighbouring pixels: its weight was measured on real captures trained 400 to
    512 pixels wide (bench/results/real-ablation-7-h200.json); much larger images feel it less."""
    distortion: float = 0.0
    """2DGS depth distortion."""
    normal_consistency: float = 0.0
    """2DGS: rendered normals agree with the normals of the rendered depth."""
    pseudo_views: float = 0.0
    """Weight of pseudo-view consistency: a jittered camera's render against the training image warped into it."""
    pseudo_jitter: float = 0.08
    """Jitter of pseudo views (``pseudo_views``, ``co_reg``), as a rotation about the scene centre in radians."""
    depth_weight: float = 0.0
    """Weight of the rendered depth's agreement with the multi-view-stereo depth (init's ``depth/mvs``), per pixel
    weighted by its confidence: the mean relative error |rendered / stereo - 1|; pixels without stereo depth are
    free."""
    anisotropy: float = 0.0
    """Weight of the penalty on splats longer than ``max_anisotropy`` times their width (log of the excess ratio)."""
    max_anisotropy: float = 10.0
    """Largest ratio of a splat's longest to shortest axis that goes unpenalised (2DGS: of its two axes)."""
    opacity_entropy: float = 0.0
    """Weight of the mean binary entropy of the opacities: pushes each splat to opaque or gone (against floaters)."""
    opacity_decay: float = 0.0
    """Share of every splat's opacity taken away after each step from ``regularize_from`` until densification stops
    (Binocular3DGS's opacity decay): splats the photos do not hold up fade below the pruning threshold. A rate per
    step, kept as it is by :meth:`scaled_to`, so shorter schedules decay less in all. Measured with the default
    densification on 3DGS (bench/results/real-ablation-3-h200.json), not with MCMC or 2DGS."""
    co_prune: float = 0.0
    """CoR-GS's co-pruning: train a second set of splats beside the first (its own seed, the same views) and, every
    ``prune_every`` steps while densification runs, remove from each set the splats with no splat of the other in the
    grid cells of this side (in scene radii) around them; 0: off. Doubles the optimize stage's time and memory.
    With ``co_reg`` 1.0 at 0.02, 3 views of four real captures: -0.75 dB on the mean, -2.8 on the DTU scan
    (bench/results/real-ablation-4-h200.json)."""
    co_reg: float = 0.0
    """CoR-GS's pseudo-view co-regularisation: weight of the disagreement (L1 and D-SSIM, as the photometric term)
    between the two sets' renders of a pseudo camera (the training camera turned about the scene centre by up to
    ``pseudo_jitter``); each set is pulled towards the other's render. Trains the second set as ``co_prune`` does,
    with or without the pruning (twice the time and memory, and one more render per step); with ``dropout`` the
    pseudo camera's own render drops splats too, the partner's does not; 0: off. At 1.0 (CoR-GS's weight), 3 views
    of four real captures: -0.71 to +0.32 dB, the mean level with the default, at 2.2 times the time
    (bench/results/real-ablation-4-h200.json)."""
    dropout: float = 0.0
    """Share of splats left out of each training render, the others' opacity scaled by 1 / (1 - share)
    (DropGaussian): no splat can lean on the ones in front of it. 0.2: +0.1 to +0.6 dB on every real capture measured
    at 3 and 4 views (bench/results/real-ablation-12-h200.json). The default preset's 0.3 with 500 steps per view
    (1500 at 3 views) against 0.2 with 333: -0.33 to +0.88 dB on nine captures, +0.12 on the 3-view mean; 0.3 at
    1000 steps was level with 0.2 (-0.03), so the fast preset keeps 0.2 (real-ablation-13-h200.json)."""
    binocular: float = 0.0
    """Weight of binocular consistency (Binocular3DGS): a camera shifted sideways from the training camera is
    rendered, warped back into the training view through its rendered depth, and compared with the photo."""
    binocular_shift: float = 0.1
    """Largest sideways shift of the binocular camera, times its distance to the scene's centre (a random share of
    it, to either side, each step)."""
    cross_view: float = 0.0
    """Weight of cross-view consistency: another training photo, carried into the training view through its rendered
    depth, against its photo (L1 where the render is opaque and the point is not hidden in the other view by the
    depth last rendered there). The other view is drawn each step in proportion to the initial splats both see."""
    regularize_from: int = 500
    """Step from which the geometric regularisers (depth smoothness, distortion, normals, pseudo views, binocular,
    cross-view, co-regularisation) and opacity decay apply."""
    pose_refine: Literal["auto", "on", "off"] = "off"
    """Refine the training cameras jointly with the splats (SE(3) per view, the first view fixed); auto: when the
    poses were estimated."""
    pose_lr: float = 1e-3
    """Learning rate of the pose corrections (radians; scene radii for translation), decayed 100x over training."""
    focal_refine: bool = False
    """Also refine one focal-length scale shared by the training views."""
    test_pose_align: Literal["auto", "on", "off"] = "auto"
    """Before scoring a held-out view, fit its camera to its photo with the splats frozen (the protocol of
    pose-free methods such as InstantSplat); auto: when the training poses were estimated. Metrics without
    it are kept beside."""
    fill_unseen: bool = False
    """Held-out renders: where a pixel's point lies outside every training view's field of view (recon/render/fill.py),
    its empty part shows the render around it, extended (pull-push), instead of the background: splats exist only
    where the training photos put them, and the world goes on past their edges. Metrics without it are kept beside
    (``unfilled``); each view records its share of such pixels (``unseen``) either way."""
    test_pose_steps: int = 200
    """Adam steps of each held-out view's alignment (at most cpu_align_steps on the CPU)."""
    test_pose_lr: float = 2e-3
    """Learning rate of each held-out view's alignment (radians; scene radii for translation)."""
    cpu_align_steps: int = 20
    """At most this many alignment steps per held-out view on the CPU."""
    checkpoint_every: int = 500
    """Steps between checkpoints of the last good state (kept in assets/optimize/checkpoint.pt until the stage ends)."""
    cpu_steps: int = 300
    """Steps when running on the CPU reference rasterizer (a smoke test, not a reconstruction)."""
    cpu_max_width: int = 100
    """Image width the CPU reference rasterizer trains and renders at."""
    cpu_points: int = 4000
    """At most this many initial splats on the CPU (a random subset of the init points)."""

    def for_views(self, views: int) -> OptimizeConfig:
        """These settings for a run of ``views`` training views: with ``steps_per_view`` above 0,
        max(``steps``, min(``steps_per_view`` x ``views``, ``max_steps``)) steps, the schedule scaled to them."""
        if self.steps_per_view <= 0:
            return self
        grown = self.steps_per_view * views
        if self.max_steps > 0:
            grown = min(grown, self.max_steps)
        return self.scaled_to(max(self.steps, grown))

    def scaled_to(self, steps: int) -> OptimizeConfig:
        """These settings for a run of ``steps``: the schedule (when densification starts and stops, when the
        regularisers start, the steps between SH degrees) scaled by ``steps / self.steps``, as gsplat's trainer
        scales its own (``adjust_steps``); the intervals of densification, pruning and checkpoints are kept."""
        if steps == self.steps:
            return self
        s = steps / self.steps

        def scale(n: int) -> int:
            return max(1, int(round(n * s)))

        return dataclasses.replace(self, steps=steps, refine_start=scale(self.refine_start),
                                   refine_stop=scale(self.refine_stop), regularize_from=scale(self.regularize_from),
                                   sh_degree_interval=scale(self.sh_degree_interval))


@dataclass
class PriorConfig:
    """Diffusion-prior refinement: renders of unseen views repaired by a generative model, distilled back."""

    enabled: bool = False
    """Run the prior stage after optimize (its splats then serve the mesh, the viewer and the metrics)."""
    checkpoint: str | None = None
    """A local diffusers image-to-image pipeline folder to repair with, instead of training a model on the scene."""
    validate: bool = True
    """Check the prior before applying it (3+ training views): hold out the training view that the pseudo cameras of
    the others pass nearest, distil into its leave-one-out splats with a repair model that has not seen it, and keep
    the optimize stage's splats unless its masked PSNR gains at least ``validate_margin`` dB."""
    validate_margin: float = 0.0
    """Least gain, in dB of the held-out view's (masked) PSNR, for the check to let the prior apply."""
    # Training pairs (degraded render, real image).
    loo_views: int = 3
    """Leave-one-out runs: at most this many training views are held out in turn (spread over the views)."""
    loo_steps: int = 500
    """Optimisation steps of each leave-one-out run (the optimize section's settings, scaled to this length)."""
    loo_snapshots: int = 3
    """Renders of the held-out view taken at this many evenly spaced points of its run (earlier: more degraded)."""
    perturb_samples: int = 4
    """Noisy copies of the optimised splats, each rendered from every training view."""
    perturb_scale: float = 1.0
    """Noise level of the perturbed copies (1: positions by up to 2% of the scene radius, log-scales 0.3, opacity
    logits 0.5)."""
    # The per-scene repair model.
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    """UNet2DModel block widths (multiples of 8); one down-sampling between consecutive blocks."""
    layers_per_block: int = 1
    """ResNet layers in each UNet block."""
    crop: int = 128
    """Training crops, in pixels (centred on the object)."""
    batch: int = 48
    """Crops per training step of the repair model."""
    train_steps: int = 600
    """Training steps of the repair model (on CUDA; at most cpu_model_steps on the CPU)."""
    lr: float = 5e-4
    """AdamW learning rate of the repair model (warm-up, then cosine decay)."""
    timesteps: int = 1000
    """Diffusion timesteps of the training schedule (cosine)."""
    sample_steps: int = 10
    """DDIM steps when repairing."""
    strength: float = 0.4
    """Where sampling starts: 1 from pure noise, below 1 from the render noised that far down the schedule."""
    # Distillation.
    pseudo_views: int = 24
    """Cameras on the path through the training cameras whose repaired renders supervise the splats."""
    elevation: float = 10.0
    """Pseudo cameras are raised and lowered in turn by up to this many degrees."""
    distill_steps: int = 800
    """Optimisation steps of the distillation (training views plus repaired pseudo views)."""
    distill_rounds: int = 2
    """The pseudo views are rendered and repaired again at the start of each round."""
    distill_weight: float = 0.2
    """Weight of a pseudo view's loss next to a training view's, before the fall-off with distance."""
    falloff: float = 0.3
    """A pseudo view's weight is multiplied by exp(-distance / falloff), distance in radians to the nearest training
    camera."""
    distill_ssim: float = 0.5
    """Share of (1 - SSIM) in the pseudo views' loss (the rest is L1)."""
    distill_lr_means: float = 0.1
    """Learning rate of the splat positions while distilling, times optimize.lr_means (decayed 100x)."""
    # A pretrained pipeline (with checkpoint).
    checkpoint_strength: float = 0.3
    """How far the pretrained pipeline may move a render, in (0, 1] (its img2img strength)."""
    checkpoint_steps: int = 20
    """Denoising steps of the pretrained pipeline (it runs about steps x strength of them)."""
    guidance: float = 1.0
    """Classifier-free guidance scale of the pretrained pipeline, where it takes one."""
    prompt: str = ""
    """Text prompt of the pretrained pipeline, where it takes one."""
    cpu_model_steps: int = 100
    """At most this many repair-model steps on the CPU (a smoke test, like optimize.cpu_steps)."""


@dataclass
class MeshConfig:
    """Mesh from the optimised splats: depth fusion, marching cubes, cleaning."""

    resolution: int = 256
    """Voxels per axis of the fusion grid (on CUDA)."""
    cpu_resolution: int = 128
    """Voxels per axis on the CPU."""
    cpu_max_width: int = 160
    """Render width for the depth maps on the CPU reference rasterizer."""
    extra_views: int = 40
    """Depth maps rendered from cameras spread around the object (within the training cameras' elevations), besides
    the training views."""
    depth: Literal["auto", "median", "expected"] = "auto"
    """auto: median depth for 2DGS, expected depth for 3DGS."""
    alpha_threshold: float = 0.5
    """Pixels whose rendered opacity is below this have no surface."""
    carve: bool = True
    """Pixels without a surface carve free space along their ray."""
    truncation: float = 4.0
    """TSDF truncation, in voxels."""
    padding: float = 1.1
    """Half side of the grid, in scene radii."""
    keep_components: float = 0.05
    """Keep connected components with at least this share of the largest one's faces."""
    hull: bool = True
    """Drop faces outside the training views' masks (their visual hull), when they have masks."""
    decimate: int = 0
    """Target number of faces after quadric decimation; 0 keeps them all."""
    evaluate: bool = True
    """Geometry metrics when the scene has ground truth."""
    dtu_root: str | None = None
    """DTU's evaluation folder (Points/stl, ObsMask) for DTU scans in the IDR layout."""


@dataclass
class RunConfig:
    """Everything a run needs; one section per stage."""

    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    poses: PosesConfig = field(default_factory=PosesConfig)
    init: InitConfig = field(default_factory=InitConfig)
    optimize: OptimizeConfig = field(default_factory=OptimizeConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    seed: int = 0
    """Seeds every random choice (initial subsets, training order, noise); part of every stage's reuse key."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when present, else the CPU (whose optimize path is a smoke test). Resolved once per run; the
    stages that compute on it have its type in their reuse key."""
    preset: str = "default"
    """The preset the run was loaded from (recorded in config.yaml; not part of any reuse key)."""
    live_every: int = 0
    """Write a splat snapshot to assets/live/ every N optimisation steps for the viewer (0: never).
    Outside every stage's section, so it never invalidates a finished stage."""


@dataclass(frozen=True)
class Limit:
    """The values a numeric setting may take: finite, from ``low`` to ``high`` (None: unbounded; an open end
    excludes its bound)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def __str__(self) -> str:
        def text(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        low = None if self.low is None else f"{'above' if self.low_open else 'at least'} {text(self.low)}"
        high = None if self.high is None else f"{'below' if self.high_open else 'at most'} {text(self.high)}"
        return " and ".join(part for part in (low, high) if part) or "a finite number"


COUNT = Limit(1)  # steps, points, views, sizes: one or more
AT_LEAST_0 = Limit(0)  # weights, rates, optional counts (0: off)
POSITIVE = Limit(0, low_open=True)
FRACTION = Limit(0, 1)
# The limits of every int and float setting, checked wherever a value is set (preset or command line); the
# defaults are within them. Relations between settings are checked by the stage that reads them.
LIMITS: dict[str, Limit] = {
    "data.downscale": COUNT, "data.max_side": AT_LEAST_0, "data.light": Limit(0, 7),
    "views.count": COUNT,
    "poses.max_features": COUNT, "poses.min_inliers": COUNT, "poses.max_image_size": Limit(16),
    "poses.upsample_below": COUNT, "poses.fewview_max_views": Limit(2),
    "init.points": COUNT, "init.hull_resolution": Limit(2), "init.mvs_plane_step": POSITIVE,
    "init.mvs_max_planes": Limit(16), "init.mvs_window": Limit(3), "init.mvs_sources": COUNT,
    "init.mvs_best_sources": AT_LEAST_0, "init.mvs_scales": COUNT,
    "init.mvs_min_score": Limit(-1, 1), "init.mvs_min_consistent": COUNT,
    "init.mvs_max_reprojection": POSITIVE, "init.mvs_max_depth_ratio": POSITIVE, "init.mvs_max_side": Limit(16),
    "init.mvs_cpu_max_side": Limit(16), "init.mvs_points": COUNT, "init.mvs_min_points": AT_LEAST_0,
    "init.mvs_min_coverage": Limit(0, 1), "init.mvs_random": AT_LEAST_0, "init.mvs_fill": AT_LEAST_0,
    "init.mvs_min_confirmed": Limit(0, 1), "init.sfm_min_points": AT_LEAST_0,
    "optimize.steps": COUNT, "optimize.steps_per_view": AT_LEAST_0, "optimize.max_steps": AT_LEAST_0,
    "optimize.sh_degree": Limit(0, 3), "optimize.sh_degree_interval": COUNT,
    "optimize.ssim_weight": FRACTION, "optimize.coarse_to_fine": AT_LEAST_0, "optimize.lr_means": AT_LEAST_0,
    "optimize.lr_scales": AT_LEAST_0,
    "optimize.lr_quats": AT_LEAST_0, "optimize.lr_opacities": AT_LEAST_0, "optimize.lr_sh0": AT_LEAST_0,
    "optimize.lr_shN": AT_LEAST_0, "optimize.init_opacity": Limit(0, 1, low_open=True, high_open=True),
    "optimize.init_scale": POSITIVE, "optimize.refine_start": AT_LEAST_0, "optimize.refine_stop": AT_LEAST_0,
    "optimize.refine_every": COUNT, "optimize.grow_grad2d": POSITIVE, "optimize.prune_opacity": FRACTION,
    "optimize.mcmc_cap": COUNT, "optimize.mask_weight": AT_LEAST_0, "optimize.opacity_reg": AT_LEAST_0,
    "optimize.scale_reg": AT_LEAST_0, "optimize.min_views": AT_LEAST_0, "optimize.prune_every": COUNT,
    "optimize.free_space_window": COUNT,
    "optimize.free_space": Limit(0, 1, high_open=True), "optimize.empty_dark": AT_LEAST_0,
    "optimize.dark_level": FRACTION,
    "optimize.depth_smooth": AT_LEAST_0, "optimize.distortion": AT_LEAST_0,
    "optimize.normal_consistency": AT_LEAST_0, "optimize.pseudo_views": AT_LEAST_0,
    "optimize.pseudo_jitter": AT_LEAST_0, "optimize.regularize_from": AT_LEAST_0,
    "optimize.depth_weight": AT_LEAST_0, "optimize.anisotropy": AT_LEAST_0, "optimize.max_anisotropy": Limit(1),
    "optimize.opacity_entropy": AT_LEAST_0, "optimize.dropout": Limit(0, 1, high_open=True),
    "optimize.opacity_decay": Limit(0, 1, high_open=True), "optimize.co_prune": AT_LEAST_0,
    "optimize.co_reg": AT_LEAST_0, "optimize.binocular": AT_LEAST_0, "optimize.binocular_shift": AT_LEAST_0,
    "optimize.cross_view": AT_LEAST_0,
    "optimize.pose_lr": AT_LEAST_0, "optimize.test_pose_steps": AT_LEAST_0, "optimize.test_pose_lr": AT_LEAST_0,
    "optimize.cpu_align_steps": AT_LEAST_0, "optimize.checkpoint_every": COUNT, "optimize.cpu_steps": COUNT,
    "optimize.cpu_max_width": COUNT, "optimize.cpu_points": COUNT,
    "prior.validate_margin": Limit(), "prior.loo_views": AT_LEAST_0, "prior.loo_steps": AT_LEAST_0,
    "prior.loo_snapshots": COUNT, "prior.perturb_samples": AT_LEAST_0, "prior.perturb_scale": AT_LEAST_0,
    "prior.layers_per_block": COUNT, "prior.crop": Limit(8), "prior.batch": COUNT, "prior.train_steps": COUNT,
    "prior.lr": POSITIVE, "prior.timesteps": COUNT, "prior.sample_steps": COUNT,
    "prior.strength": Limit(0, 1, low_open=True),
    "prior.pseudo_views": COUNT, "prior.elevation": Limit(0, 90), "prior.distill_steps": COUNT,
    "prior.distill_rounds": COUNT, "prior.distill_weight": AT_LEAST_0, "prior.falloff": POSITIVE,
    "prior.distill_ssim": FRACTION, "prior.distill_lr_means": AT_LEAST_0,
    "prior.checkpoint_strength": Limit(0, 1, low_open=True), "prior.checkpoint_steps": COUNT,
    "prior.guidance": AT_LEAST_0, "prior.cpu_model_steps": COUNT,
    "mesh.resolution": Limit(2), "mesh.cpu_resolution": Limit(2), "mesh.cpu_max_width": COUNT,
    "mesh.extra_views": AT_LEAST_0, "mesh.alpha_threshold": FRACTION, "mesh.truncation": POSITIVE,
    "mesh.padding": POSITIVE, "mesh.keep_components": FRACTION, "mesh.decimate": AT_LEAST_0,
    "seed": Limit(0, 2**32 - 1), "live_every": AT_LEAST_0,
}


def load_config(preset: str = "default", overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults <- preset YAML <- overrides (dotted keys or nested dicts).

    A layer (a preset file, or the overrides together) that sets ``optimize.steps`` but not
    ``optimize.steps_per_view`` sets the latter to 0: asking for N steps gives N steps at any view count."""
    cfg = RunConfig()
    _apply_preset(cfg, preset, seen=())
    cfg.preset = preset
    for key, value in (overrides or {}).items():
        if key == "preset":  # the name of the preset applied above, recorded: setting it would apply nothing
            raise InputError(f"preset={value}: a preset is chosen with --config {value}, not set")
        _apply(cfg, _nest(key, value), "command line")
    _fix_length(cfg, overrides or {})
    return cfg


def _fix_length(cfg: RunConfig, layer: dict[str, Any]) -> None:
    """``optimize.steps_per_view`` to 0 where ``layer`` sets the steps and not the steps per view."""
    keys = set(_flat(layer))
    if "optimize.steps" in keys and "optimize.steps_per_view" not in keys:
        cfg.optimize.steps_per_view = 0


def _apply_preset(cfg: RunConfig, preset: str, seen: tuple[str, ...]) -> None:
    """Apply a preset, after the preset it names as ``base`` (if any)."""
    path = preset_path(preset)
    if str(path) in seen:
        raise InputError(f"{path}: presets name each other as base in a loop")
    data = _read_preset(path)
    base = data.pop("base", None)
    if base is not None:
        try:
            preset_path(str(base))
        except InputError as exc:
            raise InputError(f"{path}: base: {exc}") from None
        _apply_preset(cfg, str(base), seen + (str(path),))
    _apply(cfg, data, str(path))
    _fix_length(cfg, data)


def preset_settings(preset: str) -> dict[str, Any]:
    """The settings a preset file sets itself (not its base's), as dotted keys: to lay one preset over another,
    ``load_config("dtu", preset_settings("tiny"))``."""
    data = _read_preset(preset_path(preset))
    data.pop("base", None)
    return _flat(data)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys (dotted keys kept as they are)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return out


class _PresetLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""


def _unique_mapping(loader: _PresetLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue  # a merge (<<: its keys may be given again) or a key construct_mapping refuses itself
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"{key!r} is given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_PresetLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _read_preset(path: Path) -> dict[str, Any]:
    """The mapping a preset file holds (``base`` and its sections); one line if it is not one."""
    try:
        data = yaml.load(path.read_text(), Loader=_PresetLoader) or {}  # noqa: S506 (a safe loader)
    except yaml.MarkedYAMLError as exc:
        where = f", line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
        raise InputError(f"{path}{where}: not valid YAML ({exc.problem or exc.context})") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a preset must be a mapping of sections")
    return data


def preset_path(preset: str) -> Path:
    candidate = Path(preset)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise InputError(f"{candidate}: config file does not exist")
        return candidate
    path = CONFIGS_DIR / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))
        raise InputError(f"unknown preset {preset!r}; presets: {', '.join(known)} (or a path to a .yaml file)")
    return path


def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value`` with a YAML-typed value."""
    if "=" not in text:
        raise InputError(f"--set {text}: expected section.key=value")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError:
        return key.strip(), raw


def _nest(key: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def _apply(target: Any, data: dict[str, Any], where: str, prefix: str = "") -> None:
    hints = get_type_hints(type(target))
    names = {f.name for f in fields(target)}
    for key, value in data.items():
        if key not in names:
            raise InputError(f"{where}: unknown config key {prefix}{key} (known: {', '.join(sorted(names))})")
        current = getattr(target, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise InputError(f"{where}: {prefix}{key} is a section; give it a mapping")
            _apply(current, value, where, f"{prefix}{key}.")
        else:
            value = _coerce(value, hints[key], f"{where}: {prefix}{key}")
            limit = LIMITS.get(prefix + key)
            if limit is not None and value is not None and not limit.admits(value):
                raise InputError(f"{where}: {prefix}{key} = {value!r} must be {limit}")
            setattr(target, key, value)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    options = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise InputError(f"{where} cannot be null")
    for option in options:
        if get_origin(option) is Literal:
            if isinstance(value, bool) and {"on", "off"} <= set(get_args(option)):  # YAML reads on/off as booleans
                return "on" if value else "off"
            if value in get_args(option):
                return value
            continue
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if get_origin(option) in (list, tuple) and isinstance(value, (list, tuple)):
            return type(value)(value) if get_origin(option) is list else tuple(value)
    raise InputError(f"{where}: {value!r} is not a valid {_describe(hint)}")


def _describe(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return "choice (" + " | ".join(map(str, get_args(hint))) + ")"
    return getattr(hint, "__name__", str(hint)).replace("typing.", "")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def digest(*parts: Any) -> str:
    """Stable short hash of config sections and other JSON-able values."""
    payload = json.dumps([to_dict(p) if is_dataclass(p) else p for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
