"""The table of samplers: what each needs (an SVD, a linear operator, gradients through the network) and costs (NFE)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from restore.errors import RestoreError
from operators.jpeg import JPEG
from restore.samplers import daps, ddnm, ddrm, deblock, diffpir, dpir, dps, pigdm, pyramid, reddiff
from restore.samplers.base import Sampler


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    run: Sampler
    params: type  # the frozen dataclass of hyperparameters
    paper: str
    needs_svd: bool = False
    #: uses the adjoint or A⁺ of a linear operator (False: only A, its gradient, and ``prox_l2`` if needs_prox)
    needs_linear: bool = True
    #: uses the operator's data-consistency step ``prox_l2`` (linear operators have one; so does a JPEG's, a projection)
    needs_prox: bool = False
    #: without ``needs_linear``: takes a nonlinear operator only when it has a decoder (``has_decoder``: a JPEG's)
    needs_decoder: bool = False
    #: differentiates through the network (vector-Jacobian products): slower and needs more memory
    backprop_network: bool = False
    #: network evaluations per image for a number of steps and the hyperparameters
    nfe: Callable[[int, Any], int] = lambda steps, params: steps
    #: draws samples of the posterior (False: one estimate per run, so several runs make no uncertainty map)
    samples_posterior: bool = True
    #: what to change when its restorations diverge (leave the image range far behind)
    divergence_hint: str = "use more steps or another sampler"
    #: takes only operators of this type (None: any the flags above allow), e.g. a method trained on JPEG files
    operator_type: type | None = None


SAMPLERS: dict[str, SamplerInfo] = {info.name: info for info in (
    SamplerInfo("ddrm", ddrm.ddrm, ddrm.DDRMParams, needs_svd=True,
                paper="Kawar, Elad, Ermon, Song. Denoising Diffusion Restoration Models. NeurIPS 2022"),
    SamplerInfo("ddnm", ddnm.ddnm, ddnm.DDNMParams, nfe=ddnm.ddnm_nfe, needs_linear=False, needs_decoder=True,
                paper="Wang, Yu, Zhang. Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model. ICLR 2023"),
    SamplerInfo("diffpir", diffpir.diffpir, diffpir.DiffPIRParams, needs_linear=False, needs_prox=True,
                paper="Zhu, Zhang, Liang, Cao, Wen, Timofte, Van Gool. Denoising Diffusion Models for Plug-and-Play "
                      "Image Restoration. CVPRW 2023"),
    SamplerInfo("dpir", dpir.dpir, dpir.DPIRParams, samples_posterior=False, needs_linear=False, needs_prox=True,
                paper="Zhang, Li, Zuo, Zhang, Van Gool, Timofte. Plug-and-Play Image Restoration with Deep Denoiser "
                      "Prior. IEEE TPAMI 2021"),
    SamplerInfo("dps", dps.dps, dps.DPSParams, needs_linear=False, backprop_network=True,
                divergence_hint="lower the step size zeta (--set zeta=...)",
                paper="Chung, Kim, Mccann, Klasky, Ye. Diffusion Posterior Sampling for General Noisy Inverse Problems. "
                      "ICLR 2023"),
    SamplerInfo("pigdm", pigdm.pigdm, pigdm.PiGDMParams, backprop_network=True,
                divergence_hint="lower the guidance weight (--set weight=...)",
                paper="Song, Vahdat, Mardani, Kautz. Pseudoinverse-Guided Diffusion Models for Inverse Problems. ICLR 2023"),
    SamplerInfo("reddiff", reddiff.reddiff, reddiff.REDDiffParams, needs_linear=False,
                divergence_hint="lower the learning rate lr or lam (--set lr=...)",
                paper="Mardani, Song, Kautz, Vahdat. A Variational Perspective on Solving Inverse Problems with "
                      "Diffusion Models. ICLR 2024"),
    SamplerInfo("pyramid", pyramid.pyramid, pyramid.PyramidParams, nfe=pyramid.pyramid_nfe,
                paper="coarse to fine: DiffPIR (Zhu et al., CVPRW 2023) on an image pyramid with SDEdit restarts "
                      "(Meng et al., ICLR 2022)"),
    SamplerInfo("daps", daps.daps, daps.DAPSParams, needs_linear=False, nfe=daps.daps_nfe,
                divergence_hint="lower the Langevin step size lr (--set lr=...)",
                paper="Zhang, Chu, Berner, Meng, Anandkumar, Song. Improving Diffusion Inverse Problem "
                      "Solving with Decoupled Noise Annealing. CVPR 2025"),
    SamplerInfo("deblock", deblock.deblock_jpeg, deblock.DeblockParams, needs_linear=False, nfe=deblock.deblock_nfe,
                samples_posterior=False, operator_type=JPEG,
                paper="this project's JPEG deblocker: the prior's network fine-tuned on JPEG files of BSDS500 "
                      "photographs (restore.prior.deblocker), with an optional geometric self-ensemble"),
)}


def get_sampler(name: str) -> SamplerInfo:
    if name not in SAMPLERS:
        raise RestoreError(f"unknown sampler '{name}'; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def check_num_samples(info: SamplerInfo, num_samples: int) -> None:
    """Refuse several "posterior samples" from a method that gives one estimate."""
    if num_samples > 1 and not info.samples_posterior:
        able = [n for n, s in SAMPLERS.items() if s.samples_posterior]
        raise RestoreError(f"{info.name} gives one estimate, not posterior samples; use --num-samples 1, "
                           f"or one of: {', '.join(able)}")


def able_for(info: SamplerInfo, operator) -> bool:
    """Whether the sampler can take the operator."""
    return ((operator.linear or not info.needs_linear) and (operator.has_prox or not info.needs_prox)
            and (operator.has_svd or not info.needs_svd)
            and (operator.linear or operator.has_decoder or not info.needs_decoder)
            and (info.operator_type is None or isinstance(operator, info.operator_type)))


def check_operator(info: SamplerInfo, operator) -> None:
    """Refuse early, with the samplers that can take it, an operator this sampler cannot use."""
    if (info.needs_linear and not operator.linear) or (info.needs_prox and not operator.has_prox):
        able = [n for n, s in SAMPLERS.items() if able_for(s, operator)]
        what = "a linear operator" if info.needs_linear else "an operator with a data-consistency step (prox_l2)"
        raise RestoreError(f"{info.name} needs {what}, and '{operator.spec}' is not one; use one of: {', '.join(able)}")
    if info.needs_decoder and not (operator.linear or operator.has_decoder):
        able = [n for n, s in SAMPLERS.items() if able_for(s, operator)]
        raise RestoreError(f"{info.name} needs a linear operator or one with a decoder (a JPEG's), and '{operator.spec}' "
                           f"is neither; use one of: {', '.join(able)}")
    if info.operator_type is not None and not isinstance(operator, info.operator_type):
        able = [n for n, s in SAMPLERS.items() if able_for(s, operator)]
        raise RestoreError(f"{info.name} works only on {info.operator_type.name} measurements, and '{operator.spec}' "
                           f"is not one; use one of: {', '.join(able)}")
    if info.needs_svd and not operator.has_svd:
        able = [n for n, s in SAMPLERS.items() if able_for(s, operator)]
        hint = f" ({operator.svd_hint})" if getattr(operator, "svd_hint", "") else ""
        raise RestoreError(f"{info.name} needs an operator with an SVD, and '{operator.spec}' has none{hint}; "
                           f"use one of: {', '.join(able)}")
