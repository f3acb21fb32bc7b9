"""Where a JPEG's error is, and how much of it the prior's Gaussian denoiser removes in one step (restore bench's
jpeg10 / jpeg30 problems).

    python benchmarks/jpeg_headroom.py --first 40 --count 4 --quality 10

Prints, as Markdown: the decoded file's PSNR; the same with its luma (Y) or its chroma (Cb, Cr) replaced by the
truth's (the head-room of each); and the denoiser's x̂0 at each σ (library units) from the decoded file, projected
onto the quantisation bins as `restore dejpeg` does.
"""

from __future__ import annotations

import torch

from operators.jpeg import YCC_MATRIX, quantisation_projection
from restore.api import load_denoiser
from restore.bench.suite import PROTOCOL_SIZE, load_reference, make_problem
from restore.io import list_images
from restore.metrics import psnr
from restore.prior.schedule import timestep_for_sigma

from jpeg_samplers import jpeg_task, problem_arguments  # the same problems as jpeg_samplers.py

SIGMAS = (0.05, 0.1, 0.15, 0.2, 0.3)


def swap_planes(into: torch.Tensor, source: torch.Tensor, planes: slice) -> torch.Tensor:
    """``into`` (RGB) with the YCbCr planes ``planes`` taken from ``source``."""
    matrix = torch.tensor(YCC_MATRIX, dtype=into.dtype)
    ycc, other = (torch.einsum("ij,bjhw->bihw", matrix, x) for x in (into, source))
    ycc[:, planes] = other[:, planes]
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(matrix), ycc).clamp(-1, 1)


def main() -> None:
    args = problem_arguments(__doc__).parse_args()
    denoiser = load_denoiser("default", "cpu", "auto")
    task = jpeg_task(args)
    scores: dict[str, list[float]] = {}
    for offset, path in enumerate(list_images(args.images)[args.first : args.first + args.count]):
        p = make_problem(task, load_reference(path, PROTOCOL_SIZE), args.first + offset, path.stem)
        decoded = p.operator.pinv(p.y).clamp(-1, 1)
        coefficients = p.operator.coefficients(p.y.double())
        rows = {"decoded": decoded, "decoded, true chroma": swap_planes(decoded, p.x, slice(1, 3)),
                "decoded, true luma": swap_planes(decoded, p.x, slice(0, 1))}
        for sigma in SIGMAS:
            t = timestep_for_sigma(denoiser.alphas_cumprod, torch.tensor([sigma], dtype=torch.float64)).float()
            x0 = denoiser.denoise(denoiser.alpha_bar(t, decoded).sqrt() * decoded, t).clamp(-1, 1)
            rows[f"x̂0 at σ {sigma:g}, projected"] = quantisation_projection(x0.double(), coefficients, p.operator.tables)[0].float().clamp(-1, 1)
        for label, x_hat in rows.items():
            scores.setdefault(label, []).append(float(psnr(x_hat, p.x)))
    print(f"jpeg{args.quality}, images {args.first}..{args.first + args.count - 1}, 256² crops; mean PSNR\n")
    print("| result | PSNR |\n| --- | --- |")
    for label, values in scores.items():
        print(f"| {label} | {sum(values) / len(values):.2f} |")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
