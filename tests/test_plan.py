"""One resolved plan per restoration: the task's sampler, steps, hyperparameters and NFE — what reports
record and what a resumed folder run compares. Three bugs of the unresolved settings are pinned here."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import operators
from cli import app
from restore.errors import RestoreError
from restore.io import write_image
from operators.color import remove_colour_cast
from restore.plan import Plan, Request, make_plan, solve
from restore.samplers import defaults, get_sampler
from restore.samplers.ddnm import DDNMParams


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def one_image(tmp_path) -> Path:
    folder = tmp_path / "images"
    write_image(folder / "a.png", torch.rand((3, 24, 32), generator=torch.Generator().manual_seed(0)) * 2 - 1)
    return folder


def test_a_plan_resolves_sampler_steps_and_hyperparameters():
    op = operators.build("bicubic:2", (3, 8, 8))
    plan = make_plan("superres", Request(options=("lam=0.3",)), op)
    assert plan.sampler == "dpir" and plan.steps == defaults.defaults_for("dpir", "superres").steps
    assert plan.params.lam == 0.3 and plan.params.renoise == defaults.defaults_for("dpir", "superres").params.renoise
    assert json.loads(json.dumps(plan.to_dict())) == plan.to_dict()  # as a report stores and reads it


def test_one_estimate_methods_fall_back_to_a_posterior_sampler_when_samples_are_asked_for():
    op = operators.build("bicubic:2", (3, 8, 8))
    for key, name in defaults.TASK_SAMPLER.items():
        task, _, kind = key.partition("/")
        chosen = make_plan(task, Request(num_samples=4), kind=kind or None).sampler
        assert get_sampler(chosen).samples_posterior, task
        assert chosen == (name if get_sampler(name).samples_posterior else defaults.POSTERIOR_SAMPLER[task])
    assert make_plan("superres", Request(), op).sampler == "dpir"
    assert make_plan("superres", Request(num_samples=4), op).sampler == "ddrm"
    with pytest.raises(RestoreError, match="dpir gives one estimate, not posterior samples"):
        make_plan("superres", Request("dpir", num_samples=4), op)


def test_an_operator_without_an_svd_gets_a_sampler_that_can_take_it():
    reflect = operators.build("blur:gaussian:5:1.0:boundary=reflect", (3, 16, 16))
    circular = operators.build("blur:gaussian:5:1.0:boundary=circular", (3, 16, 16))
    assert make_plan("deblur", Request(num_samples=2), circular).sampler == "ddrm"
    assert make_plan("deblur", Request(num_samples=2), reflect).sampler == defaults.NO_SVD_SAMPLER
    with pytest.raises(RestoreError, match="ddrm needs an operator with an SVD.*--boundary circular.*use one of: ddnm, diffpir"):
        make_plan("deblur", Request("ddrm"), reflect)


def test_the_deblurring_default_follows_the_kind_of_blur():
    """Camera shake wants DPIR's λ 0.4, a Gaussian blur 0.2 (RESULTS.md, "Deblurring defaults"), whatever the boundary."""
    for boundary in ("circular", "reflect"):
        gaussian = make_plan("deblur", Request(), operators.build(f"blur:gaussian:9:2.0:boundary={boundary}", (3, 32, 32)))
        shake = make_plan("deblur", Request(), operators.build(f"blur:levin:2:boundary={boundary}", (3, 32, 32)))
        assert gaussian.sampler == shake.sampler == "dpir"
        assert (gaussian.params.lam, shake.params.lam) == (0.2, 0.4)
    explicit = make_plan("deblur", Request("dpir", options=("lam=0.3",)), operators.build("blur:levin:2", (3, 32, 32)))
    assert explicit.params.lam == 0.3  # --set applies over the kind's default


def test_the_inpainting_default_follows_the_depth_of_the_holes():
    """Scattered pixels want DPIR, scratches DiffPIR, thick strokes and big boxes the coarse-to-fine pyramid with
    more levels for the deeper holes (RESULTS.md, "Session 18: mask-aware inpainting defaults")."""
    shape = (3, 256, 256)
    plans = {spec: make_plan("inpaint", Request(), operators.build(spec, shape))
             for spec in ("random:0.7", "strokes:width=6", "freeform:seed=1", "box:128")}
    assert [plan.sampler for plan in plans.values()] == ["dpir", "diffpir", "pyramid", "pyramid"]
    assert plans["freeform:seed=1"].params.factors == (4, 2, 1) and plans["box:128"].params.factors == (8, 4, 2, 1)
    # the full size takes the steps, each coarser level a quarter as many
    assert plans["box:128"].nfe == plans["box:128"].steps + 3 * plans["box:128"].steps // 4
    assert make_plan("inpaint", Request(num_samples=2), operators.build("random:0.7", shape)).sampler == "diffpir"
    assert make_plan("inpaint", Request(num_samples=2), operators.build("box:128", shape)).sampler == "pyramid"
    asked = make_plan("inpaint", Request("diffpir"), operators.build("box:128", shape))
    assert asked.sampler == "diffpir" and asked.params == defaults.defaults_for("diffpir", "inpaint").params


