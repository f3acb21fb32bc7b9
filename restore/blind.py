"""Blind deblurring: estimate an unknown blur kernel and the image together.

Model: y = k * x + n, one unknown non-negative kernel k (sum 1, inside an odd ``size`` × ``size``
support) for every channel, a circular (periodic) blur in the library's convention (true
convolution, kernel centre at ``size // 2``; see operators.blur), white Gaussian noise of known σ.
Images in [-1, 1], σ in library units (twice the [0, 1]-scale value).

Method (:func:`estimate_kernel`): alternating estimation, coarse to fine.

* Pyramid: levels √2 apart from a kernel support of about 5 px up to ``size``. Every level is an
  exact circular-blur problem of its own: y is downsampled by a tapered crop of its spectrum, so
  the level's kernel is the band-limited full-resolution kernel and its noise σ follows exactly
  (:func:`_fourier_resize`, :func:`_noise_gain`). The kernel starts as a small Gaussian and is
  upsampled bilinearly from level to level.
* E-step (image given the kernel): a DPIR run (Zhang et al., TPAMI 2021; restore.samplers.dpir)
  with the diffusion prior as denoiser — half-quadratic splitting whose data step is the exact
  Fourier solution for the current kernel — 8 network evaluations from σ 0.4 down to the
  level's σ.
* M-step (kernel given the image): least squares on image gradients, argmin_k ‖∇y − k * S(∇x̂)‖²
  + γ‖k‖² + β‖∇k‖², k ≥ 0 on the support, where S keeps the gradients of x̂ at the 3 % of pixels
  where they are largest (salient edges, Cho & Lee 2009; Xu & Jia 2010) — solved by accelerated
  projected gradient on the Gram matrix of the edge autocorrelation (built by FFT) — then
  projected: entries under 5 % of the maximum and 8-connected pieces lighter than 10 % of the
  heaviest removed (as Cho & Lee and Xu & Jia prune), sum 1, centroid moved to the centre.
* Output: the last kernel, moved by an integer shift so that its centre of mass is at the grid
  centre (``centre="centroid"``, see below). :func:`blind_deblur` then runs non-blind DPIR (16 steps,
  λ 0.4, the project's best motion deblurrer) with it.

Why this and not a diffusion posterior sampler over image and kernel. BlindDPS (Chung et al.,
"Parallel diffusion models of operator and image for blind inverse problems", CVPR 2023) runs two
reverse diffusions, image and kernel, with DPS gradients back-propagated through both networks
for ~1000 steps: hours per 256² image on our 2 CPU cores, and it needs a diffusion prior over
kernels, which the project does not ship. GibbsDDRM (Murata et al., ICML 2023) samples the image
with DDRM and the kernel by Langevin steps, refactoring the operator's SVD at every update —
hundreds of network evaluations and per-step FFT SVDs; cheaper, but well over our 3-minute
budget at its published step counts. Fast Diffusion EM (Laroche, Almansa & Coupete, WACV 2024) is
the closest: EM whose E-step draws (approximate) posterior samples with the diffusion model and
whose M-step fits the kernel with a plug-and-play kernel denoiser as regulariser. This module is
the cheap relative of that scheme: a deterministic DPIR E-step (8 evaluations) instead of
sampling, and classical kernel constraints (non-negativity, pruning, a Tikhonov and a smoothness
term) instead of a learned kernel denoiser. Alternating minimisation over (x, k) is known to drift
towards the no-blur solution (Levin, Weiss, Durand & Freeman, CVPR 2009); the classical remedies
kept here are the image pyramid (Fergus et al. 2006; Cho & Lee 2009) and fitting the kernel on
salient edges only.

Measured on training images (256² crops, Levin kernels, σ 0.025; benchmarks/blind_tune.py and
notes in benchmarks/blind_dev.py): with x̂ = non-blind DPIR with the TRUE kernel, fitting the
kernel to all gradients of x̂ gives a kernel NCC of only ~0.69 (the MMSE image's smooth, partly
wrong textures bias the fit); the top 3–5 % of edges give 0.98. The EM expectation term
(posterior variance added to the M-step's normal equations, Levin et al., CVPR 2011) moved it by
less than 0.03 and is not used. A learned image prior in the E-step mainly buys the final image:
the kernel is fitted to edges, as in the classical methods.

Translation ambiguity. (k shifted by d, x shifted by −d) explains y exactly as well, so a blind
estimate is defined only up to a shift, and a centring convention decides how the output lines up.
The default ``centre="centroid"`` puts the kernel's centre of mass at the grid centre: the blurry image
is then a weighted average of copies of the restoration with no net shift, so the restoration overlays
the photograph the user gave (on sample_data's astronaut, blurred by Levin k3: 19.1 dB against the
truth unaligned and 23.3 aligned, against 16.8 / 22.1 with ``"box"``). ``"box"`` centres the support's
bounding box instead — how the recorded Levin et al. kernels (the protocol's ``mblur``) are stored,
whose centroids lie up to 3.3 px off centre. Benchmarks of blind methods compare images after the
best shift (:func:`align_to_reference`), which makes the choice irrelevant to them on circular blurs.

Also here: :func:`classical_blind_baseline` (no learned prior: L0-gradient latent images, Pan et
al. 2014 / Xu et al. 2013, with the same M-step, then TV deconvolution), :func:`kernel_ncc` (the
kernel metric), :func:`align_to_reference` (evaluation) and :func:`tv_deconvolve`.
Implementation: torch (FFTs, FISTA) and scipy.ndimage (connected components), no other library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from restore.errors import RestoreError
from restore.prior.schedule import timestep_for_sigma
from restore.samplers.dpir import dihedral, dihedral_inverse

#: σ floor (library units) of the data-step weights: noiseless inputs stay finite
SIGMA_FLOOR = 0.002


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RestoreError(message)


@dataclass(frozen=True)
class BlindParams:
    """Hyperparameters of :func:`estimate_kernel` and :func:`blind_deblur`."""

    #: ratio of image scales between pyramid levels (coarse to fine)
    level_ratio: float = math.sqrt(2)
    #: kernel support (px) at the coarsest level; the number of levels follows from it
    coarsest_kernel: int = 5
    #: std (px) of the Gaussian kernel the coarsest level starts from
    init_std: float = 0.5
    #: std (px) of a Gaussian the kernel is smoothed by after each upsampling (0: none)
    upsample_blur: float = 0.0
    #: alternations (E-step + M-step) per coarse level, and at the finest level
    iterations: int = 6
    final_iterations: int = 12
    #: denoiser evaluations per E-step (a DPIR ladder)
    estep_steps: int = 8
    #: σ (library units) the E-step ladder starts at
    estep_sigma_max: float = 0.4
    #: λ of the E-step's data weight ρ = λ σ_n² / σ²
    estep_lam: float = 0.4
    #: r in [0, 1]: fresh noise of r σ added before every prior step of the E-step (DPIR's ``renoise``;
    #: 0: deterministic, > 0: stochastic E-steps drawn from ``generator``, closer to an EM with samples)
    estep_renoise: float = 0.0
    #: the E-step treats the noise as this many times its σ: a smoother x̂ whose edges the kernel fit trusts more
    estep_noise_scale: float = 1.0
    #: start each E-step from the previous x̂ (else from zero, a fresh DPIR run)
    warm_start: bool = False
    #: fraction of pixels (largest gradient magnitude of x̂) whose gradients the M-step fits
    edge_fraction: float = 0.03
    #: Tikhonov weight γ of the kernel, relative to the mean gradient energy per pixel
    kernel_reg: float = 0.01
    #: weight β of the kernel's smoothness ‖∇k‖² (relative, as kernel_reg): suppresses checkerboards
    kernel_smooth: float = 0.01
    #: kernel entries below this fraction of the maximum are pruned after each M-step
    prune: float = 0.05
    #: 8-connected pieces of the kernel lighter than this fraction of the heaviest are removed (0: kept)
    min_component: float = 0.1
    #: projected-gradient iterations of each M-step
    kernel_iters: int = 200
    #: final non-blind restoration: DPIR steps and λ
    final_steps: int = 16
    final_lam: float = 0.4
    #: estimate the kernel on the luminance rather than on all channels
    luminance: bool = False
    #: where the returned kernel is centred: "centroid" (its centre of mass) or "box" (its support's bounding box)
    centre: str = "centroid"
    #: the blurry image is periodic (a circular blur, as simulated): the kernel is fitted on edges up to the
    #: borders; False (a photograph): on edges at least the kernel's radius inside (see :func:`_salient`)
    periodic: bool = False

    def __post_init__(self) -> None:
        _require(self.level_ratio > 1 and math.isfinite(self.level_ratio), f"level_ratio must be a finite number > 1, got {self.level_ratio}")
        _require(_is_int(self.coarsest_kernel) and self.coarsest_kernel >= 3 and self.coarsest_kernel % 2 == 1,
                 f"coarsest_kernel must be an odd integer >= 3, got {self.coarsest_kernel!r}")
        for name in ("iterations", "final_iterations", "estep_steps", "kernel_iters", "final_steps"):
            value = getattr(self, name)
            _require(_is_int(value) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        for name in ("estep_sigma_max", "estep_lam", "final_lam", "init_std", "estep_noise_scale"):
            value = getattr(self, name)
            _require(value > 0 and math.isfinite(value), f"{name} must be a finite number > 0, got {value}")
        _require(0 < self.edge_fraction <= 1, f"edge_fraction must be in (0, 1], got {self.edge_fraction}")
        _require(self.upsample_blur >= 0 and math.isfinite(self.upsample_blur), f"upsample_blur must be >= 0, got {self.upsample_blur}")
        _require(0 <= self.estep_renoise <= 1, f"estep_renoise must be in [0, 1], got {self.estep_renoise}")
        _require(self.kernel_reg >= 0 and math.isfinite(self.kernel_reg), f"kernel_reg must be >= 0, got {self.kernel_reg}")
        _require(self.kernel_smooth >= 0 and math.isfinite(self.kernel_smooth), f"kernel_smooth must be >= 0, got {self.kernel_smooth}")
        _require(self.centre in ("box", "centroid"), f"centre must be 'box' or 'centroid', got {self.centre!r}")
        _require(0 <= self.min_component <= 1, f"min_component must be in [0, 1], got {self.min_component}")
        _require(0 <= self.prune < 1, f"prune must be in [0, 1), got {self.prune}")


#: the kernel support (px) estimated when none is asked for (smaller on images under twice its size)
DEFAULT_KERNEL_SIZE = 31


def kernel_size_for(shape: tuple[int, ...], requested: int = 0) -> int:
    """The support to estimate on an image of ``shape`` (..., H, W): ``requested``, or (0) DEFAULT_KERNEL_SIZE cut to
    half the image's shorter side."""
    if requested:
        return requested
    half = min(shape[-2:]) // 2
    size = min(DEFAULT_KERNEL_SIZE, half if half % 2 else half - 1)
    if size < 3:
        raise RestoreError(f"a {shape[-1]}x{shape[-2]} image is too small to estimate a blur kernel (at least 6x6 px)")
    return size


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------
# Fourier-domain helpers (circular convolution, the library's convention: kernel centre at s // 2).


