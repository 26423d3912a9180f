"""The viser app: layers, controls and a poll loop over one scene folder.

:class:`ViewerApp` draws what :func:`viewer.scene.layers` reads (splats, meshes,
point clouds, camera frustums with thumbnails, train and test views in their
own colours) and a panel with the scene's stage timings and metrics. Controls:
a checkbox per layer, a minimum-opacity slider for the splats, a camera list
to jump to any view, and a button that renders the chosen view with recon's
own renderer (gsplat on CUDA, the reference rasterizer elsewhere) beside its
photo.

The app polls the folder: when ``scene.json`` changes (a stage finished) it
redraws everything; when a run's splat snapshot in ``assets/live/`` changes
it redraws the splats and the progress line.
"""

from __future__ import annotations

import errno
import html
import socket
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from recon.errors import InputError, ReconError
from recon.live import LIVE_DIR, STATUS
from recon.scene.graph import Camera, SceneGraph
from recon.scene.store import SCENE_FILE
from viewer.scene import (
    ROLE_COLOURS,
    CameraLayer,
    Layers,
    layers,
    metrics_markdown,
    open_scene,
    scene_frame,
    splat_layer,
)

CPU_RENDER_WIDTH = 200  # the reference rasterizer's cost grows with pixels x splats
PORT_TRIES = 20  # a busy port moves on to the next one, this many at most


def listen_port(host: str, port: int) -> int:
    """The first port from ``port`` on that ``host`` can listen on; InputError if it cannot listen at all.

    viser waits forever for a server that cannot bind (a port out of range, an address this machine does
    not have), so the viewer finds out first, binding a socket of its own as the server will (every address
    ``host`` names, reusing ports in TIME_WAIT).
    """
    if not 1 <= port <= 65535:
        raise InputError(f"--port {port}: a port is a number from 1 to 65535")
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"--host {host}: not an address of this machine ({exc})") from None
    last = min(port + PORT_TRIES, 65536) - 1
    for candidate in range(port, last + 1):
        try:
            for family, kind, proto, _, address in addresses:
                with socket.socket(family, kind, proto) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind((address[0], candidate, *address[2:]))
            return candidate
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise InputError(f"--host {host} --port {candidate}: cannot listen there ({exc.strerror})") from None
    raise InputError(f"--port {port}: ports {port} to {last} on {host} are all in use")


