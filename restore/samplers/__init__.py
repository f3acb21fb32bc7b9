"""Posterior samplers over a denoiser prior: one function per algorithm, a registry, and defaults.

See :mod:`restore.samplers.base` for the common signature.
"""

from restore.samplers.base import PosteriorSamples, draw_samples
from restore.samplers.registry import SAMPLERS, TASKS, SamplerInfo, check_operator, get_sampler

__all__ = ["PosteriorSamples", "draw_samples", "SAMPLERS", "TASKS", "SamplerInfo", "check_operator", "get_sampler"]
