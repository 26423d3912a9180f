"""Where recon's bundled files live: presets in configs/, splits and the example in data/."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = REPO_ROOT / "configs"
DATA_DIR = REPO_ROOT / "data"
SPLITS_DIR = DATA_DIR / "splits"
ANCHORS_DIR = DATA_DIR / "anchors"
