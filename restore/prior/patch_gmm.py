"""A patch prior: a mixture of low-rank Gaussians over p×p×C image patches, with its exact patch denoiser.

The model of EPLL (Zoran & Weiss, ICCV 2011) and of Wang et al. 2024 ("Diffusion Models Learn
Low-Dimensional Distributions via Subspace Clustering"): a patch x ∈ R^D (D = C·p·p, ordered channel,
row, column as ``F.unfold`` orders it) follows

    x ~ Σ_k π_k N(μ_k, Σ_k),    Σ_k = U_k diag(λ_k) U_kᵀ + δ_k I,

with U_k ∈ R^{D×d} orthonormal (d = ``rank``) and δ_k > 0 the isotropic floor (probabilistic PCA: the
mean of the discarded eigenvalues, at least ``min_delta``). At noise level σ (z = x + σ ε) the posterior
of the component and its Wiener mean are closed form; with c = U_kᵀ (z - μ_k):

    r_k(z)  ∝ π_k N(z; μ_k, Σ_k + σ² I)
    m_k(z)  = μ_k + U_k diag((λ_k+δ_k)/(λ_k+δ_k+σ²)) c + δ_k/(δ_k+σ²) (z - μ_k - U_k c)
    E[x|z]  = Σ_k r_k m_k

so one pass costs two (patches × D) · (D × K·d) matrix products for any σ; nothing is factorised per σ.

:class:`PatchGMMDenoiser` applies it to a whole image through the VP diffusion interface
(z = x_t / sqrt(ᾱ_t), σ² = (1 - ᾱ_t)/ᾱ_t): it denoises every overlapping patch on a grid of stride
``stride`` and averages the patch estimates per pixel (``F.fold``). Stride 2 is the default: on 5 BSDS
validation crops (K=64, rank 32) stride 1 gained only 0.05–0.1 dB for 4.5× the time, stride 4 lost 0.2–0.35 dB. The grid always starts at the top-left corner and ends at the bottom-right one:
the image is reflect-padded on the bottom/right by less than ``stride`` pixels to make the grid fit
(or up to ``patch`` pixels when the image is smaller than a patch), and the padding is cropped away.
So with one component, ``patch`` equal to the image size and no padding it is exactly the Gaussian
denoiser of :mod:`restore.prior.gaussian`.

Grayscale (C = 1) images use the RGB model marginalised to BT.601 luma (the ``gray`` colour operator's
y = 0.299 R + 0.587 G + 0.114 B): the luma patch y = P x of a GMM is a GMM with means P μ_k and
covariances P U_k diag(λ_k) U_kᵀ Pᵀ + δ_k ‖w‖² I, re-factorised once (SVD) at the first gray image. That is the
exact prior of a gray image under the colour model — no separate fit, no channel-replication hack.

Fitting (:func:`fit_patch_gmm`) is EM on random patches (with the 8 flips/rotations) in float32:
k-means on contrast-normalised, mean-removed patches for the start, then full EM with the low-rank
M-step (eigendecomposition of each weighted covariance; only patches with a responsibility above
1e-4 enter it, which keeps the M-step cheap). ``python -m restore.prior.patch_gmm fit --out FILE``
fits on BSDS500 train+test minus ``benchmarks/val_split.txt``.

The shipped ``weights/patch_gmm.safetensors`` (3.2 MB, fp32): K = 64, rank 64, 8×8×3 patches, 150k
patches, 45 EM iterations in 8.5 min on one shared CPU core (``fit --rank 64 --minutes 8.5``). On the
50 validation crops (benchmarks/prior_denoise.py) it gives 37.87 / 33.59 / 29.59 / 25.97 dB at
σ = 0.025 / 0.05 / 0.1 / 0.2, about 1.5 s per 256×256 RGB call on one core at stride 2. Rank mattered
more than K (10 crops, σ = 0.025: rank 32 → 36.79, rank 48 → 37.48, rank 64 → 38.14 dB; K = 128 at
rank 32 gained < 0.1 dB for twice the time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from restore.prior.denoiser import Denoiser
from restore.prior.schedule import make_betas
from restore.prior.weights import METADATA_KEY

LUMA = (0.299, 0.587, 0.114)
LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------- the mixture itself


def gmm_posterior(z: Tensor, log_pi: Tensor, mu: Tensor, U: Tensor, lam: Tensor, delta: Tensor, sigma2: float,
                  want_mean: bool = True, chunk: int = 8192) -> tuple[Tensor, Tensor | None, Tensor]:
    """Responsibilities (N, K), posterior means (N, D) and log-likelihoods (N,) of noisy patches z (N, D).

    Parameters: log_pi (K), mu (K, D), U (K, D, d) orthonormal columns, lam (K, d) ≥ 0, delta (K) > 0;
    the likelihood is that of z ~ Σ_k π_k N(μ_k, U_k diag(λ_k) U_kᵀ + (δ_k + σ²) I). Done in chunks of rows.
    """
    K, D, d = U.shape
    dtype = z.dtype
    log_pi, mu, U, lam, delta = (a.to(dtype) for a in (log_pi, mu, U, lam, delta))
    u_cat = U.permute(1, 0, 2).reshape(D, K * d)  # column block k is U_k
    mu_u = torch.einsum("kD,kDr->kr", mu, U)  # U_kᵀ μ_k
    mu_sq = (mu * mu).sum(1)
    var_in = lam + delta[:, None] + sigma2  # (K, d)
    var_out = delta + sigma2  # (K,)
    const = log_pi - 0.5 * (var_in.log().sum(1) + (D - d) * var_out.log() + D * LOG_2PI)
    gain_in = (lam + delta[:, None]) / var_in  # Wiener gains inside and outside the subspace
    gain_out = delta / var_out
    resp, means, logl = [], [], []
    for start in range(0, z.shape[0], chunk):
        zc = z[start : start + chunk]
        coeffs = (zc @ u_cat).view(-1, K, d) - mu_u  # U_kᵀ (z - μ_k)
        zm = zc @ mu.T
        res2 = ((zc * zc).sum(1, keepdim=True) - 2 * zm + mu_sq - (coeffs * coeffs).sum(-1)).clamp_min(0)
        logp = const - 0.5 * ((coeffs * coeffs / var_in).sum(-1) + res2 / var_out)
        norm = torch.logsumexp(logp, dim=1)
        r = (logp - norm[:, None]).exp()
        resp.append(r)
        logl.append(norm)
        if want_mean:
            weighted = (r[:, :, None] * (gain_in - gain_out[:, None]) * coeffs).reshape(-1, K * d)
            m = r @ (mu * (1 - gain_out)[:, None]) + (r @ gain_out)[:, None] * zc + weighted @ u_cat.T
            means.append(m)
    return torch.cat(resp), (torch.cat(means) if want_mean else None), torch.cat(logl)


def luma_marginal(mu: Tensor, U: Tensor, lam: Tensor, delta: Tensor, patch: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The GMM of luma patches y = P x (P: BT.601 weights per pixel) of an RGB patch GMM, in the same low-rank form."""
    K, D, d = U.shape
    w = torch.tensor(LUMA, dtype=torch.float64, device=mu.device)
    pp = patch * patch
    mu_g = torch.einsum("c,kcp->kp", w, mu.double().reshape(K, 3, pp))
    pu = torch.einsum("c,kcpr->kpr", w, U.double().reshape(K, 3, pp, d)) * lam.double().clamp_min(0).sqrt()[:, None, :]
    u_g, s, _ = torch.linalg.svd(pu, full_matrices=False)  # (K, pp, min(pp, d))
    return mu_g, u_g, s * s, delta.double() * float((w * w).sum())


