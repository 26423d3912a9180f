"""Scene importers and exporters.

:func:`import_scene` recognises the layout of a folder (or a ``transforms.json``
file), reads it into a :class:`~recon.scene.graph.SceneGraph` in recon's
conventions, and checks it: every image readable and of its camera's size,
every mask of its image's size, every pose finite and rigid. Nothing is
written; images that must change (undistortion, down-sampling) are rewritten
when the graph is first saved.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from recon.errors import InputError
from recon.io import images as image_io
from recon.io.layout import ImportOptions, Layout
from recon.scene.camera import has_distortion
from recon.scene.graph import Camera, SceneGraph

FULL_SIZE = "full_size_images"  # meta key: view id -> its photo (and mask) before down-sampling


def layouts() -> list[Layout]:
    """Known layouts, most specific first (an images-only folder matches almost anything)."""
    from recon.io import colmap, dtu, folder, llff, spare, transforms

    return [transforms.LAYOUT, llff.LAYOUT, colmap.LAYOUT, dtu.IDR_LAYOUT, spare.LAYOUT, dtu.RECTIFIED_LAYOUT,
            folder.LAYOUT]


def detect_layout(path: Path) -> Layout:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir() and not any(path.iterdir()):
        raise InputError(f"{path}: folder is empty")
    known = layouts()
    for layout in known:
        if layout.detect(path):
            return layout
    looked_for = "; ".join(f"{lay.name} ({lay.description})" for lay in known)
    raise InputError(f"{path}: unknown scene layout; looked for {looked_for}")


def import_scene(path: Path, options: ImportOptions = ImportOptions()) -> SceneGraph:
    """Read and check the scene at ``path``; raises :class:`InputError` on bad input."""
    path = Path(path).resolve()
    layout = detect_layout(path)
    if options.spare_split is not None and layout.name != "spare":
        from recon.io import spare

        if not spare.LAYOUT.detect(path):  # a SpaRe folder may also hold another layout's files: the split decides
            raise InputError(f"{path}: --spare-split (data.spare_split) chooses among a SpaRe scene's split files, "
                             f"and this scene is in the {layout.name} layout, not beside a Track*_split_*.json that "
                             f"lists it")
        layout = spare.LAYOUT
    graph = layout.read(path, options)
    graph.source.setdefault("path", str(path))
    graph.source["layout"] = layout.name
    _unique_names(graph)
    _check(graph)
    if not options.train_masks:
        graph.meta["masks"] = "metrics"
    graph.source["digest"] = _digest(graph, options)
    _prepare_rewrites(graph, options)
    return graph


def _unique_names(graph: SceneGraph) -> None:
    """Give views that share a name (``train/r_0`` and ``test/r_0``) their index too: a view's name names its
    files in ``assets/`` and its row in the metrics."""
    seen: set[str] = set()
    for view in graph.views():
        while view.name in seen:
            view.name = f"{view.name}-{view.index}"
        seen.add(view.name)


def _check(graph: SceneGraph) -> None:
    views = graph.views()
    if not any(v.image for v in views):
        raise InputError(f"{graph.source.get('path')}: no images found")
    sizes: dict[str, tuple[int, int, str]] = {}
    for view in views:
        if view.image is None:
            continue
        size = image_io.probe_image(Path(view.image))
        if view.camera is not None:  # photos without cameras may differ in size: SfM gives each size its own camera
            cam = graph.camera_of(view)
            if size != (cam.width, cam.height):
                raise InputError(
                    f"{view.image}: image is {size[0]}x{size[1]} but its camera expects {cam.width}x{cam.height}"
                )
            first = sizes.setdefault(cam.sensor, (size[0], size[1], view.image))
            if size != first[:2]:
                raise InputError(
                    f"{view.image}: image is {size[0]}x{size[1]} but {Path(first[2]).name} from the same camera "
                    f"is {first[0]}x{first[1]}; images of one camera must share a size"
                )
        if view.mask is not None:
            msize = image_io.probe_image(Path(view.mask))
            if msize != size:
                raise InputError(f"{view.mask}: mask is {msize[0]}x{msize[1]} but its image is {size[0]}x{size[1]}")


def _digest(graph: SceneGraph, options: ImportOptions) -> str:
    """Content key of the input: files (by size and modification time), calibration and options."""
    h = hashlib.sha256()
    h.update(json.dumps(vars(options), sort_keys=True).encode())
    files = set(graph.source.pop("files", []))
    for view in graph.views():
        files.update(p for p in (view.image, view.mask) if p)
    for name in sorted(files):
        st = Path(name).stat()
        h.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    for cam in graph.cameras():
        h.update(cam.K.tobytes() + cam.world_to_camera.tobytes())
    return h.hexdigest()[:16]


def _prepare_rewrites(graph: SceneGraph, options: ImportOptions) -> None:
    """Undistort and down-sample: adjust cameras now, rewrite images on first save.

    An importer that read smaller copies of the photos (LLFF's ``images_N/``) records their factor
    as ``source["downscaled"]``; the rest of the requested factor is applied here.
    """
    if int(options.downscale) < 1:
        raise InputError(f"downscale must be a positive integer, got {options.downscale}")
    asked = max(1, int(options.downscale) // int(graph.source.get("downscaled", 1)))
    sizes = {view.image: image_io.header_size(Path(view.image)) for view in graph.views() if view.image is not None}
    factor = _capped(graph, list(sizes.values()), asked, options)
    for image, (width, height) in sizes.items():
        if width < factor or height < factor:
            why = f"--downscale {factor}" if factor == asked else f"data.max_side {options.max_side}"
            raise InputError(f"{why}: {image} is {width}x{height}, which down-sampled by {factor} has no pixels left")
    for view in graph.views():
        cam = graph.get(view.camera, Camera) if view.camera else None
        dist = cam.distortion if cam is not None and has_distortion(cam.distortion) else None
        if factor == 1 and dist is None:
            continue
        if dist is None and view.image is not None:  # the pose stage finds features in the photos at their own size
            graph.meta.setdefault(FULL_SIZE, {})[view.id] = {"image": view.image, "mask": view.mask}
        K = cam.K.copy() if cam is not None else None
        if view.image is not None:
            view.pending_image = _rewriter(Path(view.image), K, dist, factor, mask=False)
        if view.mask is not None:
            view.pending_mask = _rewriter(Path(view.mask), K, dist, factor, mask=True)
    for cam in graph.cameras():
        cam.distortion = None
        if factor > 1:
            cam.K = cam.K.copy()
            cam.K[:2] /= factor
            cam.width //= factor
            cam.height //= factor
    if factor > 1:
        graph.meta["downscale"] = factor


def _capped(graph: SceneGraph, sizes: list[tuple[int, int]], factor: int, options: ImportOptions) -> int:
    """``factor``, or, when the largest photo's long side down-sampled by it is still above ``options.max_side`` (0: no
    cap), the smallest factor that brings it within: one factor for every photo of the scene, said once in a warning
    and kept in the graph's meta as ``max_side``."""
    max_side = int(options.max_side)
    longest = max(sizes, key=max)
    if max_side <= 0 or max(longest) // factor <= max_side:
        return factor
    capped = -(-max(longest) // max_side)
    width, height = longest[0] // capped, longest[1] // capped
    warnings.warn(f"{graph.name}: photos of {longest[0]}x{longest[1]} train at {width}x{height}, down-sampled by "
                  f"{capped} to bring the long side within data.max_side ({max_side}); --set data.max_side=0 trains "
                  f"at full size", stacklevel=4)
    graph.meta["max_side"] = {"max_side": max_side, "factor": capped, "downscale": int(options.downscale)}
    return capped


def _rewriter(path: Path, K: np.ndarray | None, dist: np.ndarray | None, factor: int, mask: bool):
    def produce() -> np.ndarray:
        pixels = image_io.read_mask(path).astype(np.float32) if mask else image_io.read_image(path)
        if dist is not None and K is not None:
            pixels = image_io.undistort(pixels, K, dist, order=0 if mask else 1)
        pixels = image_io.downsample(pixels, factor)
        return pixels > 0.5 if mask else pixels

    return produce


