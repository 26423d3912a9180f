"""Check a COLMAP model's files before pycolmap reads them.

pycolmap trusts its input: a count read from a short file makes it reserve
gigabytes, an id that names nothing aborts in C++ with a message that names
no file. So recon reads the files first, as COLMAP would (the same choice of
files, the same grammar), and checks that every count fits the file, every
camera model is one recon reads, and every id that one record gives another
(image -> camera, 3D point track -> image and 2D point, frame -> rig and
images) names something that exists. The first problem is one line naming
the file and the record (binary) or line (text).

Files, as COLMAP chooses them: ``cameras``, ``images`` and ``points3D``,
binary (``.bin``) when all three are, else text (``.txt``); ``rigs`` and
``frames`` of the same kind, both or neither (COLMAP 3.12 and later write
them; without them every image is its own frame of a one-camera rig).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recon.errors import InputError

# The perspective camera models recon reads: COLMAP's model id -> (name, number of parameters).
PERSPECTIVE_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    6: ("FULL_OPENCV", 12),
}
MODEL_IDS = {name: model_id for model_id, (name, _) in PERSPECTIVE_MODELS.items()}
SENSOR_TYPES = {0: "CAMERA", 1: "IMU"}
NO_POINT = 2**64 - 1  # COLMAP's invalid 3D point id (-1 in text files)
PARTS = ("cameras", "images", "points3D")


@dataclass
class Image:
    camera: int
    name: str
    points: np.ndarray  # uint64 [P]: the 3D point id of each 2D point (NO_POINT: none)


@dataclass
class Model:
    """The ids of a model and what each record says of the others; ``where`` names each record for errors."""

    cameras: set[int] = field(default_factory=set)
    images: dict[int, Image] = field(default_factory=dict)
    # Every 3D point's track, flat: element k says 3D point track_point[k] is 2D point track_index[k] of
    # image track_image[k].
    track_point: list[np.ndarray] = field(default_factory=list)
    track_image: list[np.ndarray] = field(default_factory=list)
    track_index: list[np.ndarray] = field(default_factory=list)
    rigs: dict[int, set[tuple[str, int]]] | None = None  # rig -> its sensors (type, id)
    frames: dict[int, tuple[int, list[tuple[str, int, int]]]] | None = None  # frame -> (rig, [(type, sensor, data id)])
    where: dict[tuple[str, int], str] = field(default_factory=dict)


def model_files(folder: Path) -> dict[str, Path]:
    """The files pycolmap will read in ``folder``, by part (cameras, images, points3D, and rigs, frames if present)."""
    for suffix in (".bin", ".txt"):
        if all((folder / f"{part}{suffix}").is_file() for part in PARTS):
            files = {part: folder / f"{part}{suffix}" for part in PARTS}
            extra = {part: folder / f"{part}{suffix}" for part in ("rigs", "frames")
                     if (folder / f"{part}{suffix}").is_file()}
            if len(extra) == 1:
                (present,) = extra.values()
                missing = "frames" if "rigs" in extra else "rigs"
                raise InputError(f"{present}: a model with {present.name} needs {missing}{suffix} too")
            return {**files, **extra}
    raise InputError(f"{folder}: a COLMAP model needs cameras, images and points3D, all .bin or all .txt")


def check_model(folder: Path) -> None:
    """Raise :class:`InputError` on the first problem that would stop pycolmap or make it misread ``folder``."""
    files = model_files(folder)
    model = Model()
    read = _BinaryReader if files["cameras"].suffix == ".bin" else _TextReader
    if "rigs" in files:
        model.rigs, model.frames = {}, {}
        read(files["rigs"]).rigs(model)
    read(files["cameras"]).cameras(model)
    if "frames" in files:
        read(files["frames"]).frames(model)
    read(files["images"]).images(model)
    read(files["points3D"]).points(model)
    _check_references(model, files)


def _check_references(model: Model, files: dict[str, Path]) -> None:
    for image_id, image in model.images.items():
        if image.camera not in model.cameras:
            raise InputError(f"{model.where[('image', image_id)]}: camera {image.camera} is not in "
                             f"{files['cameras'].name}")
    _check_tracks(model, files)
    if model.frames is None or model.rigs is None:
        return
    framed: dict[int, int] = {}  # image -> its camera, as its frame says
    for frame_id, (rig, data) in model.frames.items():
        where = model.where[("frame", frame_id)]
        if rig not in model.rigs:
            raise InputError(f"{where}: rig {rig} is not in {files['rigs'].name}")
        for kind, sensor, data_id in data:
            if (kind, sensor) not in model.rigs[rig]:
                raise InputError(f"{where}: sensor {kind} {sensor} is not in rig {rig}")
            if kind == "CAMERA":
                if data_id not in model.images:
                    raise InputError(f"{where}: image {data_id} is not in {files['images'].name}")
                framed[data_id] = sensor
    for rig, sensors in model.rigs.items():
        for kind, sensor in sensors:
            if kind == "CAMERA" and sensor not in model.cameras:
                raise InputError(f"{model.where[('rig', rig)]}: camera {sensor} is not in {files['cameras'].name}")
    for image_id, image in model.images.items():
        if framed.get(image_id) != image.camera:
            problem = "is in no frame" if image_id not in framed else f"is in a frame as camera {framed[image_id]}"
            raise InputError(f"{model.where[('image', image_id)]}: {problem} of {files['frames'].name}")


def _check_tracks(model: Model, files: dict[str, Path]) -> None:
    """Every track element names a 2D point that names its 3D point, and every such 2D point is in that track."""
    ids = np.array(sorted(model.images), dtype=np.int64)
    counts = np.array([len(model.images[i].points) for i in ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])[:-1]
    names = np.concatenate([model.images[i].points for i in ids] + [np.zeros(0, np.uint64)])
    point = np.concatenate(model.track_point + [np.zeros(0, np.uint64)])
    image = np.concatenate(model.track_image + [np.zeros(0, np.int64)]).astype(np.int64)
    index = np.concatenate(model.track_index + [np.zeros(0, np.int64)]).astype(np.int64)
    slot = np.clip(np.searchsorted(ids, image), 0, max(len(ids) - 1, 0))
    known = (ids[slot] == image) if len(ids) else np.zeros(len(image), dtype=bool)
    inside = known & (index < counts[slot] if len(ids) else known)
    named = np.zeros(len(point), dtype=bool)
    named[inside] = names[offsets[slot[inside]] + index[inside]] == point[inside]
    if not named.all():
        k = int(np.argmin(named))
        where = model.where[("point", int(point[k]))]
        if not known[k]:
            raise InputError(f"{where}: its track names image {image[k]}, which is not in {files['images'].name}")
        raise InputError(f"{where}: its track names 2D point {index[k]} of image {image[k]} "
                         f"({model.images[int(image[k])].name}), which does not name this 3D point")
    in_tracks = np.unique((image.astype(np.uint64) << np.uint64(32)) | index.astype(np.uint64))
    for image_id in ids:
        valid = np.flatnonzero(model.images[image_id].points != np.uint64(NO_POINT))
        pairs = (np.uint64(image_id) << np.uint64(32)) | valid.astype(np.uint64)
        missing = ~np.isin(pairs, in_tracks)
        if missing.any():
            k = int(valid[np.argmax(missing)])
            raise InputError(f"{model.where[('image', int(image_id))]}: 2D point {k} names 3D point "
                             f"{model.images[image_id].points[k]}, whose track in {files['points3D'].name} "
                             f"does not hold it")


def _add(model: Model, kind: str, ident: int, where: str) -> None:
    """Record ``where`` names ``kind`` ``ident``; a second record of the same id is an error."""
    if (kind, ident) in model.where:
        raise InputError(f"{where}: {kind} {ident} is listed twice (first {model.where[(kind, ident)]})")
    model.where[(kind, ident)] = where


def _add_track(model: Model, point: int, images: np.ndarray, indices: np.ndarray) -> None:
    model.track_point.append(np.full(len(images), point, dtype=np.uint64))
    model.track_image.append(np.asarray(images, dtype=np.int64))
    model.track_index.append(np.asarray(indices, dtype=np.int64))


def _camera_params(model: int | str, where: str) -> int:
    """The number of parameters of camera model ``model`` (COLMAP's id or name), if recon reads it."""
    model_id = MODEL_IDS.get(model, -1) if isinstance(model, str) else model
    if model_id not in PERSPECTIVE_MODELS:
        raise InputError(f"{where}: camera model {model} is not supported (perspective pinhole/OpenCV models only: "
                         f"{', '.join(name for name, _ in PERSPECTIVE_MODELS.values())})")
    return PERSPECTIVE_MODELS[model_id][1]


class _BinaryReader:
    """COLMAP's little-endian binary files, read with every count checked against the bytes left."""

    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        self.pos = 0
        self.record = "header"

    def _take(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise InputError(f"{self.path}: file ends inside {self.record} (byte {self.pos} of {len(self.data)}); "
                             f"truncated or not a COLMAP {self.path.stem} file")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def _count(self, fmt: str, each: int, what: str) -> int:
        """A count read as ``fmt`` of items at least ``each`` bytes long, which must fit in what is left."""
        (n,) = self._take(fmt)
        if n * each > len(self.data) - self.pos:
            raise InputError(f"{self.path}: {self.record} says {n} {what}, more than its {len(self.data)} bytes "
                             f"can hold; truncated or not a COLMAP {self.path.stem} file")
        return n

    def _end(self) -> None:
        if self.pos != len(self.data):
            raise InputError(f"{self.path}: {len(self.data) - self.pos} bytes after the last record; "
                             f"not a COLMAP {self.path.stem} file")

    def _sensor(self) -> tuple[str, int]:
        kind, sensor = self._take("iI")
        if kind not in SENSOR_TYPES:
            raise InputError(f"{self.path}: {self.record}: sensor type {kind} is not one COLMAP knows")
        return SENSOR_TYPES[kind], sensor

    def cameras(self, model: Model) -> None:
        for i in range(self._count("Q", 24, "cameras")):
            self.record = f"camera record {i}"
            camera_id, model_id, width, height = self._take("IiQQ")
            where = f"{self.path}: camera {camera_id}"
            self._take(f"{_camera_params(model_id, where)}d")
            if width < 1 or height < 1:
                raise InputError(f"{where}: size {width}x{height} must be at least 1x1")
            _add(model, "camera", camera_id, where)
            model.cameras.add(camera_id)
        self._end()

    def rigs(self, model: Model) -> None:
        assert model.rigs is not None
        for i in range(self._count("Q", 8, "rigs")):
            self.record = f"rig record {i}"
            rig_id, sensors = self._take("II")
            _add(model, "rig", rig_id, f"{self.path}: rig {rig_id}")
            model.rigs[rig_id] = {self._sensor()} if sensors else set()
            for _ in range(max(sensors - 1, 0)):
                model.rigs[rig_id].add(self._sensor())
                (has_pose,) = self._take("B")
                if has_pose:
                    self._take("7d")
        self._end()

    def frames(self, model: Model) -> None:
        assert model.frames is not None
        for i in range(self._count("Q", 64, "frames")):
            self.record = f"frame record {i}"
            frame_id, rig, *_ = self._take("II7d")
            data = []
            for _ in range(self._count("I", 16, "data ids")):
                kind, sensor = self._sensor()
                data.append((kind, sensor, self._take("Q")[0]))
            _add(model, "frame", frame_id, f"{self.path}: frame {frame_id}")
            model.frames[frame_id] = (rig, data)
        self._end()

    def images(self, model: Model) -> None:
        for i in range(self._count("Q", 73, "images")):
            self.record = f"image record {i}"
            image_id, *_, camera = self._take("I7dI")
            end = self.data.find(b"\0", self.pos)
            if end < 0:
                raise InputError(f"{self.path}: {self.record}: its name never ends; truncated or not a COLMAP "
                                 f"images file")
            name = _name(self.data[self.pos:end], f"{self.path}: {self.record}")
            self.pos = end + 1
            where = f"{self.path}: image {image_id} ({name})"
            count = self._count("Q", 24, "2D points")
            points = np.frombuffer(self.data, dtype="<u8", count=3 * count, offset=self.pos)[2::3].astype(np.uint64)
            self.pos += 24 * count
            _add(model, "image", image_id, where)
            model.images[image_id] = Image(camera, name, points)
        self._end()

    def points(self, model: Model) -> None:
        for i in range(self._count("Q", 51, "3D points")):
            self.record = f"3D point record {i}"
            (point_id,) = self._take("Q3d3Bd")[:1]
            count = self._count("Q", 8, "track elements")
            flat = np.frombuffer(self.data, dtype="<u4", count=2 * count, offset=self.pos)
            self.pos += 8 * count
            _add(model, "point", point_id, f"{self.path}: 3D point {point_id}")
            _add_track(model, point_id, flat[0::2], flat[1::2])
        self._end()


class _TextReader:
    """COLMAP's text files: ``#`` comments and blank lines skipped, fields separated by single spaces."""

    def __init__(self, path: Path):
        self.path = path
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        self.lines = [line.strip(" \t\n\v\f\r") for line in text.split("\n")]

    def _records(self):
        """(line number, fields) of every line that is not blank or a comment."""
        for number, line in enumerate(self.lines, start=1):
            if line and not line.startswith("#"):
                yield number, _Fields(self.path, number, line)

    def cameras(self, model: Model) -> None:
        for number, f in self._records():
            camera_id = f.integer("CAMERA_ID")
            name = f.word("MODEL")
            where = f"{self.path}: line {number}: camera {camera_id}"
            params = _camera_params(name, where)
            width, height = f.integer("WIDTH", 2**64), f.integer("HEIGHT", 2**64)
            if width < 1 or height < 1:
                raise InputError(f"{where}: size {width}x{height} must be at least 1x1")
            f.numbers(params, "PARAMS")
            f.end()
            _add(model, "camera", camera_id, where)
            model.cameras.add(camera_id)

    def rigs(self, model: Model) -> None:
        assert model.rigs is not None
        for number, f in self._records():
            rig_id, sensors = f.integer("RIG_ID"), f.integer("NUM_SENSORS")
            _add(model, "rig", rig_id, f"{self.path}: line {number}: rig {rig_id}")
            model.rigs[rig_id] = {f.sensor()} if sensors else set()
            for _ in range(max(sensors - 1, 0)):
                model.rigs[rig_id].add(f.sensor())
                if f.word("HAS_POSE") == "1":
                    f.numbers(7, "SENSOR_FROM_RIG")
            f.end()

    def frames(self, model: Model) -> None:
        assert model.frames is not None
        for number, f in self._records():
            frame_id, rig = f.integer("FRAME_ID"), f.integer("RIG_ID")
            f.numbers(7, "RIG_FROM_WORLD")
            data = []
            for _ in range(f.integer("NUM_DATA_IDS")):
                kind, sensor = f.sensor()
                data.append((kind, sensor, f.integer("DATA_ID", 2**64)))
            f.end()
            _add(model, "frame", frame_id, f"{self.path}: line {number}: frame {frame_id}")
            model.frames[frame_id] = (rig, data)

    def images(self, model: Model) -> None:
        number = 0
        while number < len(self.lines):
            line = self.lines[number]
            number += 1
            if not line or line.startswith("#"):
                continue
            f = _Fields(self.path, number, line)
            image_id = f.integer("IMAGE_ID")
            f.numbers(7, "QW QX QY QZ TX TY TZ")
            camera = f.integer("CAMERA_ID")
            name = f.word("NAME")
            f.end()
            where = f"{self.path}: line {number}: image {image_id} ({name})"
            if number >= len(self.lines) or (number == len(self.lines) - 1 and not self.lines[number]):
                raise InputError(f"{where}: no POINTS2D line follows (COLMAP needs one, empty without points)")
            points_line = self.lines[number]
            number += 1
            points = []
            if points_line:
                p = _Fields(self.path, number, points_line)
                while not p.done():
                    p.numbers(2, "X Y")
                    p3d = p.word("POINT3D_ID")
                    points.append(NO_POINT if p3d == "-1" else p.as_integer(p3d, "POINT3D_ID", 2**64 - 1))
            _add(model, "image", image_id, where)
            model.images[image_id] = Image(camera, name, np.array(points, dtype=np.uint64))

    def points(self, model: Model) -> None:
        for number, f in self._records():
            point_id = f.integer("POINT3D_ID", 2**64 - 1)
            f.numbers(3, "X Y Z")
            for channel in "RGB":
                if f.integer(channel) > 255:
                    raise InputError(f"{self.path}: line {number}: colour {channel} must be 0..255")
            f.numbers(1, "ERROR")
            track = []
            while not f.done():
                track.append((f.integer("IMAGE_ID"), f.integer("POINT2D_IDX")))
            _add(model, "point", point_id, f"{self.path}: line {number}: 3D point {point_id}")
            pairs = np.array(track, dtype=np.int64).reshape(-1, 2)
            _add_track(model, point_id, pairs[:, 0], pairs[:, 1])


class _Fields:
    """The fields of one text line, taken in order; each problem names the file, the line and the field."""

    def __init__(self, path: Path, number: int, line: str):
        self.where = f"{path}: line {number}"
        self.items = line.split(" ")
        if "" in self.items:
            raise InputError(f"{self.where}: fields must be separated by single spaces")
        self.next = 0

    def done(self) -> bool:
        return self.next == len(self.items)

    def end(self) -> None:
        if not self.done():
            raise InputError(f"{self.where}: unexpected field {self.items[self.next]!r} after the last one")

    def word(self, name: str) -> str:
        if self.done():
            raise InputError(f"{self.where}: {name} is missing")
        self.next += 1
        return self.items[self.next - 1]

    def as_integer(self, text: str, name: str, limit: int = 2**32) -> int:
        """``text`` as a whole number below ``limit`` (the size of COLMAP's field: 32 bits unless said)."""
        if not (text.isascii() and text.isdigit()) or int(text) >= limit:
            raise InputError(f"{self.where}: {name} must be a whole number from 0 to {limit - 1}, got {text!r}")
        return int(text)

    def integer(self, name: str, limit: int = 2**32) -> int:
        return self.as_integer(self.word(name), name, limit)

    def numbers(self, count: int, name: str) -> None:
        for _ in range(count):
            text = self.word(name)
            try:
                float(text)
            except ValueError:
                raise InputError(f"{self.where}: {name} must be numbers, got {text!r}") from None

    def sensor(self) -> tuple[str, int]:
        kind = self.word("SENSOR_TYPE")
        if kind not in SENSOR_TYPES.values():
            raise InputError(f"{self.where}: sensor type {kind!r} is not one COLMAP knows")
        return kind, self.integer("SENSOR_ID")


def _name(raw: bytes, where: str) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{where}: image name is not UTF-8") from None
    if not name:
        raise InputError(f"{where}: image name is empty")
    return name