def _transfer(kernel: Tensor, h: int, w: int) -> Tensor:
    """rfft2 of a (kh, kw) kernel placed with its centre at pixel (0, 0) of an h × w grid: (h, w // 2 + 1)."""
    kh, kw = kernel.shape
    psf = kernel.new_zeros(h, w)
    psf[:kh, :kw] = kernel
    return torch.fft.rfft2(torch.roll(psf, (-(kh // 2), -(kw // 2)), dims=(0, 1)))


def _gradient_weight(h: int, w: int, dtype=torch.float64) -> Tensor:
    """|D_h|² + |D_v|² of the circular forward differences, on the rfft2 half-plane (h, w // 2 + 1)."""
    fy = torch.fft.fftfreq(h, dtype=dtype)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=dtype)[None, :]
    return (2 - 2 * torch.cos(2 * math.pi * fx)) + (2 - 2 * torch.cos(2 * math.pi * fy))


def _band_window(n_full: int, n: int, dtype) -> Tensor:
    """Taper (length n, fftfreq order) of the band kept when a signal of n_full samples is resampled to n."""
    if n >= n_full:
        return torch.ones(n, dtype=dtype)
    f = torch.fft.fftfreq(n, dtype=dtype).abs() * 2  # 0 .. 1 at the new Nyquist
    edge = 0.7
    ramp = ((f - edge) / (1 - edge)).clamp(0, 1)
    return torch.cos(0.5 * math.pi * ramp) ** 2


def _fourier_resize(x: Tensor, h: int, w: int) -> Tensor:
    """Periodic downsampling of (..., H, W) images to (h, w) by a tapered crop of the spectrum (mean preserved).

    A circular blur of the image stays an exact circular blur of the downsampled image, by the
    band-limited kernel (see :func:`_level_kernel`), so every level of the pyramid is the same model.
    """
    big_h, big_w = x.shape[-2:]
    spectrum = torch.fft.fft2(x.double())
    rows = _band_indices(big_h, h)
    cols = _band_indices(big_w, w)
    cropped = spectrum[..., rows[:, None], cols[None, :]]
    window = _band_window(big_h, h, torch.float64)[:, None] * _band_window(big_w, w, torch.float64)[None, :]
    out = torch.fft.ifft2(cropped * window).real * (h * w / (big_h * big_w))
    return out.to(x.dtype)


def _band_indices(n_full: int, n: int) -> Tensor:
    """Indices (fftfreq order) into a length-n_full spectrum of the n lowest frequencies."""
    k = torch.fft.fftfreq(n) * n  # signed integer frequencies of the small grid
    return (k.round().long() % n_full)


def _noise_gain(big: tuple[int, int], small: tuple[int, int]) -> float:
    """Standard deviation of white unit noise after :func:`_fourier_resize` from ``big`` to ``small``."""
    window = _band_window(big[0], small[0], torch.float64)[:, None] * _band_window(big[1], small[1], torch.float64)[None, :]
    return math.sqrt(small[0] * small[1] / (big[0] * big[1]) * float((window**2).mean()))


def _resample_kernel(kernel: Tensor, size: int, scale: tuple[float, float]) -> Tensor:
    """A kernel on an odd ``size`` grid whose value at offset u (from the centre) is kernel(u / scale), bilinear, sum 1."""
    kh, kw = kernel.shape
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    src_y = offsets / scale[0] + kh // 2
    src_x = offsets / scale[1] + kw // 2
    # grid_sample coordinates in [-1, 1] with align_corners=True: pixel i at -1 + 2 i / (n - 1)
    gy = (2 * src_y / max(kh - 1, 1) - 1)[:, None].expand(size, size)
    gx = (2 * src_x / max(kw - 1, 1) - 1)[None, :].expand(size, size)
    grid = torch.stack([gx, gy], dim=-1)[None].to(kernel.dtype)
    out = F.grid_sample(kernel[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0]
    out = out.clamp_min(0)
    total = out.sum()
    return out / total if total > 0 else _delta(size, kernel.dtype)


def _level_kernel(kernel: Tensor, size: int, big: tuple[int, int], small: tuple[int, int]) -> Tensor:
    """The kernel of the circular blur that ``kernel`` becomes at a pyramid level: its transfer function
    restricted to the kept band (the exact model of :func:`_fourier_resize`), cut to the odd ``size``
    support and projected (non-negative, sum 1)."""
    K = _transfer(kernel.double(), *big)
    full = torch.fft.irfft2(K, s=big)  # the kernel centred at (0, 0) of the big grid
    spectrum = torch.fft.fft2(full)
    rows, cols = _band_indices(big[0], small[0]), _band_indices(big[1], small[1])
    small_kernel = torch.fft.ifft2(spectrum[rows[:, None], cols[None, :]]).real * (small[0] * small[1] / (big[0] * big[1]))
    r = size // 2
    cut = torch.roll(small_kernel, (r, r), dims=(0, 1))[:size, :size]
    return _project(cut, 0.0)


def _delta(size: int, dtype=torch.float64) -> Tensor:
    k = torch.zeros(size, size, dtype=dtype)
    k[size // 2, size // 2] = 1
    return k


def _gaussian(size: int, std: float, dtype=torch.float64) -> Tensor:
    t = torch.arange(size, dtype=dtype) - size // 2
    g = torch.exp(-0.5 * (t / std) ** 2)
    k = g[:, None] * g[None, :]
    return k / k.sum()


def _blur_kernel(kernel: Tensor, std: float) -> Tensor:
    """The kernel smoothed by a Gaussian of ``std`` px on its own grid (zero outside), sum 1."""
    radius = max(1, math.ceil(3 * std))
    g = _gaussian(2 * radius + 1, std, kernel.dtype)
    out = F.conv2d(kernel[None, None], g[None, None], padding=radius)[0, 0]
    return out / out.sum()


def _centre_shift(kernel: Tensor) -> tuple[int, int]:
    """The integer offset of the kernel's centroid from the grid centre."""
    kh, kw = kernel.shape
    total = kernel.sum()
    cy = (kernel.sum(dim=1) * torch.arange(kh, dtype=kernel.dtype)).sum() / total - kh // 2
    cx = (kernel.sum(dim=0) * torch.arange(kw, dtype=kernel.dtype)).sum() / total - kw // 2
    return int(round(float(cy))), int(round(float(cx)))


def _shift_kernel(kernel: Tensor, dy: int, dx: int) -> Tensor:
    """The kernel moved by (-dy, -dx) on its grid, zero filled (mass pushed off the grid is dropped)."""
    kh, kw = kernel.shape
    out = torch.zeros_like(kernel)
    ys, yd = slice(max(dy, 0), kh + min(dy, 0)), slice(max(-dy, 0), kh + min(-dy, 0))
    xs, xd = slice(max(dx, 0), kw + min(dx, 0)), slice(max(-dx, 0), kw + min(-dx, 0))
    out[yd, xd] = kernel[ys, xs]
    return out


def _box_shift(kernel: Tensor, threshold: float = 0.05) -> tuple[int, int]:
    """The integer offset of the centre of the bounding box of the entries >= threshold × max from the grid centre."""
    kh, kw = kernel.shape
    rows = (kernel >= threshold * kernel.max()).any(dim=1).nonzero()[:, 0]
    cols = (kernel >= threshold * kernel.max()).any(dim=0).nonzero()[:, 0]
    cy = (rows.min() + rows.max()).item() / 2 - kh // 2
    cx = (cols.min() + cols.max()).item() / 2 - kw // 2
    return int(math.floor(cy + 0.5)), int(math.floor(cx + 0.5))


def _final_centre(kernel: Tensor, centre: str) -> Tensor:
    """The kernel moved (integer shift) so that its bounding box ("box") or its centroid is at the grid centre."""
    dy, dx = _box_shift(kernel) if centre == "box" else _centre_shift(kernel)
    return _shift_kernel(kernel, dy, dx) if (dy or dx) else kernel


def _project(kernel: Tensor, prune: float, components: float = 0.0) -> Tensor:
    """Non-negative, entries below ``prune`` × max removed, and (``components`` > 0) every 8-connected
    component whose mass is below ``components`` × the heaviest one's removed; sum 1."""
    k = kernel.clamp_min(0)
    if prune > 0 and k.max() > 0:
        k = torch.where(k >= prune * k.max(), k, torch.zeros_like(k))
    if components > 0 and k.max() > 0:
        k = _drop_small_components(k, components)
    total = k.sum()
    return k / total if total > 0 else _delta(kernel.shape[0], kernel.dtype)


def _drop_small_components(kernel: Tensor, fraction: float) -> Tensor:
    """Zero the 8-connected components of the kernel's support lighter than ``fraction`` × the heaviest."""
    from scipy import ndimage

    array = kernel.numpy()
    labels, count = ndimage.label(array > 0, structure=np.ones((3, 3)))
    if count <= 1:
        return kernel
    mass = np.asarray(ndimage.sum(array, labels, index=np.arange(1, count + 1)))
    keep = np.isin(labels, 1 + np.flatnonzero(mass >= fraction * mass.max()))
    return kernel * torch.from_numpy(keep)


# ---------------------------------------------------------------------------------------------
# M-step: constrained least squares for the kernel on image gradients.


class _Support:
    """Offsets of a size × size kernel support on an h × w periodic grid, and gathers of the Gram matrix."""

    def __init__(self, size: int, h: int, w: int) -> None:
        r = size // 2
        oy, ox = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
        self.size, self.h, self.w = size, h, w
        self.oy, self.ox = oy.reshape(-1), ox.reshape(-1)
        self.flat = (self.oy % h) * w + (self.ox % w)
        self.diff = ((self.oy[None, :] - self.oy[:, None]) % h) * w + ((self.ox[None, :] - self.ox[:, None]) % w)
        # DᵀD of the forward differences within the support (zero outside): the kernel's smoothness penalty
        n = size * size
        eye = torch.eye(n, dtype=torch.float64).reshape(n, size, size)
        dx = F.pad(eye, (1, 1)).diff(dim=-1).reshape(n, -1)
        dy = F.pad(eye, (0, 0, 1, 1)).diff(dim=-2).reshape(n, -1)
        self.laplacian = dx @ dx.T + dy @ dy.T


def _kernel_step(power: Tensor, cross: Tensor, support: _Support, init: Tensor, reg: float, iters: int,
                 smooth: float = 0.0) -> Tensor:
    """argmin_{k >= 0 on the support} Σ_n |(k * x)(n) - y(n)|² + γ ‖k‖² + β ‖∇k‖², from the spectra of x and y.

    ``power`` = Σ |X|² and ``cross`` = Σ conj(X) Y, both already weighted by the gradient filter
    |D_h|² + |D_v|² (so the fit is on image gradients), on the rfft2 half-plane. The quadratic has the
    Gram matrix M[a, b] = R[b - a], R the autocorrelation irfft2(power) — a Toeplitz block of a
    circulant whose eigenvalues are ``power``, which bounds the step size — and the linear term
    c = irfft2(cross) on the support. γ and β are relative to R[0], the gradient energy. Solved by
    accelerated projected gradient (FISTA with non-negativity), started from ``init``.
    """
    h, w = support.h, support.w
    autocorr = torch.fft.irfft2(power, s=(h, w)).reshape(-1)
    corr = torch.fft.irfft2(cross, s=(h, w)).reshape(-1)
    scale = autocorr[0].clamp_min(1e-30)
    gram = autocorr[support.diff] / scale + reg * torch.eye(support.size**2, dtype=torch.float64)
    if smooth > 0:
        gram = gram + smooth * support.laplacian
    rhs = corr[support.flat] / scale
    step = 1.0 / (float(power.max() / scale) + reg + 8 * smooth)
    k = init.reshape(-1).clone()
    prev, momentum = k, 1.0
    for _ in range(iters):
        nxt = (k - step * (gram @ k - rhs)).clamp_min(0)
        m_next = (1 + math.sqrt(1 + 4 * momentum**2)) / 2
        k = nxt + ((momentum - 1) / m_next) * (nxt - prev)
        prev, momentum = nxt, m_next
    return prev.reshape(support.size, support.size)


# ---------------------------------------------------------------------------------------------
# Pyramid.


@dataclass(frozen=True)
class _Level:
    shape: tuple[int, int]  # image (h, w) at this level
    kernel_size: int
    scale: tuple[float, float]  # (h / H, w / W)
    noise_gain: float


def _odd(value: float) -> int:
    return max(3, 2 * int(round((value - 1) / 2)) + 1)


def _pyramid(shape: tuple[int, int], size: int, ratio: float, coarsest: int) -> list[_Level]:
    """Levels coarse to fine: kernel supports from about ``coarsest`` px up to ``size``, images at least 24 px."""
    big_h, big_w = shape
    count = 1 + max(0, int(round(math.log(size / coarsest) / math.log(ratio)))) if size > coarsest else 1
    levels = []
    for i in range(count - 1, -1, -1):
        s = ratio ** (-i)
        h, w = max(1, int(round(big_h * s))), max(1, int(round(big_w * s)))
        k = size if i == 0 else min(_odd(size * s), size)
        if i > 0 and (min(h, w) < 24 or k >= min(h, w) // 2):
            continue
        gain = 1.0 if i == 0 else _noise_gain((big_h, big_w), (h, w))
        levels.append(_Level((h, w), k, (h / big_h, w / big_w), gain))
    return levels


def _level_image(y: Tensor, level: _Level) -> Tensor:
    return y if level.scale == (1.0, 1.0) else _fourier_resize(y, *level.shape)


# ---------------------------------------------------------------------------------------------
# Input checks.


def _check_inputs(y: Tensor, size, noise_sigma) -> Tensor:
    """y as (1, C, H, W); RestoreError for a bad shape, kernel size or noise level."""
    if not isinstance(y, Tensor) or y.dim() not in (3, 4) or (y.dim() == 4 and y.shape[0] != 1):
        raise RestoreError(f"blind deblurring takes one image, (C, H, W) or (1, C, H, W); got shape {tuple(getattr(y, 'shape', ()))}")
    y = y if y.dim() == 4 else y[None]
    h, w = y.shape[-2:]
    if not _is_int(size) or size < 3 or size % 2 == 0:
        raise RestoreError(f"the kernel size must be an odd integer >= 3, got {size!r}")
    if 2 * size > min(h, w):
        raise RestoreError(f"a {size}x{size} kernel needs an image of at least {2 * size} px a side, got {w}x{h}")
    if not (isinstance(noise_sigma, int | float) and noise_sigma >= 0 and math.isfinite(noise_sigma)):
        raise RestoreError(f"noise_sigma must be a finite number >= 0 (library units), got {noise_sigma!r}")
    if not torch.isfinite(y).all():
        raise RestoreError("the blurry image has NaN or infinite values")
    return y


# ---------------------------------------------------------------------------------------------
# The diffusion-prior EM.


def _denoise(denoiser, x: Tensor, sigma: float, turn: int) -> Tensor:
    """x̂0 of the diffusion prior for x = image + N(0, σ²), on the ``turn``-th dihedral view (turned back)."""
    t = timestep_for_sigma(denoiser.alphas_cumprod, sigma).float()
    a = denoiser.alpha_bar(t, x).sqrt()
    return dihedral_inverse(denoiser.denoise(dihedral(a * x, turn), t), turn)


def _ladder(top: float, bottom: float, steps: int) -> list[float]:
    top = max(top, bottom)
    if steps == 1:
        return [bottom]
    return torch.logspace(math.log10(top), math.log10(bottom), steps, dtype=torch.float64).tolist()


def _estep(denoiser, y: Tensor, y_spec: Tensor, K: Tensor, z: Tensor | None, sigma_n: float,
           p: BlindParams, turn: int, generator: torch.Generator | None = None) -> tuple[Tensor, float]:
    """A short DPIR ladder (HQS: Fourier data step, denoiser prior step) with kernel transfer K.

    Returns the last prior step's x̂ and the last data step's weight ρ.
    """
    h, w = y.shape[-2:]
    sigma = max(sigma_n * p.estep_noise_scale, SIGMA_FLOOR)
    power = K.abs() ** 2
    num = K.conj() * y_spec
    if z is None:
        z = torch.zeros_like(y)
    rho = p.estep_lam
    for i, s in enumerate(_ladder(p.estep_sigma_max, sigma, p.estep_steps)):
        rho = p.estep_lam * sigma**2 / s**2
        x = torch.fft.irfft2((num + rho * torch.fft.rfft2(z.double())) / (power + rho), s=(h, w))
        x = x.clamp(-1, 1).to(y.dtype)
        if p.estep_renoise > 0:
            x = x + p.estep_renoise * s * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        z = _denoise(denoiser, x, s, turn + i).detach()
    return z, rho


def _gradients(x: Tensor) -> tuple[Tensor, Tensor]:
    """Circular forward differences (horizontal, vertical) of (B, C, H, W) images."""
    return x - torch.roll(x, 1, dims=-1), x - torch.roll(x, 1, dims=-2)


def _salient(gx: Tensor, gy: Tensor, fraction: float, margin: int = 0) -> tuple[Tensor, Tensor]:
    """The gradients whose magnitude (over channels) is among the top ``fraction`` of pixels at least ``margin`` px
    inside the image; the rest set to 0.

    The margin keeps the fit away from the borders: a photograph is not periodic, so its circular gradients
    jump at the wrap-around, and the circular E-step rings there; edges further in than the kernel's support
    only ever meet gradients of y from inside the image.
    """
    magnitude = (gx**2 + gy**2).sum(dim=1, keepdim=True)
    if margin > 0:
        inside = torch.zeros_like(magnitude)
        inside[..., margin:-margin, margin:-margin] = 1
        magnitude = magnitude * inside
    flat = magnitude.flatten()
    keep = max(1, int(round(fraction * flat.numel())))
    threshold = flat.kthvalue(flat.numel() - keep + 1).values
    mask = ((magnitude >= threshold) & (magnitude > 0)).to(gx.dtype)
    return gx * mask, gy * mask


def _kernel_from_edges(z: Tensor, y_grads: tuple[Tensor, Tensor], support: _Support, kernel: Tensor, p: BlindParams) -> Tensor:
    """M-step: the kernel that best maps the salient gradients of x̂ to the gradients of y, projected."""
    gx, gy = _salient(*_gradients(_for_kernel(z.double(), p)), p.edge_fraction,
                      margin=0 if p.periodic else support.size // 2 + 1)
    sx, sy = torch.fft.rfft2(gx)[0], torch.fft.rfft2(gy)[0]
    tx, ty = (torch.fft.rfft2(g)[0] for g in y_grads)
    power = (sx.abs() ** 2 + sy.abs() ** 2).sum(dim=0)
    cross = (sx.conj() * tx + sy.conj() * ty).sum(dim=0)
    kernel = _kernel_step(power, cross, support, kernel, p.kernel_reg, p.kernel_iters, p.kernel_smooth)
    return _project(kernel, p.prune, p.min_component)


def _em_level(denoiser, y: Tensor, kernel: Tensor, z: Tensor | None, sigma_n: float, p: BlindParams,
              turn: int, iterations: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, int]:
    """Alternation at one pyramid level: E-step (DPIR with the current kernel), M-step (kernel LS on edges)."""
    h, w = y.shape[-2:]
    support = _Support(kernel.shape[0], h, w)
    y_spec = torch.fft.rfft2(y.double())[0]
    y_grads = _gradients(_for_kernel(y.double(), p))
    for _ in range(iterations):
        z, _ = _estep(denoiser, y, y_spec, _transfer(kernel, h, w), z if p.warm_start else None, sigma_n, p, turn, generator)
        turn += p.estep_steps
        kernel = _kernel_from_edges(z, y_grads, support, kernel, p)
        dy, dx = _centre_shift(kernel)
        if dy or dx:
            kernel = _shift_kernel(kernel, dy, dx)
            z = torch.roll(z, (dy, dx), dims=(-2, -1))
    return kernel, z, turn


def _for_kernel(x: Tensor, p: BlindParams) -> Tensor:
    """The channels the kernel is fitted on: all, or the luminance."""
    if p.luminance and x.shape[1] == 3:
        weights = torch.tensor((0.299, 0.587, 0.114), dtype=x.dtype)
        return (x * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    return x


def estimate_kernel(y: Tensor, denoiser, size: int = 31, *, noise_sigma: float, generator: torch.Generator | None = None,
                    params: BlindParams = BlindParams()) -> Tensor:
    """The (size, size) blur kernel of a blurry image: float64, non-negative, sum 1, centred as ``params.centre``.

    ``y``: (1, C, H, W) or (C, H, W) in [-1, 1], blurred circularly by one kernel for all channels;
    ``size``: the odd support (at least 3, at most half the image's shorter side), larger than the
    blur; ``noise_sigma``: the Gaussian noise σ in library units (twice the [0, 1]-scale value);
    ``generator``: the noise of stochastic E-steps (``params.estep_renoise`` > 0 only).
    Raises RestoreError for a bad image, size, σ or params.
    """
    y = _check_inputs(y, size, noise_sigma)
    p = params
    levels = _pyramid(tuple(y.shape[-2:]), size, p.level_ratio, p.coarsest_kernel)
    kernel, z, turn = None, None, 0
    previous = None
    with torch.no_grad():
        for level in levels:
            y_level = _level_image(y.float(), level)
            if kernel is None:
                kernel = _gaussian(level.kernel_size, p.init_std)
            else:
                ratio = (level.scale[0] / previous.scale[0], level.scale[1] / previous.scale[1])
                kernel = _project(_resample_kernel(kernel, level.kernel_size, ratio), 0.0)
                if p.upsample_blur > 0:
                    kernel = _blur_kernel(kernel, p.upsample_blur)
                z = F.interpolate(z, size=level.shape, mode="bilinear", align_corners=False)
            iterations = p.final_iterations if level is levels[-1] else p.iterations
            kernel, z, turn = _em_level(denoiser, y_level, kernel, z, noise_sigma * level.noise_gain, p, turn, iterations, generator)
            previous = level
    return _final_centre(kernel, p.centre)


def estimate_nfe(shape: tuple[int, int], size: int = 31, params: BlindParams = BlindParams()) -> int:
    """Network evaluations :func:`estimate_kernel` makes on an image of ``shape`` (H, W) (at the pyramid's sizes)."""
    levels = _pyramid(tuple(shape), size, params.level_ratio, params.coarsest_kernel)
    return params.estep_steps * (params.iterations * (len(levels) - 1) + params.final_iterations)


def blind_deblur(y: Tensor, denoiser, size: int = 31, *, noise_sigma: float, generator: torch.Generator | None = None,
                 params: BlindParams = BlindParams()) -> tuple[Tensor, Tensor]:
    """(x̂, kernel): the kernel of :func:`estimate_kernel`, then non-blind DPIR with it (``final_steps``, ``final_lam``).

    x̂ has y's shape as (1, C, H, W); the kernel is float64 (size, size).
    """
    y4 = _check_inputs(y, size, noise_sigma)
    kernel = estimate_kernel(y4, denoiser, size, noise_sigma=noise_sigma, generator=generator, params=params)
    return restore_with_kernel(y4, denoiser, kernel, noise_sigma=noise_sigma, params=params), kernel


def restore_with_kernel(y: Tensor, denoiser, kernel: Tensor, *, noise_sigma: float, params: BlindParams = BlindParams()) -> Tensor:
    """Non-blind DPIR (circular blur by ``kernel``) with the final settings of ``params``."""
    from operators.blur import make_blur
    from restore.noise import GaussianNoise
    from restore.samplers.dpir import DPIRParams, dpir

    op = make_blur(kernel, tuple(y.shape[1:]), "circular").to(y.dtype)
    with torch.no_grad():
        return dpir(denoiser, op, y, noise=GaussianNoise(noise_sigma), steps=params.final_steps,
                    params=DPIRParams(lam=params.final_lam))


# ---------------------------------------------------------------------------------------------
# The classical baseline: L0-gradient latent images (Pan et al. 2014, Xu et al. 2013), coarse to fine.

#: L0 weight of the latent-image step at the first iteration of every level (library units: 4 × the
#: [0, 1]-scale value, 4e-3 in Pan et al.'s code), its decay per iteration and floor
CLASSICAL_L0 = 0.016
CLASSICAL_L0_DECAY = 0.9
CLASSICAL_L0_MIN = 4e-4
#: iterations per level, kernel regularisation (relative) and pruning of the classical estimate
CLASSICAL_ITERATIONS = 5
CLASSICAL_KERNEL_REG = 0.01
CLASSICAL_PRUNE = 0.05
#: TV weight of the final non-blind TV deconvolution (library units), per unit noise σ (library units)
CLASSICAL_TV_PER_SIGMA = 0.2


def _difference_transfers(h: int, w: int) -> tuple[Tensor, Tensor]:
    """rfft2 transfer functions of x - roll(x, 1) along the width and along the height."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    dh = (1 - torch.exp(-2j * math.pi * fx)).expand(h, -1)
    dv = (1 - torch.exp(-2j * math.pi * fy)).expand(-1, w // 2 + 1)
    return dh, dv


def _l0_deblur(y: Tensor, K: Tensor, lam: float, beta_max: float = 1e5, kappa: float = 2.0) -> Tensor:
    """argmin_x ‖k * x - y‖² + λ ‖∇x‖_0 by half-quadratic splitting (Xu, Lu, Xu & Jia 2011; Pan et al. 2014).

    The auxiliary gradients are hard-thresholded at λ/β (squared magnitude over channels), β doubling
    from 2λ to ``beta_max``; every x-step is solved exactly by FFT (circular boundaries).
    """
    h, w = y.shape[-2:]
    dh, dv = _difference_transfers(h, w)
    Y = torch.fft.rfft2(y)
    num0, den0 = K.conj() * Y, K.abs() ** 2
    grad_power = dh.abs() ** 2 + dv.abs() ** 2
    x, beta = y, 2 * lam
    while beta < beta_max:
        gx, gy = _gradients(x)
        keep = ((gx**2 + gy**2).sum(dim=1, keepdim=True) >= lam / beta).to(x.dtype)
        num = num0 + beta * (dh.conj() * torch.fft.rfft2(gx * keep) + dv.conj() * torch.fft.rfft2(gy * keep))
        x = torch.fft.irfft2(num / (den0 + beta * grad_power), s=(h, w))
        beta *= kappa
    return x


def tv_deconvolve(y: Tensor, kernel: Tensor, weight: float, iterations: int = 100) -> Tensor:
    """argmin_x ½‖k * x - y‖² + weight · TV(x) (isotropic per channel, circular blur) by ADMM; (1, C, H, W)."""
    h, w = y.shape[-2:]
    y64 = y.double()
    K = _transfer(kernel.double(), h, w)
    dh, dv = _difference_transfers(h, w)
    mu = 10 * weight if weight > 0 else 1.0
    num0 = K.conj() * torch.fft.rfft2(y64)
    den = K.abs() ** 2 + mu * (dh.abs() ** 2 + dv.abs() ** 2)
    x = y64
    zx, zy = _gradients(x)
    ux, uy = torch.zeros_like(zx), torch.zeros_like(zy)
    for _ in range(iterations):
        rhs = num0 + mu * (dh.conj() * torch.fft.rfft2(zx - ux) + dv.conj() * torch.fft.rfft2(zy - uy))
        x = torch.fft.irfft2(rhs / den, s=(h, w))
        gx, gy = _gradients(x)
        vx, vy = gx + ux, gy + uy
        norm = (vx**2 + vy**2).sqrt()
        shrink = (1 - (weight / mu) / norm.clamp_min(1e-12)).clamp_min(0)
        zx, zy = vx * shrink, vy * shrink
        ux, uy = vx - zx, vy - zy
    return x.to(y.dtype)


def classical_blind_baseline(y: Tensor, size: int = 31, noise_sigma: float = 0.0) -> tuple[Tensor, Tensor]:
    """(x̂, kernel) by a classical blind deconvolution without any learned prior.

    Kernel: coarse to fine on the luminance, alternating an L0-gradient latent image (Pan et al.
    2014's natural-image setting; Xu et al. 2013) with the same constrained least-squares kernel fit
    on gradients as :func:`estimate_kernel`. Image: TV deconvolution with that kernel.
    """
    y = _check_inputs(y, size, noise_sigma)
    y64 = y.double()
    gray = _for_kernel(y64, BlindParams(luminance=True))
    levels = _pyramid(tuple(y.shape[-2:]), size, math.sqrt(2), 5)
    kernel, previous = None, None
    for level in levels:
        y_level = _level_image(gray, level)
        h, w = level.shape
        if kernel is None:
            kernel = _gaussian(level.kernel_size, 0.5)
        else:
            ratio = (level.scale[0] / previous.scale[0], level.scale[1] / previous.scale[1])
            kernel = _project(_resample_kernel(kernel, level.kernel_size, ratio), 0.0)
        support = _Support(level.kernel_size, h, w)
        y_grads = _gradients(y_level)
        tx, ty = (torch.fft.rfft2(g)[0] for g in y_grads)
        lam = CLASSICAL_L0
        for _ in range(CLASSICAL_ITERATIONS):
            latent = _l0_deblur(y_level, _transfer(kernel, h, w), lam)
            sx, sy = (torch.fft.rfft2(g)[0] for g in _gradients(latent))
            power = (sx.abs() ** 2 + sy.abs() ** 2).sum(dim=0)
            cross = (sx.conj() * tx + sy.conj() * ty).sum(dim=0)
            kernel = _project(_kernel_step(power, cross, support, kernel, CLASSICAL_KERNEL_REG, 100), CLASSICAL_PRUNE)
            dy, dx = _centre_shift(kernel)
            if dy or dx:
                kernel = _shift_kernel(kernel, dy, dx)
            lam = max(lam * CLASSICAL_L0_DECAY, CLASSICAL_L0_MIN)
        previous = level
    kernel = _final_centre(kernel, BlindParams().centre)
    weight = CLASSICAL_TV_PER_SIGMA * max(noise_sigma, SIGMA_FLOOR)
    return tv_deconvolve(y, kernel, weight).clamp(-1, 1).to(y.dtype), kernel


# ---------------------------------------------------------------------------------------------
# Evaluation.


def kernel_ncc(estimated: Tensor, true: Tensor) -> float:
    """Max over integer shifts of Σ a·b / (‖a‖ ‖b‖) for two 2-D kernels zero-padded to a common size."""
    a = torch.as_tensor(estimated, dtype=torch.float64)
    b = torch.as_tensor(true, dtype=torch.float64)
    if a.dim() != 2 or b.dim() != 2:
        raise RestoreError(f"kernel_ncc takes two 2-D kernels, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    norm = a.norm() * b.norm()
    if norm == 0:
        return 0.0
    h, w = a.shape[0] + b.shape[0] - 1, a.shape[1] + b.shape[1] - 1  # every shift with overlap, no wrap-around
    corr = torch.fft.irfft2(torch.fft.rfft2(a, s=(h, w)) * torch.fft.rfft2(b, s=(h, w)).conj(), s=(h, w))
    return float(corr.max() / norm)


def align_to_reference(x_hat: Tensor, reference: Tensor, max_shift: int = 8) -> Tensor:
    """``x_hat`` circularly shifted (sub-pixel, by a Fourier phase ramp) to best match ``reference``.

    For evaluation only: a blind estimate is determined up to a translation (the kernel moved one
    way, the image the other fit the data equally), so blind-deblurring benchmarks (Levin et al.
    2009, Köhler et al. 2012) compare images after the best shift. Integer search by
    cross-correlation within ±``max_shift`` px, then a 1/4 and a 1/8 px refinement by squared error.
    """
    if x_hat.shape != reference.shape or x_hat.dim() != 4:
        raise RestoreError(f"align_to_reference takes two (B, C, H, W) batches of one shape, got {tuple(x_hat.shape)} and {tuple(reference.shape)}")
    h, w = x_hat.shape[-2:]
    X = torch.fft.fft2(x_hat.double())
    R = torch.fft.fft2(reference.double())
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    out = []
    for b in range(x_hat.shape[0]):
        corr = torch.fft.ifft2(R[b] * X[b].conj()).real.sum(dim=0)
        oy = (torch.arange(h) + h // 2) % h - h // 2
        ox = (torch.arange(w) + w // 2) % w - w // 2
        far = (oy.abs()[:, None] > max_shift) | (ox.abs()[None, :] > max_shift)
        index = int(corr.masked_fill(far, -math.inf).argmax())
        best = (float(oy[index // w]), float(ox[index % w]))

        def shifted(dy: float, dx: float) -> Tensor:
            return torch.fft.ifft2(X[b] * torch.exp(-2j * math.pi * (fy * dy + fx * dx))).real

        def error(shift: tuple[float, float]) -> float:
            return float(((shifted(*shift) - reference[b].double()) ** 2).mean())

        for step in (0.25, 0.125):
            candidates = [(best[0] + i * step, best[1] + j * step) for i in range(-2, 3) for j in range(-2, 3)]
            best = min(candidates, key=error)
        out.append(shifted(*best).to(x_hat.dtype))
    return torch.stack(out)
