"""Reading and writing prior weights: safetensors with the config in its metadata (and a JSON beside),
or guided-diffusion ``.pt`` state dicts read with ``torch.load(weights_only=True)`` — never unpickled code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from restore.errors import RestoreError
from restore.prior.unet import UNetConfig, UNetModel

METADATA_KEY = "restore_prior"


def save_prior(net: UNetModel, path: Path, *, schedule: str = "linear", training: dict | None = None, dtype: torch.dtype = torch.float32) -> None:
    """Write ``path`` (.safetensors) and ``path.json``: the network's config, schedule and training record."""
    from safetensors.torch import save_file

    path = Path(path)
    info = {"unet": net.config.to_dict(), "schedule": schedule, "training": training or {}}
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in net.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(info)})
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")


def read_info(path: Path) -> dict | None:
    """The config saved with a weights file: safetensors metadata first, then a JSON file beside it."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as err:
            raise RestoreError(f"{path} is not a readable safetensors file ({err})") from None
        if METADATA_KEY in meta:
            return json.loads(meta[METADATA_KEY])
    beside = path.with_suffix(".json")
    if beside.exists():
        try:
            info = json.loads(beside.read_text())
        except json.JSONDecodeError as err:
            raise RestoreError(f"config file {beside} is not valid JSON ({err})") from None
        # a bare guided-diffusion config (create_model's keyword arguments) is accepted as is
        return info if "unet" in info else {"unet": info, "schedule": "linear"}
    return None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise RestoreError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RestoreError(f"cannot read weights {path}: the file is corrupt, truncated, not a weights file, "
                           f"or holds pickled code ({detail})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RestoreError(f"{path} does not hold a state dict of tensors")
    return state


def load_network(path: Path, config: UNetConfig | dict | None = None) -> tuple[UNetModel, dict]:
    """The UNet stored at ``path`` (float32) and its info dict; ``config`` overrides the saved one."""
    path = Path(path)
    info = read_info(path) if path.exists() else None
    if config is not None:
        unet = config.to_dict() if isinstance(config, UNetConfig) else dict(config)
        info = {**(info or {}), "unet": unet}
        info.setdefault("schedule", "linear")
    if info is None:
        raise RestoreError(f"no config for {path}: put a guided-diffusion config JSON beside it as {path.with_suffix('.json').name}")
    try:
        unet_config = UNetConfig.from_dict(info["unet"])
    except (TypeError, ValueError) as err:
        raise RestoreError(f"bad prior config for {path}: {err}") from None
    state = read_state_dict(path)
    with torch.device("meta"):
        net = UNetModel(unet_config)
    check_state_dict(net, state, path)
    net.load_state_dict({k: v.float() for k, v in state.items()}, assign=True)
    return net.eval(), info


def check_state_dict(net: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """One clear error when a weights file does not fit the configured network."""
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [f"{k} {got[k]} != {expected[k]}" for k in expected if k in got and got[k] != expected[k]]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} of another shape (e.g. {wrong[0]})")
        raise RestoreError(f"weights {path} do not match the network config: " + "; ".join(parts))


def save_half_precision(src: Path, dst: Path) -> None:
    """Copy a saved prior as fp16 weights (how the embedded default is shipped), keeping its config and record."""
    net, info = load_network(src)
    save_prior(net, dst, schedule=info.get("schedule", "linear"), training=info.get("training"), dtype=torch.float16)