class ViewerApp:
    """A viser server showing one scene folder; ``refresh()`` redraws what changed on disk."""

    SHOWN = ("splats", "train", "test")  # layers drawn at first; the others behind their checkboxes

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 8080, wait_for_run: bool = False,
                 device: str = "auto"):
        import viser

        self.folder = Path(folder)
        self.device = device
        self.wait_for_run = wait_for_run
        self.graph: SceneGraph | None = open_scene(self.folder, wait_for_run=wait_for_run)
        free = listen_port(host, port)
        self.server = viser.ViserServer(host=host, port=free, label="recon", verbose=False)
        if self.server.get_port() != port:
            warnings.warn(f"port {port} is in use; the viewer listens on {self.server.get_port()}", stacklevel=2)
        self.layers = Layers()
        self.handles: dict[str, list] = {}
        self.lock = threading.RLock()
        self._stamps: tuple[int, int] = (-1, -1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._build_gui()
        self.refresh(force=True)

    @property
    def url(self) -> str:
        host = self.server.get_host()
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.server.get_port()}"

    # --- panel -----------------------------------------------------------------------------------
    def _build_gui(self) -> None:
        gui = self.server.gui
        self.title = gui.add_markdown(f"**{self.folder.name}**")
        self.status = gui.add_markdown("")
        with gui.add_folder("Layers"):
            self.toggles = {name: gui.add_checkbox(label, initial_value=name in self.SHOWN)
                            for name, label in (("splats", "Splats"), ("mesh", "Mesh"), ("points", "Points"),
                                                ("ground_truth", "Ground truth"), ("train", "Train cameras"),
                                                ("test", "Test cameras"))}
            self.min_opacity = gui.add_slider("Min splat opacity", min=0.0, max=1.0, step=0.01, initial_value=0.0)
        for name, box in self.toggles.items():
            box.on_update(lambda _event, name=name: self._set_visible(name))  # type: ignore[misc]
        self.min_opacity.on_update(lambda _event: self._draw_splats())
        with gui.add_folder("Cameras"):
            self.camera_choice = gui.add_dropdown("View", options=["-"], initial_value="-")
            self.go_button = gui.add_button("Go to this view")
            self.render_button = gui.add_button("Render this view")
            self.render_note = gui.add_markdown("")
            self.render_image = gui.add_image(np.zeros((2, 2, 3), np.uint8), label="recon render", visible=False)
            self.photo_image = gui.add_image(np.zeros((2, 2, 3), np.uint8), label="photo", visible=False)
            self.camera_table = gui.add_html("")
        self.go_button.on_click(lambda event: self.go_to(self.camera_choice.value, event.client))
        self.render_button.on_click(lambda _event: self.render_selected())  # type: ignore[type-var]
        with gui.add_folder("Metrics"):
            self.metrics = gui.add_markdown("")

    # --- drawing ---------------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> bool:
        """Redraw what changed on disk since the last call; True when something was redrawn."""
        stamps = (_mtime(self.folder / SCENE_FILE), _mtime(self.folder / LIVE_DIR / STATUS))
        if stamps == self._stamps and not force:
            return False
        scene_changed = force or stamps[0] != self._stamps[0]
        self._stamps = stamps
        with self.lock:
            if scene_changed:
                try:
                    self.graph = open_scene(self.folder, wait_for_run=self.wait_for_run)
                except ReconError as exc:  # mid-run: a stage may be between files; the next poll retries
                    self.status.content = f"_{html.escape(str(exc))}_"
                    self._stamps = (-1, stamps[1])
                    return False
                if self.graph is None:
                    self.status.content = "_waiting for the run to save scene.json_"
                    return True
                self.layers = layers(self.graph)
                self._draw_all()
            elif self.graph is not None and self.graph.splats() is None:
                splats, live = splat_layer(self.graph)  # a new snapshot: only the splats change
                if live is not None:
                    self.layers.splats, self.layers.live = splats, live
                    self._draw_splats()
            self._draw_status()
        return True

    def _draw_all(self) -> None:
        for handles in self.handles.values():
            for h in handles:
                h.remove()
        self.handles = {}
        L = self.layers
        centre, up, radius = scene_frame(L.cameras)
        target = self._focus()
        self.server.scene.set_up_direction(tuple(up))
        if L.cameras:  # beyond the rig's middle, looking at what the cameras look at: the whole rig in view
            distance = float(np.mean([np.linalg.norm(c.camera_to_world[:3, 3] - target) for c in L.cameras]))
            away = centre - target
            if np.linalg.norm(away) < 0.3 * distance:  # cameras all around (a sphere): from beyond the first one
                away = L.cameras[0].camera_to_world[:3, 3] - target
            self.server.initial_camera.position = tuple(target + 1.8 * away)
            self.server.initial_camera.look_at = tuple(target)
        else:
            distance = radius
        self._draw_splats()
        for kind, (vertices, faces, colours) in L.meshes.items():
            name = "ground_truth" if kind == "ground_truth" else "mesh"
            handle = self.server.scene.add_mesh_trimesh(f"/{name}/mesh_{kind}", _trimesh(vertices, faces, colours),
                                                        visible=self.toggles[name].value)
            self.handles.setdefault(name, []).append(handle)
        size = 0.003 * distance
        for kind, (points, colours) in L.points.items():
            name = "ground_truth" if kind == "ground_truth" else "points"
            cloud = self.server.scene.add_point_cloud(f"/{name}/points_{kind}", points, colours, point_size=size,
                                                      visible=self.toggles[name].value)
            self.handles.setdefault(name, []).append(cloud)
        for cam in L.cameras:
            self._draw_camera(cam, 0.05 * distance)
        names = [c.name for c in L.cameras] or ["-"]
        self.camera_choice.options = names
        if self.camera_choice.value not in names:
            self.camera_choice.value = names[0]  # type: ignore[misc]
        self.camera_table.content = camera_table(L.cameras)
        self.metrics.content = metrics_markdown(self.graph) if self.graph is not None else ""

    def _focus(self) -> np.ndarray:
        from recon.scene.frames import scene_bounds

        graph = self.graph
        if graph is None:
            return np.zeros(3)
        views = [v for v in graph.views() if v.camera is not None]
        return scene_bounds(graph, views)[0] if len(views) > 1 else np.zeros(3)

    def _draw_camera(self, cam: CameraLayer, scale: float) -> None:
        role = cam.role if cam.role in ROLE_COLOURS else "unused"
        layer = "train" if role == "train" else "test"
        handle = self.server.scene.add_camera_frustum(
            f"/cameras/{role}/{cam.name}", fov=cam.vertical_fov, aspect=cam.width / cam.height, scale=scale,
            color=ROLE_COLOURS[role], image=cam.thumbnail(), wxyz=cam.wxyz(), position=cam.camera_to_world[:3, 3],
            visible=self.toggles[layer].value, thickness=2.0, thickness_units="screen")
        handle.on_click(lambda event, name=cam.name: self._pick(name, event.client))  # type: ignore[misc]
        self.handles.setdefault(layer, []).append(handle)

    def _draw_splats(self) -> None:
        with self.lock:
            for h in self.handles.pop("splats", []):
                h.remove()
            if self.layers.splats is None:
                return
            s = self.layers.splats.above(float(self.min_opacity.value))
            handle = self.server.scene.add_gaussian_splats("/splats", s.centers, s.covariances, s.rgbs, s.opacities,
                                                           visible=self.toggles["splats"].value)
            self.handles["splats"] = [handle]

    def _draw_status(self) -> None:
        L, graph = self.layers, self.graph
        parts = []
        if graph is not None:
            views = graph.views()
            counts = {role: sum(v.role == role for v in views) for role in ("train", "test")}
            parts.append(f"{len(L.cameras)} cameras ({counts['train']} train, {counts['test']} test)")
            if L.splats is not None:
                parts.append(L.splats.label)
        if L.live is not None and graph is not None and graph.splats() is None:
            loss = L.live.get("loss")
            parts.append(f"{L.live['stage']} running: step {L.live['step']}/{L.live['steps']}"
                         + (f", loss {loss:.4f}" if loss is not None else ""))
        self.status.content = " · ".join(parts)

    def _set_visible(self, name: str) -> None:
        for h in self.handles.get(name, []):
            h.visible = self.toggles[name].value

    # --- cameras ---------------------------------------------------------------------------------
    def _camera(self, name: str) -> CameraLayer | None:
        return next((c for c in self.layers.cameras if c.name == name), None)

    def _pick(self, name: str, client) -> None:
        self.camera_choice.value = name  # type: ignore[misc]
        self.go_to(name, client)

    def go_to(self, name: str, client=None) -> None:
        """Move one client's camera (or every client's) to the view ``name``."""
        cam = self._camera(name)
        if cam is None:
            return
        c2w = cam.camera_to_world
        clients = [client] if client is not None else list(self.server.get_clients().values())
        distance = float(np.linalg.norm(self._focus() - c2w[:3, 3])) or 1.0
        for c in clients:
            with c.atomic():
                c.camera.fov = cam.vertical_fov
                c.camera.position = c2w[:3, 3]
                c.camera.up_direction = -c2w[:3, 1]
                c.camera.look_at = c2w[:3, 3] + c2w[:3, 2] * distance

    def render_selected(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Render the chosen view with recon's renderer; show it beside the photo. Returns both."""
        cam = self._camera(self.camera_choice.value)
        if cam is None or self.layers.splats is None or self.graph is None:
            self.render_note.content = "_nothing to render yet: no splats or no camera_"
            return None
        self.render_note.content = f"_rendering {cam.name}..._"
        start = time.perf_counter()
        image, backend = render_view(self.graph, cam, self.device)
        photo = None
        if cam.image:
            from recon.io import images as image_io

            pixels = image_io.read_image(Path(cam.image))
            photo = image_io.to_uint8(image_io.downsample(pixels, max(1, pixels.shape[1] // image.shape[1])))
            self.photo_image.image, self.photo_image.visible = photo, True
        else:
            self.photo_image.visible = False
        self.render_image.image, self.render_image.visible = image, True
        self.render_note.content = (f"{cam.name} ({cam.role}): {image.shape[1]}x{image.shape[0]}, {backend}, "
                                    f"{time.perf_counter() - start:.2f} s")
        return image, photo

    # --- serving ---------------------------------------------------------------------------------
    def start_polling(self, seconds: float = 0.5) -> None:
        def loop() -> None:
            while not self._stop.wait(seconds):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="recon-viewer-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.server.stop()


def camera_table(cameras: list[CameraLayer]) -> str:
    """An HTML table with one row per camera: name, role and size."""
    rows = "".join(
        f'<tr class="recon-camera"><td>{html.escape(c.name)}</td>'
        f'<td style="color: rgb{ROLE_COLOURS.get(c.role, ROLE_COLOURS["unused"])}">{c.role}</td>'
        f"<td>{c.width}x{c.height}</td></tr>" for c in cameras)
    return f'<table class="recon-cameras" style="font-size: 0.8em; width: 100%">{rows}</table>'


def render_view(graph: SceneGraph, cam: CameraLayer, device: str = "auto") -> tuple[np.ndarray, str]:
    """The splats seen from ``cam`` as uint8 RGB [H, W, 3] (smaller on the CPU), and the backend used."""
    from recon.devices import resolve_device
    from recon.io.images import to_uint8
    from recon.live import load_scene_splats
    from recon.render import resolve_backend
    from recon.render.scene import render_camera

    dev = resolve_device(device)
    splats, kind = load_scene_splats(graph, dev)
    scale = 1.0 if dev.type == "cuda" else 1.0 / max(1, -(-cam.width // CPU_RENDER_WIDTH))
    image = render_camera(splats, kind, graph.node(cam.node, Camera), scale)
    return to_uint8(image), resolve_backend("auto", dev)


def _trimesh(vertices: np.ndarray, faces: np.ndarray | None, colours: np.ndarray | None):
    import trimesh

    return trimesh.Trimesh(vertices=vertices, faces=faces, process=False,
                           vertex_colors=colours if colours is not None else (180, 180, 180, 255))


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1
