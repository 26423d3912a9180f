"""Structure from motion for a few photos, with classical geometry only.

* :mod:`recon.sfm.matching`: SIFT features at the photos' own resolution and
  verified matches between every pair (COLMAP through pycolmap, in a scratch folder);
* :mod:`recon.sfm.fewview`: a reconstruction built for 3 to 9 views: a two-view
  start from the best verified pair, absolute pose (or the pairs' relative poses)
  for the others, bundle adjustment;
* :mod:`recon.sfm.mappers`: COLMAP's incremental and global mappers with settings for few views;
* :mod:`recon.sfm.check`: whether given cameras fit the photos (verified matches against their epipolar lines);
* :mod:`recon.sfm.model`: what every reconstruction returns, and the checks that
  refuse a geometry the photos cannot fix (a plane seen with an unknown focal length,
  a camera that only turned).

Conventions are those of :mod:`recon.scene.camera`: OpenCV cameras,
world-to-camera 4x4 float64, intrinsics in pixels of the photo at its own size
(top-left corner at (0, 0), as in COLMAP).
"""
