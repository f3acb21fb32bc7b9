"""The table of samplers: what each needs (an SVD, gradients through the network) and costs (NFE)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from restore.errors import RestoreError
from restore.samplers.base import Sampler

#: the tasks hyperparameters are tuned for (the CLI's commands)
TASKS = ("inpaint", "deblur", "superres", "denoise", "colorize", "mri", "ct")


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    run: Sampler
    params: type  # the frozen dataclass of hyperparameters
    paper: str
    needs_svd: bool = False
    #: differentiates through the network (vector-Jacobian products): slower and needs more memory
    backprop_network: bool = False
    #: network evaluations per image for a given number of steps
    nfe: Callable[[int], int] = lambda steps: steps
    #: draws samples of the posterior (False: one estimate per run, so several runs make no uncertainty map)
    samples_posterior: bool = True


SAMPLERS: dict[str, SamplerInfo] = {}


def register(info: SamplerInfo) -> SamplerInfo:
    if info.name in SAMPLERS:
        raise RuntimeError(f"sampler {info.name!r} registered twice")
    SAMPLERS[info.name] = info
    return info


def get_sampler(name: str) -> SamplerInfo:
    if name not in SAMPLERS:
        raise RestoreError(f"unknown sampler '{name}'; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def check_num_samples(info: SamplerInfo, num_samples: int) -> None:
    """Refuse several "posterior samples" from a method that gives one estimate."""
    if num_samples > 1 and not info.samples_posterior:
        able = [n for n, s in SAMPLERS.items() if s.samples_posterior]
        raise RestoreError(f"{info.name} gives one estimate, not posterior samples; use --num-samples 1, "
                           f"or one of: {', '.join(able)}")


def check_operator(info: SamplerInfo, operator) -> None:
    """Refuse early, with the samplers that can take it, an operator this sampler cannot use."""
    if info.needs_svd and not operator.has_svd:
        able = [n for n, s in SAMPLERS.items() if not s.needs_svd]
        raise RestoreError(
            f"{info.name} needs an operator with an SVD, and '{operator.spec}' has none; "
            f"use one of: {', '.join(able)}"
        )
