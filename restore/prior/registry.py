"""Named priors: the embedded default and the public ADM checkpoints of DPS, DDRM and RED-Diff.

``load_prior(name_or_path)`` returns a :class:`~restore.prior.denoiser.Denoiser`. A name is looked
up in :data:`PRIORS`; anything else is a local file: our ``.safetensors`` (config in its
metadata), a guided-diffusion ``.pt`` state dict with a config JSON beside it (``create_model``'s
keyword arguments), or a diffusers ``UNet2DModel`` folder when diffusers is installed.

Public checkpoints are downloaded once into the cache directory (``$RESTORE_CACHE``, default
``~/.cache/restore``): the transfer resumes from a ``.part`` file, and the result is checked
against the size and SHA-256 recorded here. Offline, the error names the file, its URL and where
to put it.

Every file is checked against this table on its first load (the result is cached beside it, keyed
by size and modification time): a mismatch is refused and the file moved aside (``.rejected``).
A file whose SHA-256 this table cannot confirm (the public checkpoints: they could not be hashed
offline when it was written) is "unverified", never "ok": its hash at first use is kept in a
``.sha256`` file, and a later change of the file is reported.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from restore.errors import RestoreError
from restore.prior.denoiser import Denoiser, UNetDenoiser
from restore.prior.schedule import make_betas
from restore.prior.weights import load_network, read_info

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: the files a prior may be given as (besides a diffusers folder)
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
#: guided-diffusion configs (create_model keyword arguments) shared by the public 256×256 checkpoints
_ADM_256 = dict(image_size=256, channel_mult="", learn_sigma=True, class_cond=False, num_heads=4, num_head_channels=64,
                num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0, resblock_updown=True,
                use_new_attention_order=False)


@dataclass(frozen=True)
class PriorEntry:
    name: str
    description: str
    filename: str
    #: direct download address; None for the embedded prior and for files only offered on a web page
    url: str | None = None
    #: where to get the file by hand when there is no direct address (e.g. a Google Drive folder)
    page: str | None = None
    size: int | None = None
    #: None: no SHA-256 could be confirmed for this file (verify says "unverified")
    sha256: str | None = None
    unet: dict = field(default_factory=dict)
    schedule: str = "linear"
    citation: str = ""

    @property
    def embedded(self) -> bool:
        return self.url is None and self.page is None


PRIORS: dict[str, PriorEntry] = {
    entry.name: entry
    for entry in [
        PriorEntry(
            "default", "small ADM UNet trained on BSDS500 photographs (embedded; any image size)", "default.safetensors",
            size=8350414, sha256="b69f024f7af791e1b3453fecff4d26d4e83b429db721a5c191ebde33f34fbb0e",
            citation="trained with `restore train` on BSDS500 (Arbelaez et al., TPAMI 2011)",
        ),
        PriorEntry(
            "patch-gmm", "mixture of low-rank Gaussians over 8×8 RGB patches, exact patch posterior means (embedded; any size)",
            "patch_gmm.safetensors", size=3212448, sha256="cb2eccb328b40ce4a72a55d67f43cf6bf4e7de358c332c6e47b6a74d397a65be",
            citation="EPLL's patch GMM (Zoran & Weiss, ICCV 2011); Wang et al. 2024, Diffusion Models Learn Low-Dimensional "
                     "Distributions via Subspace Clustering; fitted with `python -m restore.prior.patch_gmm fit` on BSDS500",
        ),
        PriorEntry(
            "ffhq-256", "ADM UNet on FFHQ 256×256 faces, the prior of DPS (93.6 M parameters)", "ffhq_10m.pt",
            page="https://drive.google.com/drive/folders/1jElnRoFv7b31fG0v6pTSQkelbSX3xGZh",
            unet=dict(_ADM_256, num_channels=128, num_res_blocks=1, attention_resolutions="16"),
            citation="Chung et al., Diffusion Posterior Sampling, ICLR 2023 (github.com/DPS2022/diffusion-posterior-sampling)",
        ),
        PriorEntry(
            "imagenet-256", "guided-diffusion ImageNet 256×256 unconditional ADM, the prior of DDRM and RED-Diff (552.8 M)",
            "256x256_diffusion_uncond.pt",
            url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",
            unet=dict(_ADM_256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8"),
            citation="Dhariwal & Nichol, Diffusion Models Beat GANs on Image Synthesis, NeurIPS 2021",
        ),
    ]
}


def cache_dir() -> Path:
    """Where downloaded priors live: $RESTORE_CACHE, else ~/.cache/restore."""
    return Path(os.environ.get("RESTORE_CACHE") or Path.home() / ".cache" / "restore")


def weights_path(entry: PriorEntry) -> Path:
    return WEIGHTS_DIR / entry.filename if entry.embedded else cache_dir() / entry.filename


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def first_use_record(entry: PriorEntry) -> Path:
    """Where the hash of an unconfirmable file is kept at its first use (trust on first use)."""
    return weights_path(entry).with_suffix(".sha256")


def verify(entry: PriorEntry) -> str:
    """'ok' (size and SHA-256 as this table records), 'missing', 'unverified: …', or what differs."""
    path = weights_path(entry)
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return f"wrong size: {size} bytes, expected {entry.size}"
    actual = sha256_of(path)
    if entry.sha256 is not None:
        return "ok" if actual == entry.sha256 else f"checksum mismatch: {actual}, expected {entry.sha256}"
    record = first_use_record(entry)
    if record.is_file():
        first = record.read_text().split()[0]
        if first != actual:
            return f"changed since first use: SHA-256 {actual}, was {first} (this table has no confirmed checksum)"
    return f"unverified: this table has no confirmed SHA-256 for {entry.filename} ({size} bytes, SHA-256 {actual})"


def check_before_load(entry: PriorEntry) -> None:
    """Verify a named prior's file on its first load (cached by size and mtime); refuse and move aside a bad one."""
    path = weights_path(entry)
    stat = path.stat()
    stamp = None if entry.embedded else path.with_name(path.name + ".verified")  # the package folder stays untouched
    key = f"{stat.st_size} {stat.st_mtime_ns}"
    if stamp is not None and stamp.is_file() and stamp.read_text().strip() == key:
        return
    status = verify(entry)
    if status.startswith(("wrong size", "checksum mismatch", "changed since")):
        if entry.embedded:
            raise RestoreError(f"the embedded prior {path} is damaged ({status}); reinstall restore")
        rejected = path.with_name(path.name + ".rejected")
        os.replace(path, rejected)
        raise RestoreError(f"prior '{entry.name}' at {path} is not the published file ({status}); moved it to "
                           f"{rejected}: download it again with `restore priors download {entry.name}`")
    if status.startswith("unverified") and not first_use_record(entry).is_file():
        first_use_record(entry).write_text(f"{sha256_of(path)}  {entry.filename}\n")
    if stamp is not None:
        try:
            stamp.write_text(key + "\n")
        except OSError:
            pass  # a read-only cache: verified again next time


