"""The noise level of an image, estimated from the image itself.

Donoho & Johnstone's robust wavelet estimator (Biometrika 1994), as scikit-image's ``estimate_sigma``
computes it but without PyWavelets: white Gaussian noise of standard deviation σ gives the finest
diagonal (HH) wavelet coefficients of an orthonormal wavelet the same σ, while a photograph's own
content is sparse there, so σ ≈ median(|HH|) / 0.6745 (the median absolute deviation of a normal
variable is 0.6745 σ). The wavelet is Daubechies' db2 (four taps, two vanishing moments: smooth
gradients give nothing), with symmetric extension at the borders; colour channels are estimated
separately and averaged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

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


def estimate_sigma(image: Tensor) -> float:
    """σ of additive white Gaussian noise in ``image`` (C, H, W), in the image's own units (0.0 if constant)."""
    if image.dim() != 3 or min(image.shape[-2:]) < 2:
        raise ValueError(f"estimate_sigma needs a (C, H, W) image of at least 2×2 pixels, got {tuple(image.shape)}")
    details = diagonal_details(image)
    sigmas = details.abs().flatten(1).median(dim=1).values / MAD_TO_SIGMA
    sigma = float(sigmas.mean())
    return sigma if math.isfinite(sigma) else 0.0
