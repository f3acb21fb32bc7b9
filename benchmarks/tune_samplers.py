"""Sweep a sampler's hyperparameters on one task of the suite, on tuning images kept apart from evaluation.

    python benchmarks/tune_samplers.py --task sr4 --sampler ddrm --steps 20 --grid eta=0,0.5,0.85 eta_b=1

The tuning images are files 40, 41, … of the BSDS500 test folder (sorted): inside the validation
split (benchmarks/val_split.txt, never trained on) but after the images `restore bench --limit 10`
evaluates on (files 0–9), so defaults are chosen on other images than the ones they are judged on.
Every combination of the --grid values runs on the same problems (same masks, noise, seeds);
prints mean PSNR / SSIM per combination as a Markdown table, best first.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time

import torch

from restore.bench import suite
from restore.io import list_images
from restore.metrics import psnr, ssim
from restore.plan import Plan
from restore.samplers.defaults import defaults_for, parse_value


def parse_grid(items: list[str], params) -> list[dict]:
    """['eta=0,0.5', 'eta_b=1'] → every combination, values cast like the defaults' fields (as ``--set`` does)."""
    axes = {}
    for item in items:
        name, _, values = item.partition("=")
        like = getattr(params, name)  # an unknown name is an AttributeError: say it plainly
        axes[name] = [parse_value(v, like) for v in values.split(",")]
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="../shared/datasets/bsds500/test")
    parser.add_argument("--first", type=int, default=40, help="index of the first tuning image")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--task", required=True, choices=list(suite.TASKS))
    parser.add_argument("--sampler", required=True)
    parser.add_argument("--steps", type=int, nargs="+", default=[None], help="one or more step counts to sweep too")
    parser.add_argument("--grid", nargs="*", default=[], help="NAME=V1,V2,… per hyperparameter")
    parser.add_argument("--samples", type=int, default=1, help="score the mean of this many posterior samples")
    parser.add_argument("--best-of", type=int, default=1, help="score the best of this many posterior samples (oracle)")
    parser.add_argument("--best-fit-of", type=int, default=1, help="score the best-fitting of this many posterior samples")
    parser.add_argument("--prior", default="default")
    parser.add_argument("--precision", default="fp32", help="fp32 (the sweeps before session 14), or auto as restore bench runs")
    args = parser.parse_args()

    from restore.api import load_denoiser

    task = suite.TASKS[args.task]
    defaults = defaults_for(args.sampler, task.family)
    denoiser = load_denoiser(args.prior, "cpu", args.precision)
    files = list_images(args.images)[args.first : args.first + args.count]
    problems = [suite.make_problem(task, suite.load_reference(path, suite.PROTOCOL_SIZE), args.first + i, path.stem)
                for i, path in enumerate(files)]
    method = suite.parse_methods(args.sampler, False, args.samples, args.best_of, args.best_fit_of)[0]
    baseline_method = suite.Method("baseline")
    baseline = [float(psnr(suite.scored_estimate(task, baseline_method, task.baseline(p)[None], [p]), p.x)) for p in problems]
    print(f"baseline ({task.baseline_name}): PSNR {sum(baseline) / len(baseline):.2f} ({', '.join(f'{b:.2f}' for b in baseline)})")
    results = []
    for steps in args.steps:
        steps = steps or defaults.steps
        for combo in parse_grid(args.grid, defaults.params):
            params = dataclasses.replace(defaults.params, **combo)
            start = time.time()
            scores = []
            for p in problems:
                result = suite.solve_problems(Plan(task.family, args.sampler, steps, params, method.samples), denoiser, [p])
                x_hat = suite.scored_estimate(task, method, result.samples, [p])
                scores.append((float(psnr(x_hat, p.x)), float(ssim(x_hat, p.x))))
            seconds = (time.time() - start) / len(problems)
            mean_psnr = sum(s[0] for s in scores) / len(scores)
            mean_ssim = sum(s[1] for s in scores) / len(scores)
            results.append((mean_psnr, mean_ssim, steps, combo, seconds))
            print(f"steps {steps:4d} {combo}: PSNR {mean_psnr:.2f} SSIM {mean_ssim:.4f} "
                  f"({', '.join(f'{s[0]:.2f}' for s in scores)}) {seconds:.0f} s/image", flush=True)
    names = ", ".join(p.name for p in problems)
    print(f"\n{args.sampler} on {args.task}, tuning images {args.first}..{args.first + len(problems) - 1} ({names}), prior {args.prior}; "
          f"baseline ({task.baseline_name}) PSNR {sum(baseline) / len(baseline):.2f}")
    print("| steps | hyperparameters | PSNR | SSIM | s/image |\n| --- | --- | --- | --- | --- |")
    for mean_psnr, mean_ssim, steps, combo, seconds in sorted(results, key=lambda r: -r[0]):
        print(f"| {steps} | {', '.join(f'{k}={v}' for k, v in combo.items()) or 'defaults'} | {mean_psnr:.2f} | {mean_ssim:.4f} | {seconds:.0f} |")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
