"""A folder of plain photos (``images/`` or the folder itself), with no cameras.

Views get no camera: the poses stage estimates them. Photos may differ in
size; the poses stage gives each size (and each EXIF camera and focal length)
its own camera.
"""

from __future__ import annotations

from pathlib import Path

from recon.errors import InputError
from recon.io import images as image_io
from recon.io.layout import ImportOptions, Layout, new_view
from recon.scene.graph import SceneGraph


def _image_dir(path: Path) -> Path | None:
    if not path.is_dir():
        return None
    for candidate in (path / "images", path):
        if candidate.is_dir() and image_io.list_images(candidate):
            return candidate
    return None


def read(path: Path, options: ImportOptions) -> SceneGraph:
    image_dir = _image_dir(path)
    if image_dir is None:
        raise InputError(f"{path}: no images")
    graph = SceneGraph(name=path.name, source={"path": str(path), "files": []})
    for i, image in enumerate(image_io.list_images(image_dir)):
        graph.add(new_view(i, image.stem, image))
    return graph


LAYOUT = Layout(
    name="images",
    description="a folder of photos, or images/ inside it, without cameras",
    detect=lambda p: _image_dir(p) is not None,
    read=read,
)
