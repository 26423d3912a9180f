"""The reference rasterizer against a per-pixel loop and closed forms; gsplat against the reference (GPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recon.render import depth_to_normals, render, sh
from recon.render import reference as ref
from recon.scene.camera import intrinsics_matrix, look_at


def cameras(n: int = 2, width: int = 40, height: int = 30, dtype=torch.float64):
    eyes = [np.array([0.0, -4.0, 1.0]), np.array([3.0, -3.0, 1.5]), np.array([-2.0, -3.5, -1.0])][:n]
    vm = torch.tensor(np.stack([look_at(e, np.zeros(3)) for e in eyes]), dtype=dtype)
    K = torch.tensor(intrinsics_matrix(1.5 * width, 1.5 * width, width / 2, height / 2), dtype=dtype)
    K = K[None].repeat(n, 1, 1)
    return vm, K


def random_splats(n: int, seed: int = 0, dtype=torch.float64, sh_rest: int = 15) -> dict:
    g = torch.Generator().manual_seed(seed)
    s = {
        "means": torch.randn(n, 3, generator=g, dtype=dtype) * 0.6,
        "quats": torch.randn(n, 4, generator=g, dtype=dtype),
        "scales": torch.log(torch.rand(n, 3, generator=g, dtype=dtype) * 0.15 + 0.03),
        "opacities": torch.randn(n, generator=g, dtype=dtype) * 2,
        "sh0": torch.randn(n, 1, 3, generator=g, dtype=dtype) * 0.5,
    }
    if sh_rest:
        s["shN"] = torch.randn(n, sh_rest, 3, generator=g, dtype=dtype) * 0.2
    return s


def brute_force(kind, means2d, depth, opac, valid, colors, pixel_weight, width, height, background):
    """gsplat's per-pixel loop, written out literally."""
    img = np.zeros((height, width, 3))
    alpha_img = np.zeros((height, width))
    median = np.zeros((height, width))
    order = [i for i in np.argsort(depth, kind="stable") if valid[i]]
    for y in range(height):
        for x in range(width):
            T, out, med = 1.0, np.zeros(3), 0.0
            for i in order:
                sigma = pixel_weight(i, x + 0.5, y + 0.5)
                if sigma is None:
                    continue
                alpha = min(0.999, opac[i] * math.exp(-sigma))
                if sigma < 0 or alpha < 1 / 255:
                    continue
                next_t = T * (1 - alpha)
                if next_t <= 1e-4:
                    break
                out += colors[i] * alpha * T
                if T > 0.5:
                    med = depth[i]
                T = next_t
            img[y, x] = out + T * background
            alpha_img[y, x] = 1 - T
            median[y, x] = med
    return img, alpha_img, median


@pytest.mark.parametrize("kind", ["3dgs", "2dgs"])
def test_reference_matches_a_per_pixel_loop(kind):
    width, height = 37, 21  # not a multiple of the tile size
    vm, K = cameras(1, width, height)
    s = random_splats(40, seed=3, sh_rest=0)
    scales, opac = torch.exp(s["scales"]), torch.sigmoid(s["opacities"])
    colors = sh.sh0_to_rgb(s["sh0"][:, 0]).clamp_min(0)
    bg = torch.tensor([[0.2, 0.3, 0.4]], dtype=torch.float64)
    out = ref.rasterize(s["means"], s["quats"], scales, opac, colors, vm, K, width, height, kind=kind, backgrounds=bg)
    if kind == "3dgs":
        m2d, con, z, o, _, valid = ref.project_3dgs(s["means"], s["quats"], scales, opac, vm, K, width, height, 0.01,
                                                    1e10, 0.3, False)

        def weight(i, px, py):
            dx, dy = m2d[0, i, 0].item() - px, m2d[0, i, 1].item() - py
            a, b, c = con[0, i].tolist()
            return 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    else:
        m2d, M, z, _, _, valid = ref.project_2dgs(s["means"], s["quats"], scales, vm, K, width, height, 0.01, 1e10)
        o = opac[None]

        def weight(i, px, py):
            m = M[0, i].numpy()
            cross = np.cross(px * m[2] - m[0], py * m[2] - m[1])
            if cross[2] == 0:
                return None
            s3 = (cross[0] / cross[2]) ** 2 + (cross[1] / cross[2]) ** 2
            d = m2d[0, i].numpy() - (px, py)
            return 0.5 * min(s3, 2.0 * float(d @ d))
    img, alpha, median = brute_force(kind, m2d[0], z[0].numpy(), o[0].numpy(), valid[0].numpy(), colors.numpy(), weight,
                                     width, height, bg[0].numpy())
    np.testing.assert_allclose(out["colors"][0].numpy(), img, atol=1e-10)
    np.testing.assert_allclose(out["alphas"][0, ..., 0].numpy(), alpha, atol=1e-10)
    np.testing.assert_allclose(out["median_depths"][0, ..., 0].numpy(), median, atol=1e-10)
    assert (alpha > 0.2).mean() > 0.05  # the scene is not empty


