"""Real spherical harmonics up to degree 3, the colour model of 3D Gaussian splatting.

Coefficients are ``[..., K, 3]`` with ``K = (degree + 1) ** 2`` in the usual
order (band by band); the colour seen along direction ``d`` is
``max(0, sum_k Y_k(d) c_k + 0.5)``, so a constant colour ``rgb`` is stored as
``sh0 = (rgb - 0.5) / Y_0``.
"""

from __future__ import annotations

import torch
from torch import Tensor

Y0 = 0.28209479177387814
_Y1 = 0.4886025119029199
_Y2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_Y3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
       -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    return (rgb - 0.5) / Y0


def sh0_to_rgb(sh0: Tensor) -> Tensor:
    return sh0 * Y0 + 0.5


def basis(degree: int, dirs: Tensor) -> Tensor:
    """SH basis values [..., (degree+1)^2] for unit directions [..., 3]."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, Y0)]
    if degree >= 1:
        out += [-_Y1 * y, _Y1 * z, -_Y1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [_Y2[0] * x * y, _Y2[1] * y * z, _Y2[2] * (2 * zz - xx - yy), _Y2[3] * x * z, _Y2[4] * (xx - yy)]
    if degree >= 3:
        out += [
            _Y3[0] * y * (3 * xx - yy), _Y3[1] * x * y * z, _Y3[2] * y * (4 * zz - xx - yy),
            _Y3[3] * z * (2 * zz - 3 * xx - 3 * yy), _Y3[4] * x * (4 * zz - xx - yy),
            _Y3[5] * z * (xx - yy), _Y3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def evaluate(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Colour [..., 3] from coefficients [..., K, 3] (the first (degree+1)^2 used) along dirs [..., 3]."""
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    k = (degree + 1) ** 2
    values = (basis(degree, dirs)[..., None] * coeffs[..., :k, :]).sum(dim=-2)
    return torch.clamp_min(values + 0.5, 0.0)
