"""A restoration's plan, resolved once, and the one path that carries it out.

    plan = make_plan("inpaint", Request(num_samples=4), operator)   # sampler, steps, hyperparameters, NFE
    result = solve(plan, denoiser, operator, y, noise=GaussianNoise(0.05), indices=[0])

A :class:`Request` is what the user asked for (None: the task's default); the :class:`Plan` is what
runs: the task's sampler choice, the defaults table and ``--set`` options applied and checked. Folder
runs and ``restore bench`` both solve through :func:`solve`, record ``plan.to_dict()`` and resume only
into results made with an equal plan, so a changed default never passes for a result already made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from operators.color import remove_colour_cast
from restore.errors import NumericalError
from restore.samplers import PosteriorSamples, draw_samples, get_sampler
from restore.samplers.defaults import cast_removal, choose_sampler, defaults_for, problem_kind, with_options
from restore.seeds import generators


@dataclass(frozen=True)
class Request:
    """What decides a restoration besides the inputs, as asked for; None means the task's default."""

    sampler: str | None = None
    steps: int | None = None
    options: tuple[str, ...] = ()  # NAME=VALUE hyperparameters over the (sampler, task) defaults
    num_samples: int = 1
    seed: int = 0
    remove_cast: bool | None = None  # colorize: the result's mean colour moved to gray (None: the task's default)


@dataclass(frozen=True)
class Plan:
    """What a restoration runs: one sampler with its steps and hyperparameters, for one task."""

    task: str
    sampler: str
    steps: int
    params: Any  # the sampler's frozen hyperparameter dataclass
    num_samples: int = 1
    seed: int = 0
    #: each sample's colour cast removed (operators.color.remove_colour_cast): colourisation, whose chroma the
    #: measurement does not hold
    remove_cast: bool = False

    @property
    def nfe(self) -> int:
        """Network evaluations per image, all posterior samples together."""
        return get_sampler(self.sampler).nfe(self.steps, self.params) * self.num_samples

    def to_dict(self) -> dict:
        """As reports record it (and read back from JSON: tuples as lists)."""
        params = {f.name: getattr(self.params, f.name) for f in dataclasses.fields(self.params)}
        recorded = {"task": self.task, "sampler": self.sampler, "steps": self.steps,
                    "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
                    "num_samples": self.num_samples, "seed": self.seed, "nfe": self.nfe}
        # only where it is on, so that the plans of the other tasks, and their finished results, stay as they were
        return {**recorded, "remove_cast": True} if self.remove_cast else recorded


def make_plan(task: str, request: Request = Request(), operator=None, params: Any = None, kind: str | None = None) -> Plan:
    """Resolve ``request`` for ``task`` (and, when given, the operator it will run on).

    Everything is checked here — sampler name, samples from a one-estimate method, option names and
    values, an operator the sampler cannot take — so a bad request fails before the prior loads.
    ``params`` replaces the defaults table's hyperparameters (the options then apply over them); ``kind`` names
    the problem's kind where the operator cannot tell it yet (``blind``: a blur whose kernel is still to estimate).
    """
    kind = kind or problem_kind(task, operator)
    sampler = choose_sampler(task, operator, request.sampler, request.num_samples, kind)
    defaults = defaults_for(sampler, task, kind)
    params = with_options(params if params is not None else defaults.params, request.options, sampler)
    return Plan(task, sampler, request.steps or defaults.steps, params, request.num_samples, request.seed,
                cast_removal(task, request.remove_cast))


def solve(plan: Plan, denoiser, operator, y: Tensor, *, noise, indices: list[int] | None = None,
          callback=None) -> PosteriorSamples:
    """The plan's posterior samples of x given y for a batch (image b seeded by ``indices[b]``), with mean and std."""
    info = get_sampler(plan.sampler)
    indices = list(range(y.shape[0])) if indices is None else indices
    gens = generators(plan.seed, indices, plan.num_samples)
    with torch.enable_grad() if info.backprop_network else torch.no_grad():
        result = draw_samples(info.run, denoiser, operator.to(y.device), y, num_samples=plan.num_samples, noise=noise,
                              steps=plan.steps, generator=gens, callback=callback, params=plan.params)
    check_in_range(result.samples, plan)
    return PosteriorSamples.of(remove_colour_cast(result.samples)) if plan.remove_cast else result


#: a restoration with more than this share of its pixels beyond ±DIVERGED_VALUE (images live in [-1, 1]) diverged
DIVERGED_SHARE, DIVERGED_VALUE = 0.01, 2.0


def check_in_range(samples: Tensor, plan: Plan) -> None:
    """Refuse a restoration that left the image range far behind: it would be saved clipped, a saturated picture
    that looks like a result. (NaN and Inf the samplers catch themselves, naming the step.)"""
    x = samples.real if samples.is_complex() else samples
    share = float((x.abs() > DIVERGED_VALUE).float().mean())
    if share > DIVERGED_SHARE:
        raise NumericalError(f"{plan.sampler} diverged: {share:.0%} of the restoration lies far outside the image range; "
                             f"{get_sampler(plan.sampler).divergence_hint}")