def download(entry: PriorEntry, on_progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Fetch a public checkpoint into the cache (resuming a partial download) and verify it."""
    if entry.embedded:
        return weights_path(entry)
    path = weights_path(entry)
    if path.is_file():
        return path
    if entry.url is None:
        raise RestoreError(f"prior '{entry.name}' is offered only as a web download: get {entry.filename} from "
                           f"{entry.page} and put it at {path} (or set RESTORE_CACHE to the folder holding it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(entry.url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            if start and response.status != 206:  # the server ignored the range: start over
                start = 0
            total = response.headers.get("Content-Length")
            total = int(total) + start if total is not None else entry.size
            with open(part, "ab" if start else "wb") as handle:
                done = start
                while block := response.read(1 << 20):
                    handle.write(block)
                    done += len(block)
                    if on_progress:
                        on_progress(done, total)
    except OSError as err:  # URLError, timeouts, connection resets
        raise RestoreError(
            f"cannot download prior '{entry.name}' ({reason(err)}): get {entry.filename} from {entry.url} "
            f"and put it at {path} (or set RESTORE_CACHE to the folder holding it)"
        ) from None
    actual = sha256_of(part)
    if entry.sha256 is not None and actual != entry.sha256:
        part.unlink()
        raise RestoreError(f"downloaded {entry.filename} has checksum {actual}, expected {entry.sha256}; removed it, try again")
    os.replace(part, path)
    if entry.sha256 is None:
        first_use_record(entry).write_text(f"{actual}  {entry.filename}\n")
    return path


def reason(err: OSError) -> str:
    return str(getattr(err, "reason", None) or err) or type(err).__name__


def resolve(name_or_path: str) -> tuple[Path, dict | None]:
    """The weights file of a named prior (downloading it if needed) or a local path, and its config."""
    entry = PRIORS.get(name_or_path)
    if entry is None:
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise RestoreError(f"prior '{name_or_path}' is neither a known name ({', '.join(PRIORS)}) nor an existing file")
        if path.is_file() and path.suffix.lower() not in WEIGHT_SUFFIXES:
            raise RestoreError(f"--prior {path} is not a weights file ({', '.join(WEIGHT_SUFFIXES)}) or a diffusers folder")
        return path, None
    path = weights_path(entry)
    if entry.embedded and not path.is_file():
        raise RestoreError(f"the embedded prior's weights are missing from the installation ({path}); reinstall restore")
    if not entry.embedded:
        path = download(entry)
    check_before_load(entry)
    return path, ({"unet": entry.unet, "schedule": entry.schedule} if entry.unet else None)


def load_prior(name_or_path: str = "default", *, device: str | torch.device = "cpu", precision: str = "fp32",
               channels_last: bool | None = None, compile_mode: str | None = None) -> Denoiser:
    """A ready denoiser (eval mode, on ``device``) for a named prior or a weights file/folder."""
    path, info = resolve(name_or_path)
    if path.is_dir():
        from restore.prior.diffusers_import import load_diffusers_unet

        return load_diffusers_unet(path, device=device, precision=precision)
    if info is None and path.suffix == ".safetensors" and (read_info(path) or {}).get("kind") == "patch_gmm":
        from restore.prior.patch_gmm import PatchGMMDenoiser

        return PatchGMMDenoiser.load(path, device)
    config = info["unet"] if info else None
    net, saved = load_network(path, config)
    schedule = (info or saved).get("schedule", "linear")
    device = torch.device(device)
    if channels_last is None:
        # NHWC is the layout of oneDNN's bf16 kernels (2.2× over NCHW float32 here, against 1.3× for bf16
        # alone: RESULTS.md) and of tensor-core convolutions on NVIDIA GPUs
        channels_last = True
    denoiser = UNetDenoiser(net.to(device), make_betas(schedule), precision=precision, channels_last=channels_last,
                            compile_mode=compile_mode).to(device)
    training = {k: v for k, v in (saved.get("training") or {}).items() if k in ("steps", "final_loss")}
    denoiser.info = {"training": training} if training else {}
    return denoiser


#: a prior trained for fewer steps, or whose last losses average above this, is barely trained
UNDERTRAINED_STEPS, UNDERTRAINED_LOSS = 2000, 0.2


def training_warning(denoiser) -> str | None:
    """A sentence when a prior's own training record says it is barely trained (e.g. ``restore train --steps 5``)."""
    training = getattr(denoiser, "info", {}).get("training", {})
    steps, loss = training.get("steps"), training.get("final_loss")
    if steps is not None and steps < UNDERTRAINED_STEPS:
        return f"this prior was trained for only {steps} steps: expect noise-like restorations"
    if loss is not None and not loss < UNDERTRAINED_LOSS:  # NaN too
        return f"this prior's training ended at loss {loss:.3g} (a trained one is below {UNDERTRAINED_LOSS}): expect poor restorations"
    return None


def describe(name: str) -> dict:
    """What `restore priors info NAME` shows (NAME may also be a weights file, as ``--prior`` takes)."""
    if name not in PRIORS:
        path = Path(name).expanduser()
        if not path.is_file():
            raise RestoreError(f"unknown prior '{name}'; known: {', '.join(PRIORS)} (or give a weights file)")
        saved = read_info(path) if path.suffix == ".safetensors" else None
        info = {"file": str(path), "size_mb": round(path.stat().st_size / 1e6, 1), "sha256": sha256_of(path),
                "config": (saved or {}).get("unet", "in a .json beside the file" if path.with_suffix(".json").is_file() else "none")}
        if saved and saved.get("training"):
            info["training"] = {k: v for k, v in saved["training"].items() if k != "train_config"}
        return info
    entry = PRIORS[name]
    path = weights_path(entry)
    info = {"name": entry.name, "description": entry.description, "file": str(path), "status": verify(entry),
            "url": entry.url or entry.page or "embedded in the package", "citation": entry.citation}
    if path.is_file():
        saved = read_info(path) if path.suffix == ".safetensors" else None
        info["size_mb"] = round(path.stat().st_size / 1e6, 1)
        info["config"] = saved if (saved or {}).get("kind") == "patch_gmm" else (saved or {}).get("unet", entry.unet)
        if saved and saved.get("training"):
            info["training"] = {k: v for k, v in saved["training"].items() if k != "train_config"}
    else:
        info["config"] = entry.unet
    return info
