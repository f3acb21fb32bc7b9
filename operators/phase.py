"""Fourier phase retrieval: y = |F(P o(x))|, the Fourier magnitudes of a zero-padded image.

The measurement model of the DPS and DAPS phase-retrieval benchmarks (Chung et al., "Diffusion
Posterior Sampling for General Noisy Inverse Problems", ICLR 2023; Zhang et al., "Improving
Diffusion Inverse Problem Solving with Decoupled Noise Annealing", CVPR 2025), checked against
their code:

* DPS, ``guided_diffusion/measurements.py``, ``PhaseRetrievalOperator``: ``pad = int((oversample
  / 8.0) * 256)``; ``F.pad(x, (pad, pad, pad, pad))``; ``fft2_m(padded).abs()``, where
  ``util/img_utils.py`` ``fft2_m`` casts to complex64 and calls fastMRI's ``fft2c_new``
  (``util/fastmri_utils.py``): ``fftshift(fftn(ifftshift(x), dim=(-2, -1), norm="ortho"))``.
  The image is measured as it is, in [-1, 1] (``sample_condition.py`` normalises the data with
  mean 0.5 and std 0.5 and calls ``operator.forward(ref_img)`` on it).
* DAPS, ``forward_operator/__init__.py``, ``PhaseRetrieval``: the same pad (``int((oversample
  / 8.0) * resolution)``, resolution 256) and the same ``fft2c_new``, but it first maps the
  image to [0, 1]: ``x = x * 0.5 + 0.5``, so the zero padding is black and the object is
  non-negative.

Both use oversample 2.0 on 256 × 256 images: 64 zero pixels on every side, a 384 × 384 array
(1.5 × per axis, 2.25 × the pixels; the name "oversample" is not the padded-to-image ratio).
Both treat the channels separately (the FFT is over the last two dimensions only) and measure
the magnitudes of the centred, orthonormal DFT.

Here, for images x (B, C, H, W) in [-1, 1]:

* o(x) = (x + 1) / 2 with ``range=unit`` (the default, DAPS) or o(x) = x with ``range=signed``
  (DPS). The two differ by a constant 1/2 inside the image support, which is NOT a constant
  in Fourier magnitude, so the two give different measurements.
* P pads ``int((oversample / 8) · H)`` zero rows above and below and ``int((oversample / 8) ·
  W)`` zero columns left and right (the references pad 64 on every side of their square
  256 × 256 images, which this reproduces; for H ≠ W each axis uses its own length). The
  product is evaluated in floating point as in the references, so ``int`` truncates
  2.5 to 2. A pad of 0 is refused: the spec would not describe an oversampled measurement.
* F is the orthonormal 2-D DFT per channel, centred: frequency 0 at index (N_h // 2, N_w // 2)
  of the padded size (N_h, N_w) = (H + 2 p_h, W + 2 p_w). The input ``ifftshift`` of
  ``fft2c_new`` is a circular shift, which only multiplies the spectrum by a phase ramp, so
  y = fftshift(|fft2(P o, norm="ortho")|) exactly as the references compute it; the
  tests check it against ``np.abs(fftshift(fft2(ifftshift(np.pad(o)), norm="ortho")))``.
* y is real, (B, C, N_h, N_w), ``out_shape = (C, N_h, N_w)``; same precision as x.

Differentiability. |z| is ``torch.abs`` (hypot, no underflow) with z = 0 masked out before it:
the value is exactly |z|, the gradient is z / |z| (unit length) where z ≠ 0 and 0 at z = 0 (a
subgradient), so the gradient is finite everywhere, including for images whose spectrum has
exact zeros (x = -1 everywhere with ``range=unit``).

Invariances (what makes phase retrieval ill-posed). For real objects the magnitudes do not
change under (1) the global sign o → -o (global phase; excluded by the range with
``range=unit``, which needs o ≥ 0, but not with ``range=signed``), (2) a circular translation of
the padded array (excluded by the fixed support when the object fills it; an image whose
object is 0 along its border, e.g. black borders with ``range=unit``, can shift within the
support), and (3) the conjugate inversion o(n) → o(-n), which for a real object on a support
centred in the padded array is the 180° rotation of the image: A(flip(x, (-2, -1))) = A(x)
exactly. Each channel is measured on its own, so each channel has its own ambiguities.

Spec: ``phase[:oversample=2.0][:range=unit|signed]``, e.g. ``phase``, ``phase:oversample=1``,
``phase:oversample=2:range=signed`` (the DPS convention). The canonical spec always names the
oversample and names the range only when it is ``signed``.

The classical baseline is :func:`hio`, Fienup's hybrid input-output with restarts; metrics of
any reconstruction should be computed after :func:`best_of_ambiguities`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from operators.base import NonlinearOperator, Operator
from operators.errors import OperatorError
from operators.registry import check_keywords, format_number, parse_args, read_integer, read_number, register

#: the oversample of the DPS / DAPS benchmarks
DEFAULT_OVERSAMPLE = 2.0
#: object value range per ``range`` option: o(x) lies in [low, high] for x in [-1, 1]
RANGES = {"unit": (0.0, 1.0), "signed": (-1.0, 1.0)}
_DIMS = (-2, -1)


def padding(oversample: float, length: int) -> int:
    """Zero pixels added on each side of an axis of ``length`` pixels: ``int(oversample / 8 · length)``."""
    return int((oversample / 8.0) * length)


def safe_abs(z: Tensor) -> Tensor:
    """|z| of a complex tensor with a finite gradient everywhere: z / |z| where z ≠ 0, and 0 at z = 0."""
    nonzero = z != 0
    size = torch.abs(torch.where(nonzero, z, torch.ones_like(z)))  # the gradient never sees |0|
    return torch.where(nonzero, size, torch.zeros_like(size))


@register
class PhaseRetrieval(NonlinearOperator):
    """y = |F(P o(x))|: centred orthonormal Fourier magnitudes of the zero-padded image, per channel."""

    name: ClassVar[str] = "phase"

    def __init__(self, in_shape: tuple[int, int, int], oversample: float = DEFAULT_OVERSAMPLE,
                 object_range: str = "unit", spec: str | None = None) -> None:
        oversample = read_number(oversample, "phase: oversample")
        if oversample <= 0:
            raise OperatorError(f"phase: oversample must be positive, got {format_number(oversample)}")
        if object_range not in RANGES:
            raise OperatorError(f"phase: range must be unit or signed, got '{object_range}'")
        canonical = f"phase:oversample={format_number(oversample)}"
        canonical += ":range=signed" if object_range == "signed" else ""
        super().__init__(spec or canonical, in_shape)
        c, h, w = self.in_shape
        if c < 1 or h < 1 or w < 1:
            raise OperatorError(f"phase: image shape must be positive, got {self.in_shape}")
        #: the oversample of the spec
        self.oversample = oversample
        #: "unit" (o = (x + 1) / 2, DAPS) or "signed" (o = x, DPS)
        self.object_range = object_range
        #: zero rows above and below, zero columns left and right
        self.pad = (padding(oversample, h), padding(oversample, w))
        if min(self.pad) < 1:
            raise OperatorError(f"phase: oversample {format_number(oversample)} pads a {h}x{w} image by "
                                f"{self.pad[0]}x{self.pad[1]} pixels; it must pad at least 1 pixel per side "
                                f"(oversample >= {format_number(8 / min(h, w))} here)")
        #: (C, N_h, N_w): the padded size, that of the measurement
        self.out_shape = (c, h + 2 * self.pad[0], w + 2 * self.pad[1])

    @classmethod
    def from_spec(cls, args: str, in_shape: tuple[int, int, int]) -> PhaseRetrieval:
        """Build from ``[oversample=R][:range=unit|signed]`` (the part of the spec after ``phase:``)."""
        positional, keywords = parse_args(args)
        if positional:
            raise OperatorError(f"phase takes keyword fields only, e.g. 'phase:oversample=2' or "
                                f"'phase:oversample=2:range=signed', got '{args}'")
        check_keywords("phase", keywords, ("oversample", "range"))
        oversample = read_number(keywords.get("oversample", DEFAULT_OVERSAMPLE), "phase: oversample")
        return cls(tuple(in_shape), oversample, keywords.get("range", "unit"))

    @classmethod
    def stack(cls, ops: list[Operator]) -> Operator:
        """Per-image phase operators: they hold no buffers, so all must be the same measurement."""
        if ops and all(isinstance(op, PhaseRetrieval) for op in ops):
            first = ops[0]
            key = (first.in_shape, first.pad, first.object_range)
            if any((op.in_shape, op.pad, op.object_range) != key for op in ops):
                raise OperatorError("phase: only operators with one image shape, padding and range can be stacked: "
                                    + ", ".join(op.spec for op in ops))
        return super().stack(ops)

    # -- object space ---------------------------------------------------------------------------

    @property
    def value_range(self) -> tuple[float, float]:
        """(low, high) of the object o(x) for images x in [-1, 1]."""
        return RANGES[self.object_range]

    def to_object(self, x: Tensor) -> Tensor:
        """o(x): (x + 1) / 2 with range=unit, x with range=signed."""
        return (x + 1) * 0.5 if self.object_range == "unit" else x

    def from_object(self, o: Tensor) -> Tensor:
        """The inverse of :meth:`to_object`."""
        return 2 * o - 1 if self.object_range == "unit" else o

    def pad_object(self, o: Tensor) -> Tensor:
        """P o: (..., H, W) → (..., N_h, N_w) with zeros around."""
        ph, pw = self.pad
        return torch.nn.functional.pad(o, (pw, pw, ph, ph))

    def crop(self, padded: Tensor) -> Tensor:
        """The image region (..., H, W) of a padded array (..., N_h, N_w)."""
        ph, pw = self.pad
        _, h, w = self.in_shape
        return padded[..., ph:ph + h, pw:pw + w]

    def support(self, device=None) -> Tensor:
        """Boolean (N_h, N_w) mask of the image region inside the padded array."""
        mask = torch.zeros(self.out_shape[1:], dtype=torch.bool, device=device)
        self.crop(mask)[...] = True
        return mask

    def magnitudes(self, padded: Tensor) -> Tensor:
        """Centred orthonormal Fourier magnitudes of padded objects (..., N_h, N_w)."""
        return torch.fft.fftshift(safe_abs(torch.fft.fft2(padded, norm="ortho")), dim=_DIMS)

    # -- the operator ---------------------------------------------------------------------------

    def picture(self, y: Tensor) -> Tensor:
        """log(1 + 1000 y / max y): the spectrum's tails visible beside its peak."""
        return torch.log1p(1000 * y.clamp_min(0) / y.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None, None])

    def align_samples(self, samples: Tensor) -> Tensor:
        """Every sample (K, B, C, H, W) as itself or its 180° rotation (negated too with range=signed), whichever
        is closer to sample 0 of its image: samples of one image may come out turned either way."""
        first = samples[0].expand_as(samples).reshape(-1, *samples.shape[2:])
        turned = best_of_ambiguities(samples.reshape(-1, *samples.shape[2:]), first, sign=self.object_range == "signed")
        return turned.reshape(samples.shape)

    def A(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.in_shape:
            raise OperatorError(f"phase: operator built for images {self.in_shape}, got shape {tuple(x.shape)}")
        return self.magnitudes(self.pad_object(self.to_object(x)))


# ----------------------------------------------------------------------------------------------
# Classical baseline: Fienup's hybrid input-output


def hio(y: Tensor, operator: PhaseRetrieval, *, iterations: int = 500, beta: float = 0.9, restarts: int = 4,
        er_iterations: int = 50, generator: torch.Generator | None = None, init: Tensor | None = None,
        return_misfits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Images (B, C, H, W) in [-1, 1] whose Fourier magnitudes fit y, by hybrid input-output.

    J. R. Fienup, "Phase retrieval algorithms: a comparison", Applied Optics 21(15), 1982. On the
    padded object g (one per restart, image and channel), with P_M the magnitude projection
    (replace |F g| by y, keep the phase; phase 1 where F g = 0; y clamped at 0 for noisy data)
    and g' = P_M g, each iteration sets

        g ← g'                        where g' is in the support and in [low, high],
        g ← g − β (g' − P_C g')        elsewhere,

    with P_C the projection onto the constraints (0 outside the support, the object range
    inside: [0, 1] for range=unit, [-1, 1] for range=signed). Outside the support and below 0
    this is Fienup's g − β g'. Then ``er_iterations`` error-reduction steps g ← P_C P_M g and the
    result P_C g, cropped and mapped back to [-1, 1].

    Restarts start from independent uniform random objects in the range on the support
    (``generator`` for reproducibility; restart 0 from ``init``, images (B, C, H, W) in [-1, 1],
    when given). The channels are independent problems, so for each image and channel the
    restart of lowest misfit ‖|F(P o)| − y‖ is kept; no reference image is used. Since each
    channel may come out rotated by 180° (and negated with range=signed) on its own, channels
    1.. are then turned to whichever of their ambiguous versions correlates best with channel 0
    (this leaves the misfit unchanged); the global ambiguity is left to
    :func:`best_of_ambiguities`.

    ``return_misfits``: also return the per-restart misfits, (restarts, B, C), for the
    unaligned restart results; the kept image's per-image misfit is
    √(Σ_c min_r misfit[r, b, c]²).
    """
    if not isinstance(operator, PhaseRetrieval):
        raise OperatorError(f"hio needs a phase retrieval operator, got {type(operator).__name__}")
    if y.dim() != 4 or tuple(y.shape[1:]) != operator.out_shape or y.is_complex():
        raise OperatorError(f"hio: measurements for {operator.spec} on {operator.in_shape} must be real "
                            f"(B, {', '.join(map(str, operator.out_shape))}), got {tuple(y.shape)}")
    iterations = read_integer(iterations, "hio: iterations", minimum=0)
    er_iterations = read_integer(er_iterations, "hio: er_iterations", minimum=0)
    restarts = read_integer(restarts, "hio: restarts", minimum=1)
    beta = read_number(beta, "hio: beta")
    if not 0 < beta <= 1:
        raise OperatorError(f"hio: beta must be in (0, 1], got {format_number(beta)}")
    dtype = y.dtype if y.is_floating_point() else torch.float64
    y = y.to(dtype)
    batch, channels = y.shape[:2]
    low, high = operator.value_range
    support = operator.support(y.device)
    target = torch.fft.ifftshift(y.clamp_min(0), dim=_DIMS)  # uncentred magnitudes, as fft2 gives them

    starts = []
    for r in range(restarts):
        if r == 0 and init is not None:
            if tuple(init.shape) != (batch, *operator.in_shape):
                raise OperatorError(f"hio: init must have shape {(batch, *operator.in_shape)}, got {tuple(init.shape)}")
            start = operator.to_object(init.to(device=y.device, dtype=dtype)).clamp(low, high)
        else:
            shape = (batch, *operator.in_shape)
            where = generator.device if generator is not None else "cpu"
            noise = torch.rand(shape, generator=generator, dtype=dtype, device=where).to(y.device)
            start = low + (high - low) * noise
        starts.append(operator.pad_object(start))
    g = torch.stack(starts)  # (R, B, C, N_h, N_w)

    def project_magnitude(g: Tensor) -> Tensor:
        spectrum = torch.fft.fft2(g, norm="ortho")
        size = safe_abs(spectrum)
        phase = torch.where(size > 0, spectrum / torch.where(size > 0, size, torch.ones_like(size)),
                            torch.ones_like(spectrum))
        return torch.fft.ifft2(target * phase, norm="ortho").real

    def project_constraints(g: Tensor) -> Tensor:
        return torch.where(support, g.clamp(low, high), torch.zeros_like(g))

    with torch.no_grad():
        for _ in range(iterations):
            gp = project_magnitude(g)
            feasible = support & (gp >= low) & (gp <= high)
            g = torch.where(feasible, gp, g - beta * (gp - project_constraints(gp)))
        for _ in range(er_iterations):
            g = project_constraints(project_magnitude(g))
        g = project_constraints(g)

        misfits = (operator.magnitudes(g) - y).flatten(-2).norm(dim=-1)  # (R, B, C)
        best = misfits.argmin(dim=0)  # (B, C)
        index = best[None, :, :, None, None].expand(1, *g.shape[1:])
        obj = operator.crop(torch.gather(g, 0, index)[0])  # (B, C, H, W)
        obj = _align_channels(obj, sign=operator.object_range == "signed")
        x = operator.from_object(obj)
    return (x, misfits) if return_misfits else x


def _candidates(x: Tensor, sign: bool) -> list[Tensor]:
    """x and the versions of it with the same Fourier magnitudes: 180° rotation, and negation if ``sign``."""
    rotated = torch.flip(x, dims=_DIMS)
    out = [x, rotated]
    return out + [-x, -rotated] if sign else out


def _align_channels(obj: Tensor, sign: bool) -> Tensor:
    """Turn channels 1.. of each image (B, C, H, W) to their ambiguous version best correlated with channel 0."""
    if obj.shape[1] < 2:
        return obj
    centred = obj - obj.mean(dim=_DIMS, keepdim=True)
    reference = centred[:, :1]
    options = torch.stack(_candidates(obj, sign))  # (K, B, C, H, W)
    scores = (torch.stack(_candidates(centred, sign)) * reference).sum(dim=_DIMS)  # (K, B, C)
    choice = scores.argmax(dim=0)
    choice[:, 0] = 0
    index = choice[None, :, :, None, None].expand(1, *obj.shape)
    return torch.gather(options, 0, index)[0]


def best_of_ambiguities(x_hat: Tensor, reference: Tensor, *, sign: bool = False, per_channel: bool = False) -> Tensor:
    """Per image, whichever of x̂ and its 180° rotation (both axes flipped) is closer to ``reference``.

    Phase retrieval cannot tell an image from its 180° rotation (the conjugate inversion of a
    real object; see the module docstring), so a reconstruction is scored against the
    reference after this choice, by mean squared error per image: a fair metric, since the
    choice only undoes what the measurement cannot see. ``sign=True`` also tries -x̂ and its
    rotation: the global-sign ambiguity of ``range=signed`` (the image itself, since o = x). With
    ``per_channel=True`` each channel is chosen separately, which matches the measurement
    exactly (every channel is measured on its own) but is more lenient than a colour-consistent
    choice. Inputs (B, C, H, W) of one shape; returns x̂'s shape.

    The references do not do this in code: DAPS (``posterior_sample.py``, ``eval.py``) reports
    the best of 4 sampling runs per image by PSNR against the ground truth (oracle selection)
    and DPS's repository has no phase-retrieval evaluation. The rotation check is the
    customary fairness step of classical phase-retrieval comparisons.
    """
    if x_hat.dim() != 4 or x_hat.shape != reference.shape:
        raise OperatorError(f"best_of_ambiguities: x_hat {tuple(x_hat.shape)} and reference "
                            f"{tuple(reference.shape)} must be image batches (B, C, H, W) of one shape")
    options = torch.stack(_candidates(x_hat, sign))  # (K, B, C, H, W)
    errors = (options - reference.to(x_hat.dtype)).square()
    errors = errors.mean(dim=_DIMS) if per_channel else errors.flatten(2).mean(dim=2)[..., None]  # (K, B, C|1)
    choice = errors.argmin(dim=0)  # (B, C|1)
    index = choice.expand(x_hat.shape[:2])[None, :, :, None, None].expand(1, *x_hat.shape)
    return torch.gather(options, 0, index)[0]


def misfit(x: Tensor, y: Tensor, operator: PhaseRetrieval) -> Tensor:
    """Per-image measurement misfit ‖A(x) − y‖ (B,)."""
    return (operator.A(x) - y).flatten(1).norm(dim=1)


__all__ = ["PhaseRetrieval", "best_of_ambiguities", "hio", "misfit", "padding", "safe_abs"]
