"""Solid (3D) procedural textures: albedo as a function of the surface point.

Solid textures need no UV maps and are exactly defined everywhere on the
surface, so every view of a synthetic scene agrees on the colour of a point.
Points are in the object's frame (inside the unit sphere).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _hash(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random values in [0, 1) per integer lattice point."""
    h = (ix.astype(np.int64) * 73856093) ^ (iy.astype(np.int64) * 19349663) ^ (iz.astype(np.int64) * 83492791)
    h = (h ^ (seed * 2654435761)) & 0xFFFFFFFF
    h = ((h >> 16) ^ h) * 0x45D9F3B & 0xFFFFFFFF
    h = ((h >> 16) ^ h) * 0x45D9F3B & 0xFFFFFFFF
    h = (h >> 16) ^ h
    return (h & 0xFFFFFF).astype(np.float64) / float(0x1000000)


def value_noise(p: np.ndarray, seed: int = 0) -> np.ndarray:
    """Smooth lattice noise in [0, 1) at points [N, 3] (one octave, unit lattice)."""
    base = np.floor(p)
    f = p - base
    w = f * f * (3.0 - 2.0 * f)
    i = base.astype(np.int64)
    out = np.zeros(len(p))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                weight = ((w[:, 0] if dx else 1 - w[:, 0]) * (w[:, 1] if dy else 1 - w[:, 1])
                          * (w[:, 2] if dz else 1 - w[:, 2]))
                out += weight * _hash(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed)
    return out


def fractal_noise(p: np.ndarray, octaves: int = 4, seed: int = 0) -> np.ndarray:
    total, amp, norm = np.zeros(len(p)), 1.0, 0.0
    for k in range(octaves):
        total += amp * value_noise(p * (2.0 ** k), seed + k)
        norm += amp
        amp *= 0.5
    return total / norm


def _mix(a, b, t: np.ndarray) -> np.ndarray:
    return np.asarray(a)[None] * (1 - t[:, None]) + np.asarray(b)[None] * t[:, None]


def checker(p: np.ndarray) -> np.ndarray:
    k = (np.floor(p * 6.0).astype(np.int64).sum(axis=1)) % 2
    base = _mix((0.85, 0.2, 0.15), (0.95, 0.9, 0.75), k.astype(np.float64))
    return base * (0.8 + 0.2 * fractal_noise(p * 10.0, 2, 11))[:, None]


def stripes(p: np.ndarray) -> np.ndarray:
    t = 0.5 + 0.5 * np.sin(p[:, 2] * 40.0 + 3.0 * fractal_noise(p * 3.0, 2, 7))
    return _mix((0.1, 0.3, 0.8), (0.9, 0.85, 0.3), t)


def noise(p: np.ndarray) -> np.ndarray:
    n1 = fractal_noise(p * 6.0, 4, 1)
    n2 = fractal_noise(p * 25.0, 2, 2)
    base = _mix((0.15, 0.55, 0.25), (0.95, 0.7, 0.2), n1)
    return base * (0.6 + 0.4 * n2)[:, None]


def wood(p: np.ndarray) -> np.ndarray:
    rings = np.sin(np.linalg.norm(p[:, :2] * np.array([1.0, 0.3]), axis=1) * 60.0 + 6.0 * fractal_noise(p * 4.0, 3, 4))
    t = 0.5 + 0.5 * rings
    return _mix((0.45, 0.25, 0.1), (0.8, 0.55, 0.3), t)


def marble(p: np.ndarray) -> np.ndarray:
    t = 0.5 + 0.5 * np.sin(p[:, 0] * 12.0 + 8.0 * fractal_noise(p * 3.0, 4, 9))
    speck = fractal_noise(p * 40.0, 1, 10)
    return _mix((0.2, 0.2, 0.3), (0.92, 0.92, 0.95), t) * (0.85 + 0.15 * speck)[:, None]


def dots(p: np.ndarray) -> np.ndarray:
    cell = p * 9.0
    frac = cell - np.floor(cell) - 0.5
    ix, iy, iz = np.floor(cell).astype(np.int64).T
    jitter = np.stack([_hash(ix, iy, iz, seed=s) for s in (21, 22, 23)], axis=1) - 0.5
    d = np.linalg.norm(frac - 0.4 * jitter, axis=1)
    hue = _hash(ix, iy, iz, seed=24)
    spot = _mix((0.9, 0.1, 0.5), (0.1, 0.7, 0.9), hue)
    inside = (d < 0.3).astype(np.float64)
    return _mix((0.95, 0.95, 0.9), (0, 0, 0), inside) + spot * inside[:, None]


def platform(p: np.ndarray) -> np.ndarray:
    """Light grey with faint mottling, like the platform objects stand on in DTU and SpaRe."""
    return np.repeat((0.72 + 0.2 * fractal_noise(p * 8.0, 3, 30))[:, None], 3, axis=1)


TEXTURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "checker": checker, "stripes": stripes, "noise": noise, "wood": wood, "marble": marble, "dots": dots,
    "platform": platform,
}