def test_isotropic_gaussian_projects_to_the_closed_form():
    f, z, s, eps = 100.0, 4.0, 0.2, 0.3
    vm = torch.eye(4, dtype=torch.float64)[None]
    K = torch.tensor(intrinsics_matrix(f, f, 50, 40), dtype=torch.float64)[None]
    means = torch.tensor([[0.0, 0.0, z]], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64)
    scales = torch.full((1, 3), s, dtype=torch.float64)
    opacities = torch.ones(1, dtype=torch.float64) * 0.9
    m2d, conic, _, _, radii, valid = ref.project_3dgs(means, quats, scales, opacities, vm, K, 100, 80, 0.01, 1e10, eps,
                                                      False)
    var = (f * s / z) ** 2 + eps
    np.testing.assert_allclose(m2d[0, 0].numpy(), [50, 40])
    np.testing.assert_allclose(conic[0, 0].numpy(), [1 / var, 0, 1 / var], rtol=1e-12)
    extend = min(3.33, math.sqrt(2 * math.log(0.9 * 255)))
    assert radii[0, 0].tolist() == [math.ceil(extend * math.sqrt(var))] * 2 and bool(valid[0, 0])


def test_surfel_facing_the_camera():
    vm = torch.eye(4, dtype=torch.float64)[None]
    K = torch.tensor(intrinsics_matrix(100, 100, 20, 20), dtype=torch.float64)[None]
    splats = {"means": torch.tensor([[0.0, 0.0, 3.0]], dtype=torch.float64),
              "quats": torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64),
              "scales": torch.log(torch.tensor([[0.3, 0.3, 1e-3]], dtype=torch.float64)),
              "opacities": torch.logit(torch.tensor([0.8], dtype=torch.float64)),
              "sh0": sh.rgb_to_sh0(torch.tensor([[[0.2, 0.5, 0.9]]], dtype=torch.float64))}
    out = render(splats, vm, K, 40, 40, kind="2dgs", backend="reference")
    centre = (20, 20)  # pixel (19.5..20.5) holds the centre at 20.0, half a pixel off its middle
    u = 0.5 / (100 * 0.3 / 3.0)  # half a pixel in surfel units
    expected_alpha = 0.8 * math.exp(-0.5 * min(2 * u * u, 2 * 0.5))
    assert out.alpha[0, centre[1], centre[0], 0].item() == pytest.approx(expected_alpha, rel=1e-9)
    np.testing.assert_allclose(out.rgb[0, 20, 20].numpy(), expected_alpha * np.array([0.2, 0.5, 0.9]), rtol=1e-9)
    assert out.depth[0, 20, 20, 0].item() == pytest.approx(3.0)
    np.testing.assert_allclose(out.normals[0, 20, 20].numpy() / expected_alpha, [0, 0, -1], atol=1e-12)


def test_gradients_match_finite_differences():
    vm, K = cameras(2, 12, 10)
    s = random_splats(6, seed=7, sh_rest=3)
    s["scales"] = s["scales"] + 1.0  # large splats so every parameter moves many pixels
    for kind in ("3dgs", "2dgs"):
        keys = ["means", "scales", "opacities", "sh0", "shN", "quats"]

        def f(*values, keys=keys, kind=kind):
            params = dict(zip(keys, values))
            out = render(params, vm, K, 12, 10, kind=kind, sh_degree=1, backend="reference")
            return (out.rgb * torch.linspace(0.5, 1.5, 3, dtype=torch.float64)).sum() + out.depth.sum() * 0.1

        inputs = tuple(s[k].clone().requires_grad_(True) for k in keys)
        assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-4, rtol=1e-3)


