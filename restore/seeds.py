"""Where every random number of a run comes from: one CPU generator per (purpose, posterior sample, image).

Image i of a folder (or of the bench suite) is seeded from the run seed plus i, so an image gets the same
noise whatever else runs beside it — in a batch, in another process, on another device.
"""

from __future__ import annotations

import torch

#: separate streams for the sampler's noise and for simulated measurement noise
SAMPLING, MEASUREMENT = 0, 1


def generators(seed: int, indices: list[int], num_samples: int = 1, purpose: int = SAMPLING) -> list[torch.Generator]:
    """One CPU generator per (posterior sample, image), ordered sample-major as
    :func:`restore.samplers.draw_samples` stacks the copies of a batch."""
    return [
        torch.Generator().manual_seed(seed + index + 100_003 * k + 1_000_000_007 * purpose)
        for k in range(num_samples)
        for index in indices
    ]