def test_nfe_counts_posterior_samples_and_time_travel():
    """Bug: the CLI's report ignored --num-samples, and DDNM's time-travel steps were never counted."""
    assert make_plan("inpaint", Request("diffpir", steps=20, num_samples=3)).nfe == 60
    travel = Plan("inpaint", "ddnm", 10, DDNMParams(travel_length=3, travel_repeat=2), num_samples=2)
    assert travel.nfe == 2 * (10 + 3 * 3)


def test_cli_report_counts_every_network_evaluation(one_image, tiny_prior, tmp_path):
    out = tmp_path / "out"
    result = invoke("inpaint", one_image, "--mask", "box:8", "--sampler", "ddnm", "--steps", "4", "--set", "travel_length=2",
                    "--set", "travel_repeat=2", "--num-samples", "2", "--prior", tiny_prior, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert record["nfe"] == record["plan"]["nfe"] == 2 * (4 + 2)  # time travel: one jump back of 2 levels


def test_bad_hyperparameter_values_fail_before_the_prior_loads(one_image, tmp_path):
    """Bug: --set eta=2 passed the up-front check; every image then failed after the prior had loaded."""
    result = invoke("superres", one_image, "--simulate", "--scale", "2", "--sampler", "ddrm", "--set", "eta=2",
                    "--prior", tmp_path / "no-such-prior.safetensors", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "eta" in result.output and "no-such-prior" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_changed_default_is_never_passed_off_as_done(one_image, tiny_prior, tmp_path, monkeypatch):
    """Bug: resume compared unresolved settings (sampler None, steps None), so outputs made under an old
    default were kept as 'skipped' once the default changed at the same version."""
    args = ["inpaint", one_image, "--mask", "box:8", "--steps", "2", "--prior", tiny_prior, "--out", tmp_path / "out", "--quiet"]
    assert invoke(*args).exit_code == 0
    old = defaults.TABLE["diffpir"]["inpaint"]
    monkeypatch.setitem(defaults.TABLE["diffpir"], "inpaint",
                        dataclasses.replace(old, params=dataclasses.replace(old.params, zeta=0.5)))
    again = invoke(*args)
    assert again.exit_code == 1 and "other settings (plan)" in again.output
    monkeypatch.setitem(defaults.TASK_SAMPLER, "inpaint", "ddrm")
    assert "other settings (plan)" in invoke(*args).output
    monkeypatch.undo()
    assert invoke(*args).exit_code == 0  # the same plan again: resumed, nothing redone
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["images"][0]["status"] == "skipped"


def test_colourisation_removes_the_cast_of_every_sample_unless_kept(tiny_prior):
    """The prior's global tint is a guess the gray measurement cannot correct: colorize's results have a gray mean
    colour (every sample's), and ``remove_cast=False`` keeps the guess; no other task takes it."""
    from restore.api import load_denoiser
    from restore.noise import NoNoise

    x = torch.rand((1, 3, 16, 16), generator=torch.Generator().manual_seed(1)) * 2 - 1
    op = operators.build("gray", (3, 16, 16))
    y = op.A(x)
    denoiser = load_denoiser(tiny_prior, "cpu", "fp32")
    removed = make_plan("colorize", Request(steps=3, num_samples=2), op)
    kept = make_plan("colorize", Request(steps=3, num_samples=2, remove_cast=False), op)
    assert removed.remove_cast and not kept.remove_cast
    assert removed.to_dict()["remove_cast"] and "remove_cast" not in kept.to_dict()  # the other plans stay as they were
    with_cast = solve(kept, denoiser, op, y, noise=NoNoise())
    without = solve(removed, denoiser, op, y, noise=NoNoise())
    assert torch.allclose(without.samples, remove_colour_cast(with_cast.samples), atol=1e-6)  # the same draws
    mean_colour = without.samples.mean(dim=(-2, -1))  # (K, B, 3)
    assert torch.allclose(mean_colour, mean_colour[..., :1].expand_as(mean_colour), atol=1e-5)
    assert not torch.allclose(with_cast.samples.mean(dim=(-2, -1))[..., 0], with_cast.samples.mean(dim=(-2, -1))[..., 2], atol=1e-3)
    assert torch.allclose(without.mean, without.samples.mean(dim=0)) and torch.allclose(without.std, without.samples.std(dim=0))
    with pytest.raises(RestoreError, match="colorize only"):
        make_plan("deblur", Request(remove_cast=True))


def test_colorize_keep_cast_is_recorded_and_changes_the_result(one_image, tiny_prior, tmp_path):
    from restore.io import read_image

    runs, colours = {}, {}
    for flag in ("--remove-cast", "--keep-cast"):
        out = tmp_path / flag
        result = invoke("colorize", one_image, "--simulate", "--steps", "2", "--prior", tiny_prior, "--out", out, "--quiet", flag)
        assert result.exit_code == 0, result.output
        runs[flag] = json.loads((out / "report.json").read_text())["images"][0]["plan"]
        colours[flag] = read_image(out / "a.png").pixels.mean(dim=(-2, -1))
    assert runs["--remove-cast"]["remove_cast"] is True and "remove_cast" not in runs["--keep-cast"]
    assert float(colours["--remove-cast"].max() - colours["--remove-cast"].min()) < 0.02  # gray up to 8-bit rounding
    assert float(colours["--keep-cast"].max() - colours["--keep-cast"].min()) > 0.02
