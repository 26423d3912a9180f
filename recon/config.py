"""Run configuration: dataclasses with defaults, YAML presets in ``configs/``, overrides.

A run's config is resolved in three layers: the dataclass defaults below, a
preset (``configs/<name>.yaml``, or any YAML file), then overrides from the
command line (``--views 4`` or ``--set optimize.steps=500``). The resolved
config is written next to the run's outputs as ``config.yaml``. Each stage
reads its own section; a digest of that section (and the seed) decides whether
a finished stage can be reused when a run is repeated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from recon.errors import InputError
from recon.resources import CONFIGS_DIR


@dataclass
class DataConfig:
    """How the input scene is read."""

    downscale: int = 1
    """Integer down-sampling of the images (DTU's protocol uses 4: 1600x1200 -> 400x300)."""
    light: int = 3
    """DTU/SpaRe lighting index 0-6 (3 = all lights on; 7 = DTU's 'max')."""
    strict: bool = False
    """Treat recoverable problems (frames without images, unregistered images) as errors."""
    masks: bool = True
    """Use object masks when the scene has them."""
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
class RunConfig:
    """Everything a run needs; one section per stage."""

    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    preset: str = "default"


def load_config(preset: str = "default", overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults <- preset YAML <- overrides (dotted keys or nested dicts)."""
    cfg = RunConfig()
    path = preset_path(preset)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a preset must be a mapping of sections")
    _apply(cfg, data, str(path))
    cfg.preset = preset
    for key, value in (overrides or {}).items():
        _apply(cfg, _nest(key, value), "command line")
    return cfg


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
            setattr(target, key, _coerce(value, hints[key], f"{where}: {prefix}{key}"))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    options = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise InputError(f"{where} cannot be null")
    for option in options:
        if get_origin(option) is Literal:
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
