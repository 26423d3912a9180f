"""The output folder's vocabulary: the ids of the scene graph's nodes that more than one module names.

Each id is the key of its node in ``scene.json``; changing one changes the format on disk.
"""

from __future__ import annotations

GAUSSIANS_FINAL = "gaussians/final"
"""The optimize stage's splats (``assets/splats.ply``)."""
GAUSSIANS_PRIOR = "gaussians/prior"
"""The prior stage's splats, when its check let them replace the optimize stage's (``assets/prior/splats.ply``)."""
