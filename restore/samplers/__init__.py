"""Posterior samplers over a denoiser prior: one file per algorithm, the table of them (``registry``),
and the defaults per task (``defaults``).

See :mod:`restore.samplers.base` for the common signature.
"""

from restore.samplers.base import PosteriorSamples, draw_samples
from restore.samplers.registry import SAMPLERS, SamplerInfo, check_num_samples, check_operator, get_sampler

__all__ = ["PosteriorSamples", "draw_samples", "SAMPLERS", "SamplerInfo", "check_num_samples", "check_operator", "get_sampler"]
