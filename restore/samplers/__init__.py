"""Posterior samplers over a denoiser prior: one function per algorithm, a registry, and defaults.

See :mod:`restore.samplers.base` for the common signature. Importing this package registers every
sampler (the defaults table imports them all), so ``get_sampler("ddrm")`` works right away.
"""

from restore.samplers.base import PosteriorSamples, draw_samples
from restore.samplers.registry import SAMPLERS, TASKS, SamplerInfo, check_num_samples, check_operator, get_sampler
from restore.samplers import defaults  # noqa: E402,F401  (registers all samplers)  isort: skip

__all__ = ["PosteriorSamples", "draw_samples", "SAMPLERS", "TASKS", "SamplerInfo", "check_num_samples", "check_operator", "get_sampler"]
