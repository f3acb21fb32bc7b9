"""The coarse-to-fine pyramid's own rules (the shared contract is in test_sampler_contract.py): its levels,
their steps and ζ. On the 6×6 Gaussian toy problem (whose exact prior has one size) every level is the full
size (levels are at least 8 pixels a side), so the levels are chains restarted from one another."""

from __future__ import annotations

import pytest
import torch

from restore.errors import RestoreError
from restore.noise import GaussianNoise
from restore.samplers.pyramid import PyramidParams, level_steps, pyramid, pyramid_nfe

SIGMA = 0.05
pytestmark = pytest.mark.usefixtures("one_thread")


def run(p, params: PyramidParams, steps: int = 6, callback=None, seed: int = 0) -> torch.Tensor:
    return pyramid(p.denoiser, p.operator, p.y, noise=GaussianNoise(SIGMA), steps=steps, callback=callback,
                   generator=torch.Generator().manual_seed(seed), params=params)


@pytest.fixture
def problem(gaussian_problem):
    return gaussian_problem("box:3:seed=1", SIGMA)


def test_each_level_takes_its_steps_and_reports_them_at_the_full_size(problem):
    params = PyramidParams(factors=(2, 1), zeta=(1.0, 0.3), coarse_steps=2.5, clip_x0=False)
    assert level_steps(6, params) == [15, 6] and pyramid_nfe(6, params) == 21
    seen = []
    x = run(problem, params, callback=lambda info: seen.append((info["step"], info["total"], tuple(info["x"].shape))))
    assert [step for step, _, _ in seen] == list(range(21)) and {total for _, total, _ in seen} == {21}
    assert {shape for _, _, shape in seen} == {tuple(x.shape)} == {(1, 1, 6, 6)}
    assert level_steps(20, PyramidParams(factors=(8, 4, 2, 1), coarse_steps=0.01)) == [1, 1, 1, 20]  # at least one a level


def test_zeta_is_per_level_and_its_last_value_serves_the_finer_levels(problem):
    same = run(problem, PyramidParams(factors=(2, 2, 1), zeta=(1.0, 0.4), clip_x0=False))
    spelled = run(problem, PyramidParams(factors=(2, 2, 1), zeta=(1.0, 0.4, 0.4), clip_x0=False))
    other = run(problem, PyramidParams(factors=(2, 2, 1), zeta=(1.0, 0.4, 0.9), clip_x0=False))
    assert torch.equal(same, spelled) and not torch.allclose(same, other)
    assert PyramidParams(zeta=0.5).zeta == (0.5,)  # one number: every level
    with pytest.raises(RestoreError, match="zeta"):
        PyramidParams(zeta=(1.0, 1.5))
    with pytest.raises(RestoreError, match="coarse_steps"):
        PyramidParams(coarse_steps=0.0)