# ----------------------------------------------------------------------------- the denoiser


class PatchGMMDenoiser(Denoiser):
    """x̂0 = average over overlapping patches of each patch's exact posterior mean under the patch GMM."""

    def __init__(self, weights: Tensor, means: Tensor, bases: Tensor, eigvals: Tensor, delta: Tensor, *, patch: int = 8,
                 channels: int = 3, stride: int = 2, schedule: str = "linear", betas: Tensor | None = None,
                 chunk: int = 8192, info: dict | None = None) -> None:
        super().__init__(make_betas(schedule) if betas is None else betas)
        K, D, d = bases.shape
        if D != channels * patch * patch or means.shape != (K, D) or eigvals.shape != (K, d) or weights.shape != (K,):
            raise ValueError(f"GMM shapes do not fit: weights {tuple(weights.shape)}, means {tuple(means.shape)}, "
                             f"bases {tuple(bases.shape)}, eigvals {tuple(eigvals.shape)}, patch {patch}, channels {channels}")
        if stride < 1 or stride > patch:
            raise ValueError(f"stride must be in 1..patch ({patch}), got {stride}")
        self.patch, self.channels, self.stride, self.schedule, self.chunk = patch, channels, stride, schedule, chunk
        self.info = dict(info or {})
        delta = torch.as_tensor(delta, dtype=torch.float64).expand(K).clone()
        self.register_buffer("log_pi", (weights.double() / weights.double().sum()).log())
        self.register_buffer("mu", means.double())
        self.register_buffer("U", bases.double())
        self.register_buffer("lam", eigvals.double().clamp_min(0))
        self.register_buffer("delta", delta)

    @property
    def num_components(self) -> int:
        return self.U.shape[0]

    @property
    def rank(self) -> int:
        return self.U.shape[2]

    def _params(self, channels: int, dtype: torch.dtype) -> tuple[Tensor, ...]:
        if channels == self.channels:
            params = (self.log_pi, self.mu, self.U, self.lam, self.delta)
        elif channels == 1 and self.channels == 3:  # grayscale: the luma marginal, computed at the first gray image
            luma = self.__dict__.get("_luma")
            if luma is None or luma[0] is not self.mu:
                marginal = luma_marginal(self.mu, self.U, self.lam, self.delta, self.patch)
                luma = self.__dict__["_luma"] = (self.mu, tuple(t.to(self.mu.device) for t in marginal))
            params = (self.log_pi, *luma[1])
        else:
            raise ValueError(f"this patch GMM takes {self.channels} channels" + (" or 1" if self.channels == 3 else "")
                             + f", got {channels}")
        # cache the dtype-converted copies (float32 inference must not convert 1–3 MB of buffers per call)
        key = (channels, dtype, params[1].device)
        cache = self.__dict__.setdefault("_cast", {})
        if key not in cache or cache[key][0] is not params[1]:
            if len(cache) > 4:
                cache.clear()
            cache[key] = (params[1], tuple(p.to(dtype) for p in params))
        return cache[key][1]

    def denoise_patches(self, z: Tensor, sigma2: float) -> Tensor:
        """Posterior means of flattened patches z (N, D) at noise variance σ² (no diffusion scaling)."""
        params = self._params(self.channels if z.shape[1] == self.U.shape[1] else 1, z.dtype)
        return gmm_posterior(z, *params, sigma2=sigma2, chunk=self.chunk)[1]

    def denoise_image(self, z: Tensor, sigma2: Tensor | float) -> Tensor:
        """E[x | z] for images z = x + σ ε of shape (B, C, H, W), σ² a scalar or one per image."""
        batch, channels, height, width = z.shape
        params = self._params(channels, z.dtype)
        p, s = self.patch, self.stride
        pad_h = p - height if height < p else -(height - p) % s
        pad_w = p - width if width < p else -(width - p) % s
        sigma2 = torch.as_tensor(sigma2, dtype=torch.float64).reshape(-1).expand(batch)
        x = z
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x = F.pad(z, (0, pad_w, 0, pad_h), mode=mode)
        size = x.shape[-2:]
        ones = torch.ones(1, 1, *size, dtype=z.dtype, device=z.device)
        count = F.fold(F.unfold(ones, p, stride=s), size, p, stride=s)
        out = torch.empty_like(x)
        for b in range(batch):
            cols = F.unfold(x[b : b + 1], p, stride=s)[0].T.contiguous()  # (L, D)
            est = gmm_posterior(cols, *params, sigma2=float(sigma2[b]), chunk=self.chunk)[1]
            out[b : b + 1] = F.fold(est.T[None], size, p, stride=s) / count
        return out[..., :height, :width].contiguous()

    def forward(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        ab = self.alpha_bar(t, torch.empty(1, dtype=torch.float64, device=x_t.device)).reshape(-1)  # σ² in float64
        a = ab.sqrt().to(x_t.dtype).reshape(-1, 1, 1, 1)
        return self.denoise_image(x_t / a, ((1 - ab) / ab).expand(x_t.shape[0]))

    denoise = forward

    def eps(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        ab = self.alpha_bar(t, x_t)
        return (x_t - ab.sqrt() * self.forward(x_t, t)) / (1 - ab).sqrt()

    # ------------------------------------------------------------------------- save / load

    def config(self) -> dict:
        return {"kind": "patch_gmm", "patch": self.patch, "channels": self.channels, "components": self.num_components,
                "rank": self.rank, "stride": self.stride, "schedule": self.schedule, **self.info}

    def save(self, path: str | Path, dtype: torch.dtype = torch.float32) -> None:
        """safetensors (low-rank factors in ``dtype``, the rest float32) with the config under ``restore_prior``."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {"weights": self.log_pi.exp().float(), "means": self.mu.float(), "bases": self.U.to(dtype),
                   "eigvals": self.lam.float(), "delta": self.delta.float()}
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata={METADATA_KEY: json.dumps(self.config())})
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", stride: int | None = None) -> PatchGMMDenoiser:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {})[METADATA_KEY])
        if info.get("kind") != "patch_gmm":
            raise ValueError(f"{path} is not a patch GMM (kind {info.get('kind')!r})")
        t = load_file(str(path))
        extra = {k: v for k, v in info.items()
                 if k not in {"kind", "patch", "channels", "components", "rank", "stride", "schedule"}}
        bases = t["bases"].double()
        if t["bases"].dtype in (torch.float16, torch.bfloat16):
            # half storage loses a little orthonormality: re-orthonormalise (QR keeps the column order/subspace)
            q, r = torch.linalg.qr(bases)
            bases = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
        model = cls(t["weights"], t["means"], bases, t["eigvals"], t["delta"], patch=info["patch"],
                    channels=info["channels"], stride=stride or info.get("stride", 2),
                    schedule=info.get("schedule", "linear"), info=extra)
        return model.to(device).eval()


# ----------------------------------------------------------------------------- fitting


def sample_patches(images: Sequence[Tensor], n: int, patch: int, generator: torch.Generator) -> Tensor:
    """n random patches (n, C·p·p) in [-1, 1] from uint8 or [-1, 1] float (C, H, W) images, with random flips/rotations."""
    sizes = torch.tensor([img.shape[1] * img.shape[2] for img in images], dtype=torch.float64)
    which = torch.multinomial(sizes, n, replacement=True, generator=generator)  # by area: every pixel equally likely
    counts = torch.bincount(which, minlength=len(images))
    out = []
    for i, img in enumerate(images):
        m = int(counts[i])
        if m == 0:
            continue
        top = torch.randint(img.shape[1] - patch + 1, (m,), generator=generator)
        left = torch.randint(img.shape[2] - patch + 1, (m,), generator=generator)
        offs = torch.arange(patch)
        rows, cols = (top[:, None] + offs)[:, :, None], (left[:, None] + offs)[:, None, :]
        p = img[:, rows, cols].movedim(0, 1)  # (m, C, p, p)
        p = p.float() / 127.5 - 1 if img.dtype == torch.uint8 else p.float()
        out.append(p.reshape(m, -1))
    x = torch.cat(out)
    x = x[torch.randperm(x.shape[0], generator=generator)]
    C = x.shape[1] // (patch * patch)
    x = x.view(-1, C, patch, patch)
    rot = torch.randint(4, (x.shape[0],), generator=generator)
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    for k in (1, 2, 3):
        sel = rot == k
        x[sel] = torch.rot90(x[sel], k, dims=(2, 3))
    return x.reshape(x.shape[0], -1).contiguous()


def _m_step(x: Tensor, resp: Tensor, rank: int, min_delta: float, threshold: float = 1e-4) -> tuple[Tensor, ...]:
    """Weights, means, top-``rank`` eigenvectors/values above δ, and δ (mean of the discarded eigenvalues) per component."""
    N, D = x.shape
    K = resp.shape[1]
    nk = resp.sum(0)
    weights = nk / N
    means = (resp.T @ x) / nk.clamp_min(1e-12)[:, None]
    bases = torch.empty(K, D, rank, dtype=x.dtype)
    eigvals = torch.empty(K, rank, dtype=x.dtype)
    delta = torch.empty(K, dtype=x.dtype)
    for k in range(K):
        sel = resp[:, k] > threshold
        r = resp[sel, k]
        xc = x[sel] - means[k]
        cov = (xc * r[:, None]).T @ xc / r.sum().clamp_min(1e-12)
        vals, vecs = torch.linalg.eigh(cov.double())
        vals, vecs = vals.flip(0).clamp_min(0), vecs.flip(1)
        dk = max(float(vals[rank:].mean()) if rank < D else 0.0, min_delta)
        delta[k] = dk
        eigvals[k] = (vals[:rank] - dk).clamp_min(0).to(x.dtype)
        bases[k] = vecs[:, :rank].to(x.dtype)
    return weights, means, bases, eigvals, delta


def _kmeans_init(x: Tensor, K: int, iters: int, generator: torch.Generator) -> Tensor:
    """Hard labels from k-means on mean-removed, contrast-normalised patches (clusters by structure, not brightness)."""
    y = x - x.mean(1, keepdim=True)
    y = y / y.norm(dim=1, keepdim=True).clamp_min(1e-3)
    centres = y[torch.randperm(y.shape[0], generator=generator)[:K]].clone()
    for _ in range(iters):
        labels = torch.cat([(c @ centres.T * 2 - (centres * centres).sum(1)).argmax(1) for c in y.split(32768)])
        for k in range(K):
            sel = labels == k
            centres[k] = y[sel].mean(0) if sel.any() else y[int(torch.randint(y.shape[0], (1,), generator=generator))]
    return labels


def fit_patch_gmm(images: Sequence[Tensor] | Tensor, K: int = 64, patch: int = 8, rank: int = 64, iters: int = 30,
                  generator: torch.Generator | None = None, *, n_patches: int = 150_000, min_delta: float = 1e-5,
                  minutes: float | None = None, kmeans_iters: int = 10, stride: int = 2, schedule: str = "linear",
                  on_iter: Callable[[int, float], None] | None = None) -> PatchGMMDenoiser:
    """EM for a K-component rank-``rank`` patch GMM.

    ``images``: a sequence of (C, H, W) images (uint8, or float in [-1, 1]) to draw ``n_patches`` random
    patches from, or a ready (N, D) float tensor of flattened patches. Stops after ``iters`` EM iterations
    or ``minutes``, whichever first. ``on_iter(iteration, mean log-likelihood per dimension)``.
    """
    generator = generator or torch.Generator().manual_seed(0)
    start = time.time()
    if isinstance(images, Tensor) and images.dim() == 2:
        x = images.float()
    else:
        x = sample_patches(images, n_patches, patch, generator)
    N, D = x.shape
    channels = D // (patch * patch)
    if channels * patch * patch != D:
        raise ValueError(f"patch vectors of length {D} are not C·{patch}·{patch}")
    rank = min(rank, D)
    labels = _kmeans_init(x, K, kmeans_iters, generator)
    resp = F.one_hot(labels, K).to(x.dtype)
    history = []
    for it in range(iters):
        weights, means, bases, eigvals, delta = _m_step(x, resp, rank, min_delta)
        dead = weights < 2 * rank / N  # too few patches for a rank-d covariance: restart it on a random patch's cluster
        if dead.any():
            weights = weights.clamp_min(1.0 / N)
        resp, _, logl = gmm_posterior(x, weights.log(), means, bases, eigvals, delta, 0.0, want_mean=False)
        if dead.any():  # re-seed dead components at the worst-explained patches
            worst = logl.argsort()[: int(dead.sum()) * max(4 * rank, 64)]
            for j, k in enumerate(torch.nonzero(dead).flatten().tolist()):
                chunk = worst[j * max(4 * rank, 64) : (j + 1) * max(4 * rank, 64)]
                resp[chunk] = 0
                resp[chunk, k] = 1
        history.append(float(logl.mean()) / D)
        if on_iter:
            on_iter(it, history[-1])
        if minutes is not None and time.time() - start > 60 * minutes:
            break
    weights, means, bases, eigvals, delta = _m_step(x, resp, rank, min_delta)
    info = {"fit": {"patches": N, "iterations": len(history), "seconds": round(time.time() - start, 1),
                    "loglik_per_dim": history[-1] if history else None, "min_delta": min_delta}}
    return PatchGMMDenoiser(weights.clamp_min(1e-8), means, bases, eigvals, delta, patch=patch, channels=channels,
                            stride=stride, schedule=schedule, info=info)


def training_images(roots: Sequence[str | Path], exclude_file: str | Path | None) -> list[Tensor]:
    from restore.prior.train import image_files, load_images_uint8

    names = set(Path(exclude_file).read_text().split()) if exclude_file and Path(exclude_file).is_file() else set()
    return load_images_uint8(image_files(roots, exclude=names), min_side=8)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m restore.prior.patch_gmm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a patch GMM by EM on random patches of photographs")
    fit.add_argument("--out", type=Path, default=Path(__file__).parent / "weights" / "patch_gmm.safetensors")
    fit.add_argument("--images", nargs="+", default=["../shared/datasets/bsds500/train", "../shared/datasets/bsds500/test"])
    fit.add_argument("--exclude", default="benchmarks/val_split.txt", help="file of image names to leave out")
    fit.add_argument("--components", "-K", type=int, default=64)
    fit.add_argument("--rank", type=int, default=64)
    fit.add_argument("--patch", type=int, default=8)
    fit.add_argument("--patches", type=int, default=150_000)
    fit.add_argument("--iters", type=int, default=60)
    fit.add_argument("--minutes", type=float, default=10.0)
    fit.add_argument("--stride", type=int, default=2, help="default patch stride of the saved denoiser")
    fit.add_argument("--min-delta", type=float, default=1e-5)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--fp16", action="store_true", help="store the bases in fp16 (smaller file)")
    fit.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = training_images(args.images, args.exclude)
    print(f"{len(images)} training images; {args.patches} patches of {args.patch}×{args.patch}; K={args.components} rank={args.rank}",
          flush=True)
    t0 = time.time()
    model = fit_patch_gmm(images, args.components, args.patch, args.rank, args.iters, torch.Generator().manual_seed(args.seed),
                          n_patches=args.patches, min_delta=args.min_delta, minutes=args.minutes, stride=args.stride,
                          on_iter=lambda i, ll: print(f"iter {i:3d}  loglik/dim {ll:.4f}  {time.time() - t0:.0f}s", flush=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out, dtype=torch.float16 if args.fp16 else torch.float32)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) after {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
