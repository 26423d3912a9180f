"""Shared fixtures: one small synthetic scene, rendered once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from recon import progress

progress.set_enabled(False)


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run with a GPU: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def synthetic_scene(tmp_path_factory) -> Path:
    """A 12-view DTU-like mug at 80x60 with masks, depth, normals and ground truth."""
    from recon.data.synth import SynthSpec, synthesize

    out = tmp_path_factory.mktemp("synth") / "mug"
    synthesize(out, SynthSpec("mug", layout="dtu", views=12, width=80, height=60, gt_spacing=0.03))
    return out
