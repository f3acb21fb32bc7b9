"""Carry trained priors back from a lent GPU machine, whose returned files are capped at 16 MB each.

    python benchmarks/gpu_shards.py split $OUT /tmp/r32/prior.safetensors /tmp/r64/prior.safetensors
    python benchmarks/gpu_shards.py merge /work/.device/1 runs/gpu

``split`` writes each run's EMA weights as float16 shards of at most 15 MB (``NAME.K.safetensors``,
NAME = the run's folder) and one ``summary.json`` with each run's config, training record and loss
curve (mean per 100 steps, from its ``.ckpt``). ``merge`` turns them back into ``NAME.safetensors``
+ ``NAME.json`` priors that ``--prior PATH`` and ``benchmarks/prior_denoise.py`` load.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

SHARD_BYTES = 15_000_000


def split(out: Path, weights: list[Path]) -> None:
    summary = {}
    for path in weights:
        name = path.parent.name
        if not path.exists():
            summary[name] = {"missing": str(path)}
            continue
        shard, size, count = {}, 0, 0
        for key, value in load_file(path).items():
            value = value.half().contiguous()
            if shard and size + value.numel() * 2 > SHARD_BYTES:
                save_file(shard, out / f"{name}.{count}.safetensors")
                shard, size, count = {}, 0, count + 1
            shard[key] = value
            size += value.numel() * 2
        save_file(shard, out / f"{name}.{count}.safetensors")
        losses = torch.load(path.with_suffix(".ckpt"), map_location="cpu", weights_only=True)["losses"]
        curve = [round(float(losses[i : i + 100].mean()), 5) for i in range(0, len(losses), 100)]
        summary[name] = {"info": json.loads(path.with_suffix(".json").read_text()), "loss_per_100": curve}
        print(name, summary[name]["info"]["training"]["steps"], "steps; last losses", curve[-3:])
    (out / "summary.json").write_text(json.dumps(summary, indent=1))


def merge(folder: Path, dest: Path) -> None:
    from restore.prior.unet import UNetConfig, UNetModel
    from restore.prior.weights import save_prior

    dest.mkdir(parents=True, exist_ok=True)
    for name, run in json.loads((folder / "summary.json").read_text()).items():
        if "info" not in run:
            print(name, "missing on the device:", run.get("missing"))
            continue
        state = {}
        for shard in sorted(folder.glob(f"{name}.*.safetensors"), key=lambda p: int(p.suffixes[-2][1:])):
            state.update(load_file(shard))
        info = run["info"]
        net = UNetModel(UNetConfig.from_dict(info["unet"]))
        net.load_state_dict({k: v.float() for k, v in state.items()})
        save_prior(net, dest / f"{name}.safetensors", schedule=info["schedule"], training=info["training"])
        (dest / f"{name}.losses.json").write_text(json.dumps(run["loss_per_100"]))
        print(dest / f"{name}.safetensors", sum(p.numel() for p in net.parameters()), "parameters")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    split_args = commands.add_parser("split")
    split_args.add_argument("out", type=Path)
    split_args.add_argument("weights", type=Path, nargs="+")
    merge_args = commands.add_parser("merge")
    merge_args.add_argument("folder", type=Path)
    merge_args.add_argument("dest", type=Path)
    args = parser.parse_args()
    if args.command == "split":
        split(args.out, args.weights)
    else:
        merge(args.folder, args.dest)


if __name__ == "__main__":
    main()
