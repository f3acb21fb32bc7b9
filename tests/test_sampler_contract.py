"""The contract every sampler in the registry keeps, checked on Gaussian toy problems whose exact
posterior is known (diffusers' SchedulerCommonTest, for samplers).

A new sampler gets the whole suite by adding its row to CONTRACTS: hyperparameters suited to the toy
prior (which lives outside [-1, 1], so clipping is off) and the tolerances measured for it. Each
sampler's own test file keeps only what is specific to its paper. Tolerances are measured values
with margin (``measured`` in each row), not exactness claims: these are approximate samplers.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import operators
from restore.errors import NumericalError, RestoreError
from restore.noise import GaussianNoise
from restore.samplers import SAMPLERS, draw_samples
from restore.samplers.daps import DAPSParams
from restore.samplers.ddnm import DDNMParams
from restore.samplers.ddrm import DDRMParams
from restore.samplers.defaults import TASKS, defaults_for, with_options
from restore.samplers.diffpir import DiffPIRParams
from restore.samplers.dpir import DPIRParams
from restore.samplers.dps import DPSParams
from restore.samplers.pigdm import PiGDMParams
from restore.samplers.pyramid import PyramidParams
from restore.samplers.reddiff import REDDiffParams
from sampler_helpers import MaskedFourier, NaNDenoiser, ReplicateBlur, assert_batch_equals_one_by_one, pinv, rms

SIGMA = 0.05
pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class Contract:
    #: hyperparameters for the toy problems
    params: Any
    #: bound on the error of the mean of ``samples`` runs of ``steps`` to the exact posterior mean (random
    #: mask, 6×6); measured values in each row's comment. A⁺y's error there is 0.34.
    posterior_error: float
    #: bounds on the mean ratio of the samples' std to the exact posterior std (None: one estimate per run)
    spread: tuple[float, float] | None
    #: hyperparameter values the sampler must refuse, each with a word of the message
    bad: tuple[dict, ...]
    steps: int = 100
    samples: int = 256
    #: hyperparameters under which the output depends on the seed (None: ``params``)
    stochastic: Any = None


CONTRACTS = {
    # measured: error 0.065, spread 1.07 (η_b = 1 makes DDRM DDNM+ coordinate by coordinate)
    "ddrm": Contract(DDRMParams(), 0.1, (0.7, 1.5),
                     ({"eta": -0.1}, {"eta": 1.5}, {"eta": math.nan}, {"eta_b": 1.1}, {"eta_b": -1.0}, {"eta_b": math.nan})),
    # measured: error 0.065, spread 1.07
    "ddnm": Contract(DDNMParams(cg_max_iter=50), 0.1, (0.7, 1.5),
                     ({"eta": -0.1}, {"eta": 1.5}, {"eta": math.nan}, {"effective_singular_value": 0.0},
                      {"effective_singular_value": math.inf}, {"travel_length": 0}, {"travel_repeat": 1.5},
                      {"travel_length": True}, {"cg_max_iter": 0}, {"cg_max_iter": 2.5})),
    # ζ = 1 (the official inpainting setting) re-noises with fresh noise: measured error 0.049, spread 0.84
    "diffpir": Contract(DiffPIRParams(clip_x0=False, lam=7.0, zeta=1.0), 0.08, (0.6, 1.2),
                        ({"lam": 0.0}, {"lam": math.inf}, {"lam": math.nan}, {"zeta": -0.1}, {"zeta": 1.5},
                         {"skip": "cubic"}, {"cg_max_iter": 0})),
    # λ = 1 is the exact splitting of the MAP problem, whose answer is the Gaussian posterior mean: measured 0.015
    "dpir": Contract(DPIRParams(lam=1.0, sigma_max=2.0, sigma_min=0.01, clip=False, self_ensemble=False), 0.03, None,
                     ({"lam": 0.0}, {"lam": math.nan}, {"sigma_max": -1.0}, {"sigma_max": math.inf}, {"sigma_min": 0.0},
                      {"sigma_min": 1.0, "sigma_max": 0.5}, {"renoise": 1.5}, {"renoise": -0.1}, {"cg_max_iter": 0}),
                     steps=200, samples=1,
                     stochastic=DPIRParams(lam=1.0, sigma_max=2.0, renoise=0.5, clip=False, self_ensemble=False)),
    # measured: error 0.036, spread 0.61 (x̂0's likelihood stands in for p(y | x_t))
    "dps": Contract(DPSParams(zeta=0.5, clip_x0=False), 0.07, (0.4, 1.0), ({"zeta": -1.0}, {"zeta": math.inf}, {"zeta": math.nan})),
    # measured: error 0.037, spread 0.76
    "pigdm": Contract(PiGDMParams(), 0.07, (0.5, 1.1), ({"eta": -0.1}, {"eta": 1.5}, {"weight": -1.0}, {"weight": math.inf})),
    # an optimiser started from a regularised inverse, not a sampler: measured error 0.056 (32 runs of 300
    # Adam steps; lr 0.05, as the toy's pixels move by about lr per step), spread 0.48
    "reddiff": Contract(REDDiffParams(lam=0.25, lr=0.05), 0.09, (0.2, 0.75),
                        ({"weighting": "cubic"}, {"lr": 0.0}, {"lam": -1.0}, {"obs_weight": math.nan},
                         {"adam_betas": (0.9, 1.0)}), steps=300, samples=32),
    # σ_y = the noise's 0.05 (the exact likelihood); lr 1e-3 and σ_min 0.02 so Langevin mixes the toy's Gaussian
    # (lr (1/σ_y² + 1/r²) < 2 down to r = σ_min): measured error 0.038, spread 1.10 (N(x̂0, σ² I) is wider than p(x0 | x_t))
    "daps": Contract(DAPSParams(lr=1e-3, sigma_min=0.02, langevin_steps=50), 0.07, (0.7, 1.5),
                     ({"ode_steps": 0}, {"ode_steps": 1.5}, {"langevin_steps": -1}, {"lr": 0.0}, {"lr": math.nan},
                      {"lr_min_ratio": 0.0}, {"lr_min_ratio": 2.0}, {"r_scale": -1.0}, {"sigma_y": 0.0},
                      {"sigma_min": 0.0}, {"sigma_max": math.inf}, {"ode_sigma_min": 1.0}, {"rho": 0.0})),
    # at 6×6 every level is the full size: three DiffPIR chains, each restarted from the last; measured error 0.040,
    # spread 0.83
    "pyramid": Contract(PyramidParams(lam=7.0, zeta=1.0, restart_sigma=0.6, clip_x0=False), 0.07, (0.6, 1.1),
                        ({"factors": (2, 4, 1)}, {"factors": (4, 2)}, {"restart_sigma": 0.0}, {"zeta": 1.5}, {"lam": 0.0},
                         {"cg_max_iter": 0}), steps=40, samples=256),
}
#: the samplers of any measurement; a method for one kind of operator (``operator_type``: the JPEG deblocker) keeps
#: its own contract in its test file, on that operator
NAMES = sorted(name for name, info in SAMPLERS.items() if info.operator_type is None)


def run(name: str, problem, *, params=None, steps: int = 20, k: int = 1, seed: int = 0, y=None, operator=None,
        denoiser=None, callback=None):
    y = problem.y if y is None else y
    return SAMPLERS[name].run(problem.denoiser if denoiser is None else denoiser,
                              problem.operator if operator is None else operator, y.repeat(k, *([1] * (y.dim() - 1))),
                              noise=GaussianNoise(SIGMA), steps=steps, generator=torch.Generator().manual_seed(seed),
                              callback=callback, params=CONTRACTS[name].params if params is None else params)


def test_every_sampler_has_a_contract():
    assert set(CONTRACTS) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_is_coherent(name):
    info = SAMPLERS[name]
    assert info.name == name and info.paper
    assert dataclasses.is_dataclass(info.params) and info.params.__dataclass_params__.frozen
    keywords = set(inspect.signature(info.run).parameters)
    assert {"noise", "steps", "generator", "callback", "params"} <= keywords
    for task in TASKS:
        d = defaults_for(name, task)
        assert isinstance(d.params, info.params) and d.steps >= 1, task
        assert info.nfe(d.steps, d.params) >= d.steps
    assert info.nfe(20, info.params()) >= 20  # at least one network evaluation per step


@pytest.mark.parametrize("name", NAMES)
def test_bad_hyperparameters_are_refused_before_any_work(name):
    contract, info = CONTRACTS[name], SAMPLERS[name]
    for bad in contract.bad:
        word = next(iter(bad))
        with pytest.raises(RestoreError, match=word):
            dataclasses.replace(contract.params, **bad)
        # the same values given as --set options: refused while building the plan, before the prior loads
        options = [f"{key}={','.join(map(str, value)) if isinstance(value, tuple) else value}" for key, value in bad.items()]
        with pytest.raises(RestoreError, match=word):
            with_options(info.params(), options, name)


@pytest.mark.parametrize("name", NAMES)
def test_steps_out_of_range_are_refused(gaussian_problem, name):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    with pytest.raises(RestoreError, match="steps"):
        run(name, p, steps=0)


@pytest.mark.parametrize("name", NAMES)
def test_batch_with_per_image_generators_and_operators_equals_one_by_one(gaussian_problem, name):
    contract = CONTRACTS[name]
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    assert_batch_equals_one_by_one(SAMPLERS[name].run, p, noise=GaussianNoise(SIGMA), steps=20,
                                   params=contract.stochastic or contract.params)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output_and_seeds_differ(gaussian_problem, name):
    contract = CONTRACTS[name]
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    params = contract.stochastic or contract.params
    a, b, c = (run(name, p, params=params, k=2, seed=s) for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    if contract.spread is None:  # one estimate: without its noise option the seed changes nothing
        assert torch.equal(run(name, p, seed=1), run(name, p, seed=2))


@pytest.mark.parametrize("name", NAMES)
def test_callback_sees_every_network_evaluation(gaussian_problem, name):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    seen = []
    x = run(name, p, steps=7, callback=seen.append)
    total = SAMPLERS[name].nfe(7, CONTRACTS[name].params)
    assert [s["step"] for s in seen] == list(range(total)) and all(s["total"] == total for s in seen)
    assert all(s["x"].shape == s["x0"].shape == (1, *p.shape) for s in seen)
    ts = [float(s["t"]) for s in seen]
    restarts = sum(a < b for a, b in zip(ts, ts[1:]))  # the noise level only falls, but for a restart per chain of 7
    assert restarts <= total // 7 - 1 and x.shape == (1, *p.shape) and x.dtype == torch.float64


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_values_name_the_step_they_appear_at(gaussian_problem, name):
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    seen = []
    run(name, p, steps=11, callback=seen.append)
    ts = [float(s["t"]) for s in seen]
    from_t = (ts[3] + ts[4]) / 2  # the denoiser breaks below this noise level: first at the fifth step
    total = SAMPLERS[name].nfe(11, CONTRACTS[name].params)
    with pytest.raises(NumericalError, match=f"{name} produced NaN or Inf at step 5 of {total}"):
        run(name, p, steps=11, denoiser=NaNDenoiser(p.denoiser, from_t))
    y = p.y.clone()
    y[..., 0, 0] = float("nan")
    with pytest.raises(NumericalError, match=f"{name} produced NaN or Inf at step 1 of {total}"):
        run(name, p, steps=11, y=y)


@pytest.mark.parametrize("name", NAMES)
def test_mean_of_samples_approaches_the_exact_posterior(gaussian_problem, name):
    contract, info = CONTRACTS[name], SAMPLERS[name]
    p = gaussian_problem("random:0.5:seed=1", SIGMA)
    result = draw_samples(info.run, p.denoiser, p.operator, p.y, num_samples=contract.samples, noise=GaussianNoise(SIGMA),
                          steps=contract.steps, generator=torch.Generator().manual_seed(0), params=contract.params)
    err, err_pinv = rms(result.mean, p.post_mean), rms(pinv(p.operator, p.y), p.post_mean)
    assert err < contract.posterior_error and err < 0.3 * err_pinv, (err, err_pinv)
    if contract.spread is not None:
        ratio = (result.std / p.post_std).mean().item()
        assert contract.spread[0] < ratio < contract.spread[1], ratio


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spec", ["random:0.5:seed=1", "blur:gaussian:3:0.8"])
def test_beats_the_pseudo_inverse(gaussian_problem, name, spec):
    # measured MSE / MSE(A⁺y), mean of ≤ 32 runs: 0.10–0.14 on the mask; ≤ 3e-4 on the blur (A⁺y amplifies noise)
    p = gaussian_problem(spec, SIGMA)
    k = min(CONTRACTS[name].samples, 32)
    x = run(name, p, steps=min(CONTRACTS[name].steps, 100), k=k).mean(0, keepdim=True)
    mse, mse_pinv = (x - p.x).pow(2).mean().item(), (pinv(p.operator, p.y) - p.x).pow(2).mean().item()
    assert mse < (0.2 if spec.startswith("random") else 0.01) * mse_pinv, (mse, mse_pinv)


NO_SVD = [ReplicateBlur, MaskedFourier, lambda shape: operators.build("mri:equispaced:2:center_lines=2", shape)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("make", NO_SVD, ids=["replicate-blur", "masked-fourier", "mri"])
def test_operators_without_an_svd(gaussian_problem, name, make):
    p = gaussian_problem("identity", SIGMA, shape=(1, 8, 8))  # the prior and x; the operator below
    op = make(p.shape).double()
    y = GaussianNoise(SIGMA)(op.A(p.x), generator=torch.Generator().manual_seed(1))
    if SAMPLERS[name].needs_svd:
        with pytest.raises(RestoreError, match="needs an operator with an SVD"):
            run(name, p, operator=op, y=y)
        return
    # measured MSE against A⁺y's 14 (blur: noise amplified), 0.019 (Fourier), 0.012 (MRI): 0.004–0.17 with 50 steps
    x = run(name, p, operator=op, y=y, steps=50, k=4)
    assert x.dtype == torch.float64 and x.shape == (4, *p.shape)
    mse, mse_pinv = (x - p.x).pow(2).mean().item(), (pinv(op, y) - p.x).pow(2).mean().item()
    assert mse < mse_pinv, (mse, mse_pinv)
