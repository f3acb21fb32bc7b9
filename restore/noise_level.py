"""The noise level of an image, estimated from the image itself.

Two classical estimators, both biased upwards by a photograph's own fine detail (noise adds to what
they measure; texture only ever adds more), so restore takes the smaller of the two:

* Patch PCA (Chen, Zhu & Heng, "An efficient statistical method for image noise level estimation",
  ICCV 2015): white Gaussian noise of standard deviation σ adds σ² to every eigenvalue of the covariance
  of the image's k × k (× C) patches, while the image's own patches live near a low-dimensional subspace.
  Sorted in decreasing order, the eigenvalues that are noise only are the tail whose mean equals its
  median; drop the largest until the tail's mean is no larger than its median, and σ² is that mean.
  Colour patches give it many noise-only dimensions (a photograph's chroma is smooth): it reads
  noise-free colour photographs as σ ≈ 0.002 on the [0, 1] scale.
* Wavelet MAD (Donoho & Johnstone, Biometrika 1994; scikit-image's ``estimate_sigma``, here without
  PyWavelets): noise of σ gives the finest diagonal (HH) coefficients of an orthonormal wavelet the same
  σ, while image content is sparse there, so σ ≈ median(|HH|) / 0.6745. Daubechies' db2, symmetric
  borders, channels averaged. On grayscale photographs, whose 49 patch dimensions leave the PCA too few
  noise-only eigenvalues, it is the better of the two.

Measured on BSDS training images: benchmarks/RESULTS.md, "Noise level estimated from the measurement".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: patch side (the paper's 7 or 8); colour patches are k × k × C vectors
PATCH = 7
#: patches used at most (a strided subset of a large image: the covariance needs far fewer)
MAX_PATCHES = 250_000


def estimate_sigma(image: Tensor) -> float:
    """σ of additive white Gaussian noise in ``image`` (C, H, W), in the image's own units (0.0 if constant):
    the smaller of :func:`patch_sigma` and :func:`wavelet_sigma` (the wavelet's alone under 8 × 8 pixels)."""
    if image.dim() != 3 or min(image.shape[-2:]) < 2:
        raise ValueError(f"estimate_sigma needs a (C, H, W) image of at least 2×2 pixels, got {tuple(image.shape)}")
    if min(image.shape[-2:]) < PATCH + 1:
        return wavelet_sigma(image)
    return min(patch_sigma(image), wavelet_sigma(image))


def patch_sigma(image: Tensor) -> float:
    """σ by the patch PCA of Chen et al.: the mean of the covariance eigenvalues' noise-only tail, square-rooted."""
    h, w = image.shape[-2:]
    count = (h - PATCH + 1) * (w - PATCH + 1)
    stride = max(1, math.ceil(math.sqrt(count / MAX_PATCHES)))
    patches = F.unfold(image.double()[None], PATCH, stride=stride)[0]  # (C·k·k, N)
    patches = patches - patches.mean(dim=1, keepdim=True)
    covariance = patches @ patches.T / patches.shape[1]
    eigenvalues = torch.linalg.eigvalsh(covariance).flip(0).clamp_min(0)  # decreasing
    for first in range(eigenvalues.numel()):
        tail = eigenvalues[first:]
        if tail.mean() <= tail.median():
            sigma = math.sqrt(float(tail.mean()))
            return sigma if math.isfinite(sigma) else 0.0
    return 0.0


#: db2 decomposition high-pass filter (orthonormal; PyWavelets' ``dec_hi`` of "db2")
DB2_HIGH = (-0.48296291314469025, 0.836516303737469, -0.22414386804185735, -0.12940952255092145)
#: median |N(0, 1)|
MAD_TO_SIGMA = 0.6744897501960817


def diagonal_details(image: Tensor) -> Tensor:
    """The finest HH subband of each channel of (C, H, W) (stride 2, symmetric borders), (C, H', W')."""
    taps = torch.tensor(DB2_HIGH, dtype=torch.float64).flip(0)  # conv2d correlates; the filter is a convolution
    x = image.double()[:, None]
    pad = len(DB2_HIGH) - 1
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate" if min(x.shape[-2:]) <= pad else "reflect")
    rows = F.conv2d(x, taps.view(1, 1, -1, 1), stride=(2, 1))
    return F.conv2d(rows, taps.view(1, 1, 1, -1), stride=(1, 2))[:, 0]


def wavelet_sigma(image: Tensor) -> float:
    """σ by the wavelet MAD (Donoho & Johnstone): median |HH| / 0.6745 of db2's finest diagonal band, per channel, averaged."""
    details = diagonal_details(image)
    sigmas = details.abs().flatten(1).median(dim=1).values / MAD_TO_SIGMA
    sigma = float(sigmas.mean())
    return sigma if math.isfinite(sigma) else 0.0