def test_spherical_harmonics_degree_zero_is_the_base_colour():
    rgb = torch.tensor([[0.1, 0.6, 0.9]])
    dirs = torch.randn(5, 3)
    out = sh.evaluate(0, dirs, sh.rgb_to_sh0(rgb)[:, None].expand(5, 1, 3))
    np.testing.assert_allclose(out.numpy(), rgb.expand(5, 3).numpy(), atol=1e-7)
    basis = sh.basis(3, torch.nn.functional.normalize(torch.randn(20000, 3, dtype=torch.float64), dim=-1))
    gram = basis.T @ basis / len(basis) * 4 * math.pi  # orthonormal on the sphere
    np.testing.assert_allclose(gram.numpy(), np.eye(16), atol=0.1)


def test_depth_to_normals_of_a_plane():
    vm, K = cameras(1, 20, 16)
    depth = torch.full((1, 16, 20, 1), 4.0, dtype=torch.float64)
    n = depth_to_normals(depth, vm, K)
    axis = vm[0, 2, :3]  # viewing direction in the world
    np.testing.assert_allclose(n[0, 5:10, 5:10].reshape(-1, 3).numpy(), (-axis).expand(25, 3).numpy(), atol=1e-9)


@pytest.mark.parametrize("backend", ["reference", pytest.param("gsplat", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("kind", ["3dgs", "2dgs"])
def test_no_splats_render_the_background(kind, backend):
    """Every splat pruned: the background, alpha and depth 0 (gsplat itself divides by the number of splats)."""
    device = "cuda" if backend == "gsplat" else "cpu"
    vm, K = cameras(2, 20, 15, dtype=torch.float32)
    empty = {k: v[:0].to(device) for k, v in random_splats(4, dtype=torch.float32).items()}
    bg = torch.tensor([[0.2, 0.4, 0.6], [1.0, 0.0, 0.5]], device=device)
    out = render(empty, vm.to(device), K.to(device), 20, 15, kind=kind, sh_degree=3, backgrounds=bg, backend=backend)
    assert out.rgb.shape == (2, 15, 20, 3) and torch.equal(out.rgb[:, 7, 9], bg)
    assert not out.alpha.any() and not out.depth.any() and out.rgb.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["3dgs", "2dgs"])
def test_gsplat_matches_the_reference(kind):
    width, height = 64, 48
    vm, K = cameras(3, width, height, dtype=torch.float32)
    s = random_splats(300, seed=11, dtype=torch.float32)
    if kind == "2dgs":
        s["scales"] = s["scales"] + 0.5  # footprints larger than the 2D filter, where the two agree exactly
    bg = torch.rand(3, 3)
    grads = {}
    outs = {}
    for backend, device in (("reference", "cpu"), ("gsplat", "cuda")):
        params = {k: v.to(device).clone().requires_grad_(True) for k, v in s.items()}
        out = render(params, vm.to(device), K.to(device), width, height, kind=kind, sh_degree=3,
                     backgrounds=bg.to(device), backend=backend)
        weights = torch.linspace(0.5, 1.5, 3, device=device)
        loss = (out.rgb * weights).sum() + 0.05 * (out.depth * out.alpha).sum()
        loss.backward()
        outs[backend] = out
        grads[backend] = {k: v.grad.cpu() for k, v in params.items()}
    r, g = outs["reference"], outs["gsplat"]
    assert (r.rgb - g.rgb.cpu()).abs().mean() < 1e-4 and (r.rgb - g.rgb.cpu()).abs().max() < 2e-2
    assert (r.alpha - g.alpha.cpu()).abs().mean() < 1e-4
    both = (r.alpha > 0.5) & (g.alpha.cpu() > 0.5)
    assert (r.depth - g.depth.cpu())[both].abs().mean() < 1e-3
    if kind == "2dgs":
        assert (r.median_depth - g.median_depth.cpu())[both].abs().mean() < 1e-2
        assert (r.normals - g.normals.cpu()).abs().mean() < 1e-3
    for key in s:
        a, b = grads["reference"][key], grads["gsplat"][key]
        rel = (a - b).norm() / a.norm().clamp_min(1e-12)
        assert rel < 2e-2, (key, float(rel))


def test_pull_push_keeps_the_covered_pixels_and_extends_the_nearest_of_them_into_the_holes():
    from recon.render.fill import pull_push

    image = torch.zeros(16, 20, 3)
    image[:8, :8] = torch.tensor([0.9, 0.1, 0.1])  # red above
    image[8:, :8] = torch.tensor([0.1, 0.1, 0.9])  # blue below
    weight = torch.zeros(16, 20)
    weight[:, :8] = 1.0  # the right 12 columns are a hole
    out = pull_push(image, weight)
    assert torch.equal(out[:, :8], image[:, :8])
    assert float(out[1, 10, 0]) > float(out[1, 10, 2]) and float(out[14, 10, 2]) > float(out[14, 10, 0])
    assert bool(((out >= 0) & (out <= 1)).all())  # a weighted mean of the image: within its range
    assert torch.equal(pull_push(image, torch.zeros(16, 20)), torch.zeros(16, 20, 3))
    for height, width in ((7, 9), (33, 17), (5, 64)):  # an image of one colour extends as itself, whatever its size
        weight = torch.zeros(height, width)
        weight[:, :2] = 1.0
        grey = torch.full((height, width, 3), 0.5)
        assert torch.allclose(pull_push(grey, weight), grey)


def test_unseen_pixels_are_those_a_sideways_camera_sees_past_the_training_view():
    """A wall at depth 4 faces a training camera; a held-out camera 1 unit to its right sees a strip of the wall beyond
    the training view's right edge, f * 1 / 4 pixels wide."""
    from recon.render.fill import unseen

    width, height, f = 40, 30, 40.0
    K = torch.tensor(intrinsics_matrix(f, f, width / 2, height / 2), dtype=torch.float32)
    train = torch.eye(4)
    held_out = torch.eye(4)
    held_out[0, 3] = -1.0  # world-to-camera: the camera centre at x = +1
    depth, alpha = torch.full((height, width, 1), 4.0), torch.ones(height, width, 1)
    hole = unseen(depth, alpha, held_out, K, train[None], K[None], width, height)
    assert bool(hole[:, width - 10:].all()) and not bool(hole[:, : width - 10].any())
    # Where the render is empty the point lies at the median depth of the rest.
    alpha[:, 20:] = 0.0
    depth[:, 20:] = 0.0
    assert torch.equal(unseen(depth, alpha, held_out, K, train[None], K[None], width, height), hole)
    assert not bool(unseen(depth, torch.zeros_like(alpha), held_out, K, train[None], K[None], width, height).any())


def test_filling_unseen_pixels_changes_only_their_empty_part():
    from recon.render.fill import fill_unseen

    rgb = torch.zeros(12, 16, 3)
    rgb[:, :10] = 0.6
    alpha = torch.ones(12, 16, 1)
    alpha[:, 10:] = 0.0
    alpha[:, 12:] = 0.5  # half covered, by a black splat
    hole = torch.zeros(12, 16, dtype=torch.bool)
    hole[:, 10:] = True
    out = fill_unseen(rgb, alpha, hole)
    assert torch.equal(out[:, :10], rgb[:, :10])
    assert torch.allclose(out[:, 10:12], torch.full((12, 2, 3), 0.6))  # the render around them, extended
    assert torch.allclose(out[:, 12:], torch.full((12, 4, 3), 0.3))  # behind the splat's uncovered half
    assert torch.equal(fill_unseen(rgb, alpha, torch.zeros_like(hole)), rgb)
    # A backdrop the training views saw empty extends as itself: black stays black.
    assert torch.equal(fill_unseen(torch.zeros_like(rgb), torch.zeros_like(alpha), hole), torch.zeros_like(rgb))
