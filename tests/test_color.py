"""Identity (denoising) and RGB → luminance (colorisation) operators of operators/color.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kornia.color import rgb_to_grayscale
from PIL import Image

import operators
from operators import OperatorError
from operators.color import LUMA_WEIGHTS, remove_colour_cast, rgb_to_luminance


def rand(shape, seed=0, batch=2):
    return torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(3, 5, 7), (1, 4, 4), (2, 3, 9)], ids=str)
def test_identity_is_the_identity(shape):
    op = operators.build("identity", shape)
    x = rand(shape)
    for result in (op.A(x), op.A_adjoint(x), op.A_pinv(x), op.V(op.Vt(x)), op.U(op.Ut(x)), op.svd_apply(x)):
        assert torch.equal(result, x)
    assert torch.equal(op.Vt(x), x.flatten(1))
    assert torch.equal(op.singular_values(), torch.ones(1, x[0].numel(), dtype=torch.float64))
    # A returns a copy, so adding noise in place to y leaves x untouched.
    y = op.A(x)
    y += 1
    assert not torch.equal(y, x)


def test_luminance_known_values():
    pixels = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [-1, -1, -1], [0.5, 0.2, -0.4]]
    pixels = torch.tensor(pixels, dtype=torch.float64)
    x = pixels.T.reshape(1, 3, 1, 6)
    y = rgb_to_luminance(x)
    assert y.shape == (1, 1, 1, 6)
    expected = [0.299, 0.587, 0.114, 1.0, -1.0, 0.299 * 0.5 + 0.587 * 0.2 - 0.114 * 0.4]
    assert torch.allclose(y.flatten(), torch.tensor(expected, dtype=torch.float64), atol=1e-15)


def test_luminance_matches_kornia_and_pil():
    x = torch.rand((2, 3, 6, 8), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = operators.build("gray", (3, 6, 8)).A(x)
    assert torch.allclose(y, rgb_to_grayscale(x), atol=1e-12)
    # PIL's convert('L') is the same BT.601 sum in fixed point, rounded to the nearest integer.
    rgb = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    pil = np.asarray(Image.fromarray(rgb, "RGB").convert("L"), dtype=np.float64)
    ours = rgb_to_luminance(torch.from_numpy(rgb.astype(np.float64)).permute(2, 0, 1)[None])[0, 0].numpy()
    assert np.abs(pil - ours).max() <= 0.5 + 1e-3


def test_gray_svd_basis():
    shape = (3, 4, 5)
    op = operators.build("gray", shape)
    w = torch.tensor(LUMA_WEIGHTS, dtype=torch.float64)
    basis = op.basis[0]
    assert torch.allclose(basis.T @ basis, torch.eye(3, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(basis[:, 0], w / w.norm(), atol=1e-15)
    assert torch.allclose(op.singular_values(), torch.full((1, 20), float(w.norm()), dtype=torch.float64))
    x = rand(shape)
    coeffs = op.Vt(x)
    # The first H·W coefficients are the luminance direction: luminance / ‖w‖, pixel by pixel.
    assert torch.allclose(coeffs[:, :20], op.A(x).flatten(1) / w.norm(), atol=1e-12)
    # The remaining 2·H·W span the chroma directions, which have zero luminance.
    chroma_only = torch.cat([torch.zeros(2, 20, dtype=torch.float64), coeffs[:, 20:]], dim=1)
    assert op.A(op.V(chroma_only)).abs().max() < 1e-14
    assert torch.allclose(op.V(coeffs), x, atol=1e-14)


def test_gray_adjoint_and_pinv_match_the_dense_matrix():
    shape = (3, 2, 3)
    op = operators.build("gray", shape)
    n = 18
    dense = op.A(torch.eye(n, dtype=torch.float64).reshape(n, *shape)).reshape(n, -1).T
    assert dense.shape == (6, 18)
    y = rand((1, 2, 3), seed=2)
    assert torch.allclose(op.A_adjoint(y).flatten(1), y.flatten(1) @ dense, atol=1e-15)
    assert torch.allclose(op.A_pinv(y).flatten(1), y.flatten(1) @ torch.linalg.pinv(dense).T, atol=1e-12)
    # The SVD-derived pseudo-inverse of the base class agrees with the closed form.
    assert torch.allclose(operators.SVDOperator.A_pinv(op, y), op.A_pinv(y), atol=1e-14)
    assert torch.allclose(op.A(op.A_pinv(y)), y, atol=1e-14)


@pytest.mark.parametrize("spec", ["identity", "gray"])
def test_float32_round_trip_and_stacking(spec):
    shape = (3, 37, 53)
    op = operators.build(spec, shape)
    assert op.spec == spec
    x = rand(shape, seed=3)
    y32 = operators.build(spec, shape).float().A(x.float())
    assert y32.dtype == torch.float32 and torch.allclose(y32.double(), op.A(x), atol=1e-6)
    # Buffers are cast on the fly when the operator was not converted.
    assert operators.build(spec, shape).A_adjoint(op.A(x).float()).dtype == torch.float32
    stacked = operators.build(f"{spec};{spec}", shape)
    assert stacked.batch_size == 2 and stacked.singular_values().shape[0] == 2
    assert torch.allclose(stacked.A(x), op.A(x)) and torch.allclose(stacked.Vt(x), op.Vt(x))


@pytest.mark.parametrize(
    "spec,shape,match",
    [
        ("gray", (1, 32, 32), r"gray needs 3-channel RGB images, got 1 channel\(s\)"),
        ("gray", (4, 8, 8), r"got 4 channel\(s\)"),
        ("gray:bt709", (3, 8, 8), "gray takes no arguments, got 'bt709'"),
        ("identity:2", (3, 8, 8), "identity takes no arguments, got '2'"),
        ("identity:sigma=0.1", (3, 8, 8), "identity takes no arguments"),
        ("grey", (3, 8, 8), "unknown operator 'grey'"),
    ],
)
def test_bad_parameters(spec, shape, match):
    with pytest.raises(OperatorError, match=match):
        operators.build(spec, shape)


def test_luminance_needs_three_channels():
    with pytest.raises(OperatorError, match=r"got shape \(2, 1, 4, 4\)"):
        rgb_to_luminance(torch.zeros(2, 1, 4, 4))


def test_removing_the_colour_cast_keeps_every_luminance_and_makes_the_mean_colour_gray():
    x = rand((3, 6, 5), seed=3).float() * 0.3 + torch.tensor([0.2, -0.1, 0.4])[:, None, None]  # a tinted pair
    balanced = remove_colour_cast(x)
    assert torch.allclose(rgb_to_luminance(balanced), rgb_to_luminance(x), atol=1e-6)  # each pixel's luminance
    mean = balanced.mean(dim=(-2, -1))
    assert torch.allclose(mean, mean[:, :1].expand(-1, 3), atol=1e-6)  # R = G = B on average: no cast
    assert torch.allclose(balanced - x, (balanced - x)[..., :1, :1].expand_as(x), atol=1e-6)  # one shift per image
    assert torch.allclose(remove_colour_cast(balanced), balanced, atol=1e-6)  # and none left to remove
    gray = rand((1, 6, 5), seed=4).expand(-1, 3, -1, -1)
    assert torch.allclose(remove_colour_cast(gray), gray)  # a gray image has no cast
    samples = torch.stack([x, 2 * x])  # (K, B, 3, H, W): each image of each sample on its own
    assert torch.allclose(remove_colour_cast(samples)[1], remove_colour_cast(2 * x))
    with pytest.raises(OperatorError, match="RGB"):
        remove_colour_cast(x[:, :2])
