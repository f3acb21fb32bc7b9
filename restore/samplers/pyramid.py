"""Coarse-to-fine restoration: solve a smaller image first, then refine it at each finer size (DiffPIR steps).

A prior trained on 64-pixel crops has never seen structure larger than that, and in the middle of a
128-pixel hole its network sees no known pixel at any noise level: the fill is an average, a smudge. At a
quarter of the size the hole is 32 pixels and the whole image fits the network's view. So the problem
y = A x is first solved for a small image z with x = U z (U: MATLAB-bicubic enlargement; the operator
A ∘ U, the measurement y unchanged at full size), from pure noise, by DiffPIR's steps (Zhu et al. 2023); each
finer level then starts from the coarser estimate enlarged and noised to ``restart_sigma`` — SDEdit's
restart (Meng et al., ICLR 2022) — and runs DiffPIR's steps down from there, adding the detail that level
can carry while the data step keeps it consistent with y at full size. Colour is low-frequency, so for
colourisation the coarse levels would settle the chroma and the fine ones the detail, the classical order —
but with the default prior the coarse levels' chroma comes out as a strong colour cast (RESULTS.md "Session 18"),
and colourisation keeps DiffPIR.

Each level takes ``steps`` network evaluations over its noise range (the coarse ones ``coarse_steps`` times
as many, on 1/16 and 1/4 of the pixels, so they cost little); ``zeta`` is DiffPIR's share of fresh noise per
step, per level: a fully re-noised chain (DiffPIR's ζ = 1, DDNM's η = 0.85) forgets the detail each step adds
and ends near the posterior mean — a blur at the full size, but at a coarse one a coherent layout and colour
for the finer levels to draw texture on with a smaller ζ (benchmarks/RESULTS.md, "Large holes", "Session 18").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from operators.base import Composed
from operators.resize import Upsample
from restore.prior.schedule import timestep_for_sigma
from restore.samplers.base import Callback, Generators, Grid, check_steps, image_shape, randn, require
from restore.samplers.diffpir import DiffPIRParams, diffpir_chain, quad_timesteps


@dataclass(frozen=True)
class PyramidParams:
    """Hyperparameters of the coarse-to-fine sampler."""

    #: the image sizes solved, coarse to fine, as divisors of the full size (1 = full size, always last)
    factors: tuple[int, ...] = (4, 2, 1)
    #: σ (library units) to which each finer level's start, the enlarged coarser estimate, is noised
    restart_sigma: float = 0.6
    #: DiffPIR's λ (prior weight of the data step)
    lam: float = 1.0
    #: DiffPIR's ζ (share of fresh noise per step) per level, coarse to fine; the last value serves the levels
    #: beyond it. A high ζ at the coarse levels gives their posterior mean — the layout and colours, coherent —
    #: and a low one at the fine levels lets the chain keep the texture it draws.
    zeta: tuple[float, ...] = (0.2,)
    #: each step's DDPM share of fresh noise instead of ζ (see DiffPIRParams.ancestral)
    ancestral: bool = False
    #: steps of each level but the finest, as a multiple of ``steps`` (they run on 1/4, 1/16, … of the pixels)
    coarse_steps: float = 1.0
    #: conjugate-gradient iterations of each data step (the composed operators have no SVD)
    cg_max_iter: int = 30
    #: clip x̂0 to the image range after each data step (off only for the Gaussian toy priors of the tests)
    clip_x0: bool = True

    def __post_init__(self) -> None:
        require(len(self.factors) >= 1 and all(type(f) is int and f >= 1 for f in self.factors) and self.factors[-1] == 1
                and list(self.factors) == sorted(self.factors, reverse=True),
                f"pyramid: factors must be decreasing whole numbers ending at 1, e.g. 4,2,1; got {self.factors}")
        require(self.restart_sigma > 0 and math.isfinite(self.restart_sigma),
                f"pyramid needs a finite restart_sigma > 0, got {self.restart_sigma}")
        require(self.lam > 0 and math.isfinite(self.lam), f"pyramid needs a finite lam > 0, got {self.lam}")
        if isinstance(self.zeta, (int, float)):  # one ζ for every level
            object.__setattr__(self, "zeta", (float(self.zeta),))
        require(isinstance(self.zeta, tuple) and len(self.zeta) >= 1 and all(0 <= z <= 1 for z in self.zeta),
                f"pyramid needs zeta values in [0, 1], one per level (the last repeats), got {self.zeta}")
        require(self.coarse_steps > 0 and math.isfinite(self.coarse_steps),
                f"pyramid needs a finite coarse_steps > 0, got {self.coarse_steps}")
        require(type(self.cg_max_iter) is int and self.cg_max_iter >= 1,
                f"pyramid needs an integer cg_max_iter >= 1, got {self.cg_max_iter!r}")


def level_steps(steps: int, params: PyramidParams) -> list[int]:
    """The steps of each level, coarse to fine: ``steps`` at the finest, ``coarse_steps`` × as many (at least 1) below."""
    coarse = max(1, round(steps * params.coarse_steps))
    return [coarse] * (len(params.factors) - 1) + [steps]


def pyramid_nfe(steps: int, params: PyramidParams | None = None) -> int:
    """Network evaluations of one run, all levels together (the coarse ones on fewer pixels)."""
    return sum(level_steps(steps, params or PyramidParams()))


def level_shape(shape: tuple[int, ...], factor: int) -> tuple[int, ...]:
    """(B, C, H, W) of the image solved at 1/factor of the size (at least 8 pixels a side)."""
    b, c, h, w = shape
    return (b, c, min(h, max(8, round(h / factor))), min(w, max(8, round(w / factor))))


def pyramid(denoiser, operator, y: Tensor, *, noise, steps: int, generator: Generators = None,
            callback: Callback | None = None, params: PyramidParams | None = None) -> Tensor:
    """Coarse-to-fine DiffPIR (the module docstring): ``steps`` evaluations at the full size, ``params.coarse_steps``
    times as many at each coarser one of ``params.factors``."""
    p = params or PyramidParams()
    check_steps("pyramid", steps, denoiser)
    counts = level_steps(steps, p)
    check_steps("pyramid", max(counts), denoiser)
    full = image_shape(operator, y)
    like = y.real if y.is_complex() else y
    restart = int(timestep_for_sigma(denoiser.alphas_cumprod, p.restart_sigma).round())
    x0 = None
    for level, (factor, n) in enumerate(zip(p.factors, counts)):
        shape = level_shape(full, factor)
        chain = DiffPIRParams(lam=p.lam, zeta=p.zeta[min(level, len(p.zeta) - 1)], ancestral=p.ancestral,
                              cg_max_iter=p.cg_max_iter, skip="quad", clip_x0=p.clip_x0)
        up = Upsample(shape[1:], full[1:]).to(device=like.device, dtype=like.dtype)
        level_operator = operator if shape == full else Composed(operator, up)
        if x0 is None:  # the coarsest level: DiffPIR from pure noise
            timesteps = quad_timesteps(denoiser.num_timesteps, n)
            x = randn(shape, generator, like=like)
        else:  # SDEdit: the coarser estimate enlarged, noised to the restart level
            timesteps = quad_timesteps(restart + 1, n)
            start = Upsample(x0.shape[1:], shape[1:]).to(device=like.device, dtype=like.dtype).A(x0)
            a = float(denoiser.alphas_cumprod[timesteps[0]])
            x = math.sqrt(a) * start + math.sqrt(1 - a) * randn(shape, generator, like=like)
        require(all(a > b for a, b in zip(timesteps, timesteps[1:])),
                f"pyramid: {n} steps do not fit below the restart level (timestep {restart}); use fewer")
        x0 = diffpir_chain(denoiser, level_operator, y, x, Grid.of(denoiser, timesteps), chain, noise=noise,
                           generator=generator, callback=callback if shape == full else _upsampled(callback, up),
                           name="pyramid", first_step=sum(counts[:level]), total=sum(counts))
    return x0


def _upsampled(callback: Callback | None, up: Upsample) -> Callback | None:
    """A coarse level's progress shown at the full size (the callback's images keep one shape throughout)."""
    if callback is None:
        return None
    return lambda info: callback({**info, "x": up.A(info["x"]), "x0": up.A(info["x0"])})

