"""Quality metrics on images in [-1, 1]: PSNR and SSIM on the [0, 1] scale, LPIPS (AlexNet, v0.1).

PSNR uses data range 1 over all pixels and channels; SSIM is scikit-image's
``structural_similarity`` (``channel_axis`` for colour, data range 1), the protocol of
``../shared/protocol.md``. LPIPS (Zhang et al., CVPR 2018) needs torchvision's ImageNet AlexNet
weights: :func:`load_lpips` uses them from the torch hub cache, downloads them when online, and
otherwise returns the reason it cannot, so callers report the other metrics.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from restore.errors import RestoreError

#: torchvision's AlexNet weights file, which LPIPS's backbone loads
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = "https://download.pytorch.org/models/" + ALEXNET_FILE


def _check_pair(x: Tensor, ref: Tensor) -> None:
    if x.shape != ref.shape:
        raise RestoreError(f"restoration and reference differ in size: {tuple(x.shape[-3:])} vs {tuple(ref.shape[-3:])}")


def psnr(x: Tensor, ref: Tensor) -> Tensor:
    """PSNR in dB per image of batches (B, C, H, W) in [-1, 1], with data range 1 on the [0, 1] scale."""
    _check_pair(x, ref)
    mse = ((x.double() - ref.double()) / 2).pow(2).flatten(1).mean(dim=1)
    return -10 * torch.log10(mse.clamp_min(1e-20))


def ssim(x: Tensor, ref: Tensor) -> Tensor:
    """SSIM per image as scikit-image computes it (Gaussian-free 7×7 window, data range 1)."""
    from skimage.metrics import structural_similarity

    _check_pair(x, ref)
    values = []
    for a, b in zip(_unit_numpy(x), _unit_numpy(ref)):
        if min(a.shape[:2]) < 7:
            values.append(float("nan"))  # SSIM's window does not fit
            continue
        values.append(structural_similarity(a, b, data_range=1.0, channel_axis=2))
    return torch.tensor(values, dtype=torch.float64)


def _unit_numpy(x: Tensor) -> np.ndarray:
    return ((x.detach().double().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()


def alexnet_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def load_lpips(device: str | torch.device = "cpu"):
    """(LPIPS model, None) when AlexNet's weights are available or downloadable, else (None, reason)."""
    path = alexnet_weights_path()
    if not path.is_file():
        try:
            torch.hub.download_url_to_file(ALEXNET_URL, str(path), progress=False)
        except Exception:  # offline or blocked: any network error means the same to the user
            return None, (f"LPIPS unavailable: AlexNet weights {ALEXNET_FILE} not found in {path.parent} "
                          f"and could not be downloaded (offline?); place the file from {ALEXNET_URL} there")
    try:
        import lpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's deprecation chatter about `pretrained=`
            model = lpips.LPIPS(net="alex", version="0.1", verbose=False)
    except Exception as err:
        return None, f"LPIPS unavailable: {err}"
    return model.eval().to(device), None


@torch.no_grad()
def lpips_distance(model, x: Tensor, ref: Tensor) -> Tensor:
    """LPIPS per image (inputs in [-1, 1], as LPIPS expects); grayscale is replicated to RGB."""
    _check_pair(x, ref)
    device = next(model.parameters()).device
    if x.shape[1] == 1:
        x, ref = x.expand(-1, 3, -1, -1), ref.expand(-1, 3, -1, -1)
    return model(x.float().to(device), ref.float().to(device)).flatten().double().cpu()


def compute_metrics(x: Tensor, ref: Tensor, lpips=None) -> dict[str, float]:
    """Mean PSNR, SSIM and LPIPS (NaN without a model) of a batch against its references."""
    x, ref = x.detach().cpu(), ref.detach().cpu()
    lp = lpips_distance(lpips, x, ref).mean().item() if lpips is not None else math.nan
    return {"psnr": psnr(x, ref).mean().item(), "ssim": ssim(x, ref).mean().item(), "lpips": lp}


# ---- measures PSNR and SSIM miss: the texture of a fill, the colour of a colourisation ---------------
def gradient_magnitude(x: Tensor) -> Tensor:
    """|∇x| per pixel (B, H, W) of images (B, C, H, W): central differences (replicated borders), channel mean."""
    x = x.double()
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    dy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    dx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    return (dx * dx + dy * dy).sqrt().mean(dim=1)


def texture_ratio(x: Tensor, ref: Tensor, missing: Tensor) -> Tensor:
    """Mean gradient magnitude of the restoration over the reference's, inside the missing pixels (B,).

    1 when a fill carries as much detail as the truth; a blur scores well below (the smooth fills of an
    MMSE estimate: ~0.4), noise above. ``missing``: (B or 1, 1 or C, H, W), True where pixels were hidden.
    """
    _check_pair(x, ref)
    hole = missing.bool().any(dim=1).expand(x.shape[0], -1, -1)
    gx, gr = gradient_magnitude(x), gradient_magnitude(ref)
    return (gx * hole).flatten(1).sum(dim=1) / (gr * hole).flatten(1).sum(dim=1).clamp_min(1e-12)


def hole_psnr(x: Tensor, ref: Tensor, missing: Tensor) -> Tensor:
    """PSNR (dB, [0, 1] scale) over the missing pixels only (B,)."""
    _check_pair(x, ref)
    hole = missing.bool().expand_as(x) if missing.shape[1] == x.shape[1] else missing.bool().any(dim=1, keepdim=True).expand_as(x)
    err = (((x.double() - ref.double()) / 2) ** 2 * hole).flatten(1).sum(dim=1) / hole.flatten(1).sum(dim=1).clamp_min(1)
    return -10 * torch.log10(err.clamp_min(1e-20))


def colourfulness(x: Tensor) -> Tensor:
    """Hasler & Süsstrunk's colourfulness (2003) per image (B,), on the [0, 255] scale as in the paper."""
    rgb = (x.double().clamp(-1, 1) + 1) * 127.5
    rg = rgb[:, 0] - rgb[:, 1]
    yb = 0.5 * (rgb[:, 0] + rgb[:, 1]) - rgb[:, 2]
    std = (rg.flatten(1).var(dim=1, unbiased=False) + yb.flatten(1).var(dim=1, unbiased=False)).sqrt()
    mean = (rg.flatten(1).mean(dim=1) ** 2 + yb.flatten(1).mean(dim=1) ** 2).sqrt()
    return std + 0.3 * mean


def chroma_error(x: Tensor, ref: Tensor) -> Tensor:
    """RMS difference of the chroma (JPEG's Cb and Cr, [0, 1] scale) per image (B,): wrong colours, not wrong light."""
    _check_pair(x, ref)

    def chroma(v: Tensor) -> Tensor:
        u = (v.double().clamp(-1, 1) + 1) / 2
        r, g, b = u[:, 0], u[:, 1], u[:, 2]
        return torch.stack([-0.168736 * r - 0.331264 * g + 0.5 * b, 0.5 * r - 0.418688 * g - 0.081312 * b], dim=1)

    return (chroma(x) - chroma(ref)).pow(2).flatten(1).mean(dim=1).sqrt()
