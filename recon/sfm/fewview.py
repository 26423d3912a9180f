"""A reconstruction built for a few views: two-view start, then absolute or relative poses, then bundle adjustment.

COLMAP's incremental mapper is made for hundreds of photos: it starts only
from pairs with many inliers and a wide triangulation angle, and places a
new photo only when it sees 15 points already triangulated. From 3 to 9
photos taken far apart, most matches join two photos only, so it often
places two photos and stops. This module starts and grows the same way but
with the few-view case in mind:

1. **Tracks**: the verified matches are joined into tracks (a track is one
   scene point's keypoints, at most one per photo; tracks that would hold two
   keypoints of one photo are dropped).
2. **Two-view start**: the pairs with the most verified matches are tried in
   turn. For each, the relative pose comes from the 5-point essential matrix
   in LO-RANSAC (pycolmap) with the cameras' current focal lengths (inliers
   within ``relative_error`` pixels), and its
   inliers are triangulated; only points in front of both cameras
   (cheirality), reprojecting within ``max_error`` pixels and seen under at
   least ``min_angle`` degrees count. The pair with the most such points
   starts, if its median angle is at least ``init_min_angle``.
3. **Growing**: every unplaced photo gets candidate poses: by absolute pose
   (P3P in LO-RANSAC, then refinement) when at least ``min_inliers`` of its
   2D-3D matches agree; and from its verified pairs with placed photos
   (structure-less): each pair's relative pose gives the photo's rotation and
   the direction from that photo towards its centre, two or more directions
   that agree on the rotation meet at the centre, and one direction alone is
   scaled by the few points the photo does see. A candidate is scored by the
   verified matches with placed photos it explains (Sampson error within
   ``max_error``); one that explains fewer than ``min_inliers`` or half of
   them is dropped, and the best-supported candidate of all is placed.
4. After each photo, every track seen by two placed photos is triangulated
   again and bundle adjustment (pycolmap, Cauchy loss, the focal length of
   each camera without EXIF refined; one from EXIF is kept, as a few views
   can trade it against depth) moves cameras and points together; observations that
   reproject beyond ``max_error`` are dropped. If the photos placed before
   lose more than ``1 - keep_share`` of their good observations, the new
   photo contradicts them (repeated structure matched to the wrong copy): it
   is taken out again.

Up to ``starts`` starting pairs are tried (until one places every photo); the
model with the most photos, then the smallest reprojection error, is
returned, after a last bundle adjustment repeated while the focal lengths
move. Photos that stay out are named with the reason.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from recon.io import images as image_io
from recon.metrics.poses import rotation_angle
from recon.scene.camera import axes_normal_equations, camera_center, intrinsics_matrix, nearest_rotation
from recon.sfm.matching import Correspondences
from recon.sfm.model import Model


@dataclass(frozen=True)
class FewViewOptions:
    """Thresholds of the few-view reconstruction (pixels are the photos' own)."""

    min_inliers: int = 15
    """Fewest verified matches that start a pair, agreeing 2D-3D matches that place a photo, or matches that orient
    one."""
    min_angle: float = 1.0
    """Degrees: a point is triangulated only when its rays meet at this angle or more."""
    init_min_angle: float = 2.0
    """Degrees: the median triangulation angle a starting pair needs."""
    max_error: float = 4.0
    """Pixels: the reprojection error beyond which a match is an outlier."""
    relative_error: float = 1.5
    """Pixels: the Sampson error within which a match supports a relative pose. Tighter than max_error: on repeated
    structure (a facade's windows) matches to the neighbouring copy lie a few pixels off the true epipolar lines and,
    counted as support, tilt the pose (castle_p30, 6 views: median rotation error 0.9 to 2.8 degrees at 4 pixels,
    0.6 to 1.1 at 1.5)."""
    starts: int = 3
    """Starting pairs tried (the best by well-triangulated points first)."""
    max_rotation_disagreement: float = 3.0
    """Degrees: two placed neighbours must agree this well on a photo's rotation to place it without points."""
    keep_share: float = 0.9
    """A new photo is undone when the photos placed before keep less than this share of their good observations."""


@dataclass
class _State:
    """A reconstruction in progress: the placed photos' cameras, and the tracks' points.

    ``rejected`` [T, V] marks observations found to be outliers; they stay out
    of triangulation and bundle adjustment from then on.
    """

    focal: list[float]  # per camera
    rejected: np.ndarray
    points: np.ndarray  # [T, 3]
    valid: np.ndarray  # [T] bool: the track has a point
    poses: dict[int, np.ndarray] = field(default_factory=dict)  # photo -> world_to_camera [4, 4]


class FewViewReconstruction:
    """Two-view start, growing and bundle adjustment over the verified matches of a few photos."""

    def __init__(self, corr: Correspondences, options: FewViewOptions = FewViewOptions()):
        self.corr, self.options = corr, options
        self.count = len(corr.keypoints)
        self.tracks = build_tracks(corr)  # [T, V] keypoint index or -1
        self.reasons: dict[int, str] = {}
        self._relative: dict[tuple[int, int], tuple | None] = {}  # (placed photo, waiting photo) -> its relative pose

    # --- entry point ------------------------------------------------------------------------------
    def run(self) -> Model | None:
        """The best model over the tried starts, or None when no pair can start one."""
        best: Model | None = None
        starts = self._starts()
        if not starts:
            reason = "no pair of photos taken far enough apart to triangulate from (did the camera only turn?)"
            self.reasons = {i: reason for i in range(self.count)}
            return None
        for i, j, rotation, translation in starts[: self.options.starts]:
            state = self._start(i, j, rotation, translation)
            reasons = self._grow(state)
            self._refine(state)
            model = self._model(state)
            if model.better_than(best):
                best, self.reasons = model, reasons
                if model.registered == self.count:
                    break
        return best

    # --- the two-view start -----------------------------------------------------------------------
    def _starts(self) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
        """Candidate starting pairs (i, j, R, t of camera j from camera i), best first."""
        scored = []
        by_matches = sorted(self.corr.pairs.items(), key=lambda kv: -len(kv[1].matches))
        for (i, j), pair in by_matches[: 3 * self.options.starts]:
            if len(pair.matches) < self.options.min_inliers:
                continue
            focal = [self.corr.cameras[c].focal for c in range(len(self.corr.cameras))]
            relative = self._relative_pose(i, j, pair.matches, focal)
            if relative is None:
                continue
            R, t, inliers = relative
            x_i = self._normalised(i, pair.matches[inliers, 0], focal)
            x_j = self._normalised(j, pair.matches[inliers, 1], focal)
            P_i = np.eye(4)
            P_j = np.eye(4)
            P_j[:3, :3], P_j[:3, 3] = R, t
            X = triangulate_pairs(x_i, x_j, P_i, P_j)
            good, angles = self._good_points(X, [(P_i, x_i, i, focal), (P_j, x_j, j, focal)])
            if good.sum() < self.options.min_inliers or np.median(angles[good]) < self.options.init_min_angle:
                continue
            scored.append((int(good.sum()), i, j, R, t))
        scored.sort(key=lambda s: -s[0])
        return [(i, j, R, t) for _, i, j, R, t in scored]

    def _start(self, i: int, j: int, R: np.ndarray, t: np.ndarray) -> _State:
        state = _State(focal=[c.focal for c in self.corr.cameras], rejected=np.zeros(self.tracks.shape, dtype=bool),
                       points=np.zeros((len(self.tracks), 3)), valid=np.zeros(len(self.tracks), dtype=bool))
        state.poses[i] = np.eye(4)
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = R, t
        state.poses[j] = pose
        self._triangulate(state)
        self._adjust(state)
        return state

    # --- growing ------------------------------------------------------------------------------------
    def _grow(self, state: _State) -> dict[int, str]:
        """Place photos until none can be; returns why each photo left out could not be placed.

        Every waiting photo's candidate poses are scored by how many of its
        verified matches with placed photos they explain (:meth:`_agreement`);
        the best-supported candidate of all is placed first. A placement after
        which the photos placed before keep less than ``keep_share`` of their
        good observations contradicts them: it is undone and the photo stays out.
        """
        why: dict[int, str] = {}
        refused: set[int] = set()
        while len(state.poses) < self.count:
            best: tuple[int, int, np.ndarray] | None = None
            for v in (v for v in range(self.count) if v not in state.poses and v not in refused):
                candidates, why[v] = self._candidates(state, v)
                for pose in candidates:
                    agree, total = self._agreement(state, v, pose)
                    if agree < self.options.min_inliers or agree < 0.5 * total:
                        why[v] = (f"its candidate poses explain at most {agree} of its {total} matches "
                                  "with placed photos")
                        continue
                    if best is None or agree > best[0]:
                        best = (agree, v, pose)
            if best is None:
                break
            _, v, pose = best
            before = copy.deepcopy(state)
            kept = self._good_observations(state, sorted(state.poses))
            state.poses[v] = pose
            self._triangulate(state)
            self._adjust(state)
            after = self._good_observations(state, sorted(before.poses))
            if after < self.options.keep_share * kept:
                state.__dict__.update(before.__dict__)
                refused.add(v)
                why[v] = (f"placing it would cost the photos placed before {kept - after} of their {kept} "
                          "good observations: its matches contradict theirs")
        return {v: why.get(v, "not reached") for v in range(self.count) if v not in state.poses}

    def _good_observations(self, state: _State, photos: list[int]) -> int:
        """Observations in ``photos`` of tracks that have a point (outliers excluded)."""
        return int(self._usable(state, photos)[state.valid].sum())

    def _candidates(self, state: _State, v: int) -> tuple[list[np.ndarray], str]:
        """Poses of photo ``v`` from its 2D-3D matches and from its pairs with placed photos; why there are none."""
        candidates = []
        pose, reason = self._absolute_pose(state, v)
        if pose is not None:
            candidates.append(pose)
        rays = self._rays(state, v)
        if not rays and not candidates:
            return [], f"{reason}, and no verified pair with a placed photo gives a relative pose"
        for R_seed, _, _ in rays:
            agreeing = [r for r in rays if rotation_angle(r[0] @ R_seed.T) <= self.options.max_rotation_disagreement]
            if len(agreeing) >= 2:
                pose = _intersect(agreeing)
                if pose is not None:
                    candidates.append(pose)
        for ray in rays:
            pose, scale_reason = self._scaled(state, v, ray)
            if pose is not None:
                candidates.append(pose)
            elif not candidates:
                reason = scale_reason
        return candidates, reason

    def _visible(self, state: _State, v: int) -> np.ndarray:
        """[T] bool: tracks with a point that photo ``v`` has a keypoint of."""
        return state.valid & (self.tracks[:, v] >= 0)

    def _absolute_pose(self, state: _State, v: int) -> tuple[np.ndarray | None, str]:
        import pycolmap

        visible = self._visible(state, v)
        count = int(visible.sum())
        if count < self.options.min_inliers:
            return None, f"sees {count} triangulated points"
        points2d = self.corr.keypoints[v][self.tracks[visible, v]]
        estimation = pycolmap.AbsolutePoseEstimationOptions()
        estimation.ransac.max_error = 2 * self.options.max_error
        estimation.ransac.random_seed = 0
        refinement = pycolmap.AbsolutePoseRefinementOptions()
        result = pycolmap.estimate_and_refine_absolute_pose(points2d, state.points[visible],
                                                            self._camera(v, state.focal), estimation, refinement)
        inliers = 0 if result is None else int(result["num_inliers"])
        if result is None or inliers < self.options.min_inliers or inliers < 0.25 * count:
            return None, f"{inliers} of the {count} triangulated points it sees agree on a pose"
        pose = np.eye(4)
        pose[:3, :4] = result["cam_from_world"].matrix()
        return pose, ""

    def _rays(self, state: _State, v: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per placed photo verified with ``v``: (v's rotation [3, 3], that photo's centre [3], unit direction to v's
        centre [3])."""
        rays = []
        for n in sorted(state.poses):
            pair = self.corr.pairs.get((min(n, v), max(n, v)))
            if pair is None or len(pair.matches) < self.options.min_inliers:
                continue
            if (n, v) not in self._relative:  # estimated once, with the focal lengths of that time
                matches = pair.matches if n < v else pair.matches[:, ::-1]
                self._relative[(n, v)] = self._relative_pose(n, v, matches, state.focal)
            relative = self._relative[(n, v)]
            if relative is None:
                continue
            R_nv, t_nv, _ = relative
            R_v = R_nv @ state.poses[n][:3, :3]
            rays.append((R_v, camera_center(state.poses[n]), -R_v.T @ t_nv))
        return rays

    def _scaled(self, state: _State, v: int,
                ray: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray | None, str]:
        """The pose along one neighbour's direction, at the distance that the points ``v`` sees agree on."""
        R_v, c, d = ray
        visible = self._visible(state, v)
        if visible.sum() < 3:
            return None, (f"it pairs with placed photos but sees {int(visible.sum())} triangulated points, "
                          "so its distance from them cannot be fixed")
        x = self._normalised(v, self.tracks[visible, v], state.focal)
        a = (state.points[visible] - c) @ R_v.T  # the points in v's axes, relative to the neighbour's centre
        e = R_v @ d
        # (a - s e)_x = x (a - s e)_z, and the same for y: one scale s per point, least squares over both axes.
        num = ((a[:, 0] - x[:, 0] * a[:, 2]) * (e[0] - x[:, 0] * e[2])
               + (a[:, 1] - x[:, 1] * a[:, 2]) * (e[1] - x[:, 1] * e[2]))
        den = (e[0] - x[:, 0] * e[2]) ** 2 + (e[1] - x[:, 1] * e[2]) ** 2
        scales = num / np.maximum(den, 1e-12)
        s = float(np.median(scales))
        spread = float(np.median(np.abs(scales - s)))
        if s <= 0 or spread > 0.2 * s:
            return None, "the points it sees disagree on its distance from the photos it pairs with"
        return _pose(R_v, c + s * d), ""

    def _agreement(self, state: _State, v: int, pose: np.ndarray) -> tuple[int, int]:
        """(matches explained, matches) of photo ``v`` with placed photos: Sampson error under ``pose`` within
        max_error."""
        agree = total = 0
        K_v = self._K(v, state.focal)
        for n, pose_n in state.poses.items():
            pair = self.corr.pairs.get((min(n, v), max(n, v)))
            if pair is None:
                continue
            matches = pair.matches if n < v else pair.matches[:, ::-1]
            F = fundamental(self._K(n, state.focal), pose_n, K_v, pose)
            error = sampson_error(F, self.corr.keypoints[n][matches[:, 0]], self.corr.keypoints[v][matches[:, 1]])
            agree += int(np.sum(error < self.options.max_error))
            total += len(matches)
        return agree, total

    # --- geometry helpers ---------------------------------------------------------------------------
    def _relative_pose(self, i: int, j: int, matches: np.ndarray, focal: list[float]):
        """(R, t, inlier mask) of camera j from camera i by the 5-point essential matrix in LO-RANSAC, or None."""
        import pycolmap

        options = pycolmap.RANSACOptions()
        options.max_error = self.options.relative_error
        options.random_seed = 0
        options.min_num_trials = 100
        options.confidence = 0.999
        result = pycolmap.estimate_relative_pose(
            self._camera(i, focal), self.corr.keypoints[i][matches[:, 0]],
            self._camera(j, focal), self.corr.keypoints[j][matches[:, 1]], options)
        if result is None or result["num_inliers"] < self.options.min_inliers:
            return None
        pose = result["cam2_from_cam1"]
        return pose.rotation.matrix(), np.asarray(pose.translation), np.asarray(result["inlier_mask"], dtype=bool)

    def _camera(self, i: int, focal: list[float]):
        import pycolmap

        prior = self.corr.cameras[self.corr.photo_cameras[i]]
        return pycolmap.Camera.create_from_model_name(0, "SIMPLE_PINHOLE", focal[self.corr.photo_cameras[i]],
                                                      prior.width, prior.height)

    def _K(self, i: int, focal: list[float]) -> np.ndarray:
        prior = self.corr.cameras[self.corr.photo_cameras[i]]
        f = focal[self.corr.photo_cameras[i]]
        return intrinsics_matrix(f, f, prior.width / 2, prior.height / 2)

    def _normalised(self, i: int, keypoints: np.ndarray, focal: list[float]) -> np.ndarray:
        """[N, 2] normalised image coordinates of photo ``i``'s keypoints (by index)."""
        K = self._K(i, focal)
        uv = self.corr.keypoints[i][keypoints]
        return (uv - K[:2, 2]) / K[0, 0]

    def _good_points(self, X: np.ndarray, views) -> tuple[np.ndarray, np.ndarray]:
        """([N] bool, [N] angles in degrees): in front of every view, within max_error pixels, seen under min_angle."""
        good = np.ones(len(X), dtype=bool)
        rays = []
        for pose, x, i, focal in views:
            Xc = X @ pose[:3, :3].T + pose[:3, 3]
            z = Xc[:, 2]
            good &= z > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                error = np.linalg.norm(Xc[:, :2] / z[:, None] - x, axis=1) * focal[self.corr.photo_cameras[i]]
            good &= error < self.options.max_error
            rays.append(X - camera_center(pose))
        norms = np.linalg.norm(rays[0], axis=1) * np.linalg.norm(rays[1], axis=1)
        cos = np.sum(rays[0] * rays[1], axis=1) / (norms + 1e-12)
        angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
        good &= angles >= self.options.min_angle
        return good, angles

    # --- triangulation and bundle adjustment ----------------------------------------------------------
    def _usable(self, state: _State, placed: list[int]) -> np.ndarray:
        """[T, len(placed)] bool: observations in the placed photos that are not outliers."""
        return (self.tracks[:, placed] >= 0) & ~state.rejected[:, placed]

    def _triangulate(self, state: _State) -> None:
        """Triangulate every track that two or more placed photos observe; keep the points that pass the checks."""
        placed = sorted(state.poses)
        usable = self._usable(state, placed)
        candidates = np.flatnonzero(usable.sum(axis=1) >= 2)
        state.points = np.zeros((len(self.tracks), 3))
        state.valid = np.zeros(len(self.tracks), dtype=bool)
        if len(candidates):
            state.points[candidates] = triangulate_tracks(
                self.tracks[candidates][:, placed], usable[candidates], [self.corr.keypoints[v] for v in placed],
                [self._K(v, state.focal) for v in placed], [state.poses[v] for v in placed])
        self._check(state, candidates)

    def _check(self, state: _State, tracks: np.ndarray) -> None:
        """Keep the points of ``tracks`` with two observations within max_error, in front, seen under min_angle.

        The other observations of a kept point become outliers (``rejected``).
        """
        placed = sorted(state.poses)
        usable = self._usable(state, placed)[tracks]
        X = state.points[tracks]
        good = np.zeros(usable.shape, dtype=bool)
        rays = np.zeros(usable.shape + (3,))
        for k, v in enumerate(placed):
            K, pose = self._K(v, state.focal), state.poses[v]
            Xc = X @ pose[:3, :3].T + pose[:3, 3]
            with np.errstate(divide="ignore", invalid="ignore"):
                uv = Xc[:, :2] / Xc[:, 2:3] * K[0, 0] + K[:2, 2]
            error = np.linalg.norm(uv - self.corr.keypoints[v][np.maximum(self.tracks[tracks, v], 0)], axis=1)
            good[:, k] = usable[:, k] & (Xc[:, 2] > 0) & (error < self.options.max_error)
            direction = X - camera_center(pose)
            rays[:, k] = direction / (np.linalg.norm(direction, axis=1, keepdims=True) + 1e-12)
        angle = np.zeros(len(tracks))
        for a in range(len(placed)):
            for b in range(a + 1, len(placed)):
                cos = np.clip(np.sum(rays[:, a] * rays[:, b], axis=1), -1.0, 1.0)
                angle = np.where(good[:, a] & good[:, b], np.maximum(angle, np.degrees(np.arccos(cos))), angle)
        ok = (good.sum(axis=1) >= 2) & (angle >= self.options.min_angle) & np.all(np.isfinite(X), axis=1)
        state.valid[tracks] = ok
        outliers = np.zeros(state.rejected.shape, dtype=bool)
        outliers[np.ix_(tracks[ok], placed)] = usable[ok] & ~good[ok]
        state.rejected |= outliers

    def _adjust(self, state: _State, iterations: int = 25) -> None:
        """Bundle adjustment of every placed photo and point (pycolmap), then the points are checked again.

        While photos are still being added a few iterations suffice; the last adjustment runs longer.
        """
        import pycolmap

        rec, point_ids = self._reconstruction(state)
        if not point_ids:
            return
        options = pycolmap.BundleAdjustmentOptions()
        options.print_summary = False
        options.refine_focal_length = True
        options.refine_principal_point = False
        options.refine_extra_params = False
        options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
        options.ceres.solver_options.max_num_iterations = iterations
        config = pycolmap.BundleAdjustmentConfig()
        for image_id in rec.reg_image_ids():
            config.add_image(image_id)
        for camera_id in rec.cameras:
            if self.corr.cameras[camera_id - 1].from_exif:
                config.set_constant_cam_intrinsics(camera_id)
        config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
        pycolmap.create_default_bundle_adjuster(options, config, rec).solve()
        for v in state.poses:
            state.poses[v] = np.eye(4)
            state.poses[v][:3, :4] = rec.images[v + 1].cam_from_world().matrix()
        for c in range(len(state.focal)):
            if rec.exists_camera(c + 1):
                state.focal[c] = float(rec.cameras[c + 1].params[0])
        for track, point_id in point_ids.items():
            state.points[track] = rec.points3D[point_id].xyz
        self._check(state, np.flatnonzero(state.valid))

    def _refine(self, state: _State, rounds: int = 5) -> None:
        """Final bundle adjustment, repeated while the focal lengths still move (they converge slowly from a guess)."""
        for _ in range(rounds):
            before = np.array(state.focal)
            self._adjust(state, iterations=100)
            if np.all(np.abs(np.array(state.focal) / before - 1.0) < 1e-3):
                break

    def _reconstruction(self, state: _State):
        """A ``pycolmap.Reconstruction`` of the placed photos and the valid points; track index -> point id."""
        import pycolmap

        rec = pycolmap.Reconstruction()
        placed = sorted(state.poses)
        usable = self._usable(state, placed)
        used = sorted({self.corr.photo_cameras[v] for v in state.poses})
        for c in used:
            prior = self.corr.cameras[c]
            rec.add_camera_with_trivial_rig(pycolmap.Camera.create_from_model_name(
                c + 1, "SIMPLE_PINHOLE", state.focal[c], prior.width, prior.height))
        for v, pose in state.poses.items():
            image = pycolmap.Image(name=self.corr.names[v], keypoints=self.corr.keypoints[v],
                                   camera_id=self.corr.photo_cameras[v] + 1, image_id=v + 1)
            rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(pose[:3, :4]))
        point_ids = {}
        for track in np.flatnonzero(state.valid):
            elements = [pycolmap.TrackElement(v + 1, int(self.tracks[track, v]))
                        for k, v in enumerate(placed) if usable[track, k]]
            if len(elements) < 2:
                continue
            point_ids[int(track)] = rec.add_point3D(state.points[track], pycolmap.Track(elements))
        return rec, point_ids

    def _model(self, state: _State) -> Model:
        placed = sorted(state.poses)
        tracks = np.flatnonzero(state.valid)
        usable = self._usable(state, placed)
        cameras = {v: (self._K(v, state.focal), state.poses[v]) for v in placed}
        points = state.points[tracks]
        errors = []
        for k, v in enumerate(placed):
            rows = tracks[usable[tracks, k]]
            if len(rows):
                K, pose = cameras[v]
                Xc = state.points[rows] @ pose[:3, :3].T + pose[:3, 3]
                uv = Xc[:, :2] / Xc[:, 2:3] * K[0, 0] + K[:2, 2]
                errors.append(np.linalg.norm(uv - self.corr.keypoints[v][self.tracks[rows, v]], axis=1))
        error = float(np.mean(np.concatenate(errors))) if errors else 0.0
        first = np.array([placed[int(np.argmax(usable[t]))] for t in tracks], dtype=np.int64)
        colors = np.zeros((len(points), 3))
        for v in np.unique(first):
            rows = first == v
            image = image_io.read_image(self.corr.image_dir / self.corr.names[v])
            xy = self.corr.keypoints[v][self.tracks[tracks[rows], v]]
            col = np.clip(xy[:, 0].astype(int), 0, image.shape[1] - 1)
            row = np.clip(xy[:, 1].astype(int), 0, image.shape[0] - 1)
            colors[rows] = image[row, col]
        return Model("fewview", cameras, points, colors, error)


def build_tracks(corr: Correspondences) -> np.ndarray:
    """[T, V] int64: per track, the keypoint index in each photo or -1, from every verified match of ``corr``
    (:func:`tracks_from_matches`)."""
    return tracks_from_matches([len(k) for k in corr.keypoints], {key: p.matches for key, p in corr.pairs.items()})


def tracks_from_matches(counts: list[int], matches: dict[tuple[int, int], np.ndarray]) -> np.ndarray:
    """[T, V] int64: per track, the keypoint index in each of the V photos (``counts`` keypoints each) or -1.

    Tracks are the connected components of the graph whose nodes are keypoints and whose edges are the
    ``matches`` of each pair (i, j) ([M, 2] keypoint indices in i and j); a component with two keypoints in one
    photo holds a wrong match somewhere and is dropped.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    offsets = np.cumsum([0] + list(counts))
    if not any(len(m) for m in matches.values()):
        return np.zeros((0, len(counts)), dtype=np.int64)
    a = np.concatenate([offsets[i] + m[:, 0] for (i, _), m in matches.items()])
    b = np.concatenate([offsets[j] + m[:, 1] for (_, j), m in matches.items()])
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(offsets[-1], offsets[-1]))
    _, labels = connected_components(graph, directed=False)
    nodes = np.unique(np.r_[a, b])
    photo = np.searchsorted(offsets, nodes, side="right") - 1
    _, track_of = np.unique(labels[nodes], return_inverse=True)
    tracks = np.full((track_of.max() + 1, len(counts)), -1, dtype=np.int64)
    tracks[track_of, photo] = nodes - offsets[photo]
    per_photo = np.zeros(tracks.shape, dtype=np.int64)
    np.add.at(per_photo, (track_of, photo), 1)
    return tracks[per_photo.max(axis=1) == 1]


def triangulate_pairs(x1: np.ndarray, x2: np.ndarray, P1: np.ndarray, P2: np.ndarray) -> np.ndarray:
    """[N, 3] points from normalised coordinates [N, 2] in two cameras with world_to_camera ``P1``, ``P2`` [4, 4]
    (DLT)."""
    return _dlt(np.stack([x1, x2], axis=1), [P1, P2], np.ones((len(x1), 2), dtype=bool))


def triangulate_tracks(tracks: np.ndarray, seen: np.ndarray, keypoints: list[np.ndarray], Ks: list[np.ndarray],
                       poses: list[np.ndarray]) -> np.ndarray:
    """[T, 3] points by DLT over each track's observed photos.

    ``tracks`` [T, V] keypoint indices into ``keypoints[v]`` [N_v, 2] (pixels),
    ``seen`` [T, V] bool which observations to use (at least two per track),
    ``Ks`` and ``poses`` per photo (``K`` [3, 3], world_to_camera [4, 4]).
    """
    padded = [k if len(k) else np.zeros((1, 2)) for k in keypoints]  # a photo without keypoints is in no track
    x = np.stack([(padded[v][np.maximum(tracks[:, v], 0)] - Ks[v][:2, 2]) / np.diag(Ks[v])[:2]
                  for v in range(tracks.shape[1])], axis=1)
    return _dlt(x, poses, seen)


def _dlt(x: np.ndarray, poses: list[np.ndarray], seen: np.ndarray) -> np.ndarray:
    """[N, 3] points by DLT from normalised coordinates ``x`` [N, V, 2] in V cameras (world_to_camera [4, 4] each),
    over the observations ``seen`` [N, V] marks."""
    rows = np.zeros((len(x), 2 * len(poses), 4))
    for v, pose in enumerate(poses):
        P, w = pose[:3, :4], seen[:, v, None].astype(float)
        rows[:, 2 * v] = w * (x[:, v, :1] * P[2] - P[0])
        rows[:, 2 * v + 1] = w * (x[:, v, 1:2] * P[2] - P[1])
    X = np.linalg.svd(rows)[2][:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return X[:, :3] / X[:, 3:4]


def fundamental(K1: np.ndarray, pose1: np.ndarray, K2: np.ndarray, pose2: np.ndarray) -> np.ndarray:
    """[3, 3] fundamental matrix with ``x2^T F x1 = 0`` for pixels of cameras 1 and 2 (``K`` [3, 3],
    world_to_camera [4, 4])."""
    relative = pose2 @ np.linalg.inv(pose1)
    t = relative[:3, 3]
    cross = np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])
    return np.linalg.inv(K2).T @ cross @ relative[:3, :3] @ np.linalg.inv(K1)


def sampson_error(F: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """[N] Sampson distance (pixels) of correspondences ``x1``, ``x2`` [N, 2] to the epipolar geometry ``F``."""
    h1 = np.c_[x1, np.ones(len(x1))]
    h2 = np.c_[x2, np.ones(len(x2))]
    Fx1 = h1 @ F.T
    Ftx2 = h2 @ F
    num = np.sum(h2 * Fx1, axis=1) ** 2
    den = Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-18))


def _intersect(rays: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray | None:
    """The pose where two or more neighbours' directions meet (least squares), or None if they are parallel or meet
    behind."""
    A, b = axes_normal_equations(np.array([c for _, c, _ in rays]), np.array([d for _, _, d in rays]))
    if np.linalg.cond(A) > 1e6:
        return None
    center = np.linalg.solve(A, b)
    if any(np.dot(center - c, d) <= 0 for _, c, d in rays):
        return None
    return _pose(nearest_rotation(np.mean([R for R, _, _ in rays], axis=0)), center)  # the chordal mean rotation


def _pose(R: np.ndarray, center: np.ndarray) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = R
    pose[:3, 3] = -R @ center
    return pose
