"""`restore bench`: the protocol suite end to end with a tiny prior, resuming, stable baselines, clear errors."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from restore.bench import run, suite
from restore.errors import RestoreError
from restore.metrics import psnr

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
SIZE = 64  # protocol crops are 256; the suite works on smaller ones (the 61×61 blur kernel needs ≥ 61)


@pytest.fixture(scope="module")
def two_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bench_images")
    for name in ("camera", "rocket"):  # one grayscale (replicated to RGB), one colour
        shutil.copy(SAMPLE / "images" / f"{name}.png", folder)
    return folder


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def read_results(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_suite_runs_end_to_end_and_resumes(two_images, tiny_prior, tmp_path, one_thread):
    out = tmp_path / "bench"
    args = ["bench", two_images, "--out", out, "--prior", tiny_prior, "--size", SIZE, "--steps", "2",
            "--samplers", "ddrm,diffpir", "--quiet"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    rows = read_results(out)
    assert len(rows) == 2 * len(suite.PROTOCOL) * 3  # images × tasks × (baseline, ddrm, diffpir)
    by_key = {(r["task"], r["method"], r["image"]): r for r in rows}
    assert by_key[("ct60", "ddrm", "camera")]["status"] == "n/a"  # DDRM needs an SVD, CT has none
    assert all(r["status"] == "ok" for r in rows if r["method"] != "ddrm" or r["task"] not in ("ct60", "mri4x"))
    assert all(float(r["nfe"]) == 2 for r in rows if r["method"] == "diffpir")
    summary = (out / "summary.md").read_text()
    assert "| sr4 | baseline (bicubic) | 2 |" in summary and "n/a (needs an SVD)" in summary
    for task in suite.PROTOCOL:
        assert (out / f"{task}.png").is_file()
    restored = run.restoration_path(out, "box", "diffpir", "rocket")
    assert restored.is_file()

    # an interrupted run: the last row never made it to results.csv; the rerun does only that one
    with open(out / "results.csv", newline="") as f:
        lines = f.readlines()
    (out / "results.csv").write_text("".join(lines[:-1]))
    last = rows[-1]
    redone = run.restoration_path(out, last["task"], last["method"], last["image"])
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png") if p.parent != out}
    assert invoke(*args).exit_code == 0
    changed = [p for p, t in stamps.items() if p.stat().st_mtime_ns != t]
    assert changed == [redone]
    untimed = lambda table: [{k: v for k, v in r.items() if k != "seconds"} for r in table]  # noqa: E731
    assert untimed(read_results(out)) == untimed(rows)  # same seeds: the redone row has the same numbers

    other = invoke(*[a if a != "2" else "3" for a in args])  # other --steps: refuse to mix results
    assert other.exit_code == 1 and "other settings" in other.output


def test_unknown_task_lists_the_valid_ones(two_images):
    result = invoke("bench", two_images, "--tasks", "sr4,inpaint")
    assert result.exit_code == 1
    assert "unknown task 'inpaint'" in result.output and "random70" in result.output and "Traceback" not in result.output
    assert "unknown sampler" in invoke("bench", two_images, "--samplers", "ddpm").output


def test_images_smaller_than_the_crop_are_a_clear_error(two_images, tmp_path):
    with pytest.raises(RestoreError, match="smaller than the suite's 1024×1024 crop"):
        suite.load_reference(two_images / "camera.png", 1024)


@pytest.mark.parametrize("task", list(suite.TASKS))
def test_baselines_are_deterministic_and_beat_the_raw_measurement(two_images, task, one_thread):
    """Problems are seeded by the image index, so a baseline's numbers for a fixed image never change;
    and each baseline improves on the plainest reading of the measurement (A⁺y, or y itself)."""
    x = suite.load_reference(two_images / "rocket.png", 64)
    first, second = suite.make_problem(suite.TASKS[task], x, 1), suite.make_problem(suite.TASKS[task], x, 1)
    assert torch.equal(first.y, second.y)
    a, b = suite.TASKS[task].baseline(first), suite.TASKS[task].baseline(second)
    assert torch.equal(a, b)
    other_image = suite.make_problem(suite.TASKS[task], x, 2)
    if task in ("mblur", "random70"):  # kernel and mask follow the image index (a 64-px box has one place)
        assert not torch.equal(first.operator.A(first.x), other_image.operator.A(first.x))
    assert psnr(suite.scored_estimate(suite.TASKS[task], suite.Method("baseline"), a[None], [first]), first.x) > 18
    if task in ("denoise", "box", "random70"):
        assert psnr(a.clamp(-1, 1), first.x) > psnr(first.y, first.x)  # better than doing nothing


def test_ct_noise_follows_the_sinogram_maximum(two_images):
    x = suite.load_reference(two_images / "rocket.png", 64)
    problem = suite.make_problem(suite.TASKS["ct60"], x, 0)
    clean_unit = problem.operator.A((problem.x + 1) / 2)
    assert problem.noise.sigma == pytest.approx(2 * 0.005 * float(clean_unit.abs().max()))
    assert problem.y.shape[-2] == 60


def test_a_changed_default_redoes_only_its_rows(two_images, tiny_prior, tmp_path, monkeypatch, one_thread):
    import dataclasses

    from restore.samplers import defaults

    out = tmp_path / "bench"
    args = ["bench", two_images, "--out", out, "--prior", tiny_prior, "--size", SIZE, "--steps", "2",
            "--tasks", "sr4,denoise", "--samplers", "diffpir", "--quiet"]
    assert invoke(*args).exit_code == 0
    before = {(r["task"], r["method"], r["image"]): r["config"] for r in read_results(out)}
    old = defaults.TABLE["diffpir"]["superres"]
    monkeypatch.setitem(defaults.TABLE["diffpir"], "superres", dataclasses.replace(old, params=dataclasses.replace(old.params, zeta=0.9)))
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png") if p.parent != out}
    assert invoke(*args).exit_code == 0
    after = {(r["task"], r["method"], r["image"]): r["config"] for r in read_results(out)}
    assert after.keys() == before.keys()  # one row per key: the superseded ones are gone
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {("sr4", "diffpir", "camera"), ("sr4", "diffpir", "rocket")} and '"zeta": 0.9' in after[("sr4", "diffpir", "camera")]
    redone = {p for p, t in stamps.items() if p.stat().st_mtime_ns != t}
    assert redone == {run.restoration_path(out, "sr4", "diffpir", name) for name in ("camera", "rocket")}


def test_unreadable_or_small_images_fail_alone(two_images, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(two_images, folder)
    (folder / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "bench"
    result = invoke("bench", folder, "--out", out, "--size", SIZE, "--tasks", "sr4", "--no-baselines", "--samplers", "ddrm",
                    "--steps", "1", "--prior", "patch-gmm", "--quiet")
    assert result.exit_code == 1 and result.output.count("failed:") == 1 and "Traceback" not in result.output
    statuses = {r["image"]: r["status"] for r in read_results(out)}
    assert statuses == {"broken": "failed", "camera": "ok", "rocket": "ok"}
    assert (out / "sr4.png").is_file() and (out / "summary.md").is_file()


def test_samples_scores_the_mean_of_posterior_samples(two_images, tiny_prior, tmp_path, one_thread):
    """--samples 2 adds 'NAME+mean2' rows: twice the NFE, and the mean of the two seeded draws."""
    out = tmp_path / "bench"
    common = ["bench", two_images, "--prior", tiny_prior, "--size", SIZE, "--steps", "2", "--tasks", "denoise",
              "--samplers", "diffpir", "--no-baselines", "--quiet", "--out", out]
    assert invoke(*common).exit_code == 0
    assert invoke(*common, "--samples", "2").exit_code == 0
    rows = {(r["method"], r["image"]): r for r in read_results(out)}
    assert float(rows[("diffpir+mean2", "rocket")]["nfe"]) == 2 * float(rows[("diffpir", "rocket")]["nfe"]) == 4
    assert '"num_samples": 2' in rows[("diffpir+mean2", "rocket")]["config"]
    one = run.restoration_path(out, "denoise", "diffpir", "rocket")
    mean = run.restoration_path(out, "denoise", "diffpir+mean2", "rocket")
    assert mean.is_file() and mean.read_bytes() != one.read_bytes()


def test_the_cli_default_tasks_are_the_protocol():
    from cli import PROTOCOL_TASKS

    assert PROTOCOL_TASKS == suite.PROTOCOL and set(suite.PROTOCOL) < set(suite.TASKS)


def test_freeform_and_colorize_rows_carry_what_psnr_misses(two_images, tiny_prior, tmp_path, one_thread):
    out = tmp_path / "bench"
    result = invoke("bench", two_images, "--out", out, "--prior", tiny_prior, "--size", SIZE, "--steps", "1",
                    "--tasks", "freeform,colorize", "--samplers", "diffpir", "--quiet")
    assert result.exit_code == 0, result.output
    rows = {(r["task"], r["method"]): r for r in read_results(out)}
    # a random prior fills with noise: more "texture" than the truth
    assert float(rows[("freeform", "diffpir")]["texture"]) > 1 and float(rows[("freeform", "baseline")]["texture"]) > 0
    assert float(rows[("freeform", "baseline")]["hole_psnr"]) > 5
    gray = rows[("colorize", "baseline")]
    assert float(gray["colourfulness"]) == pytest.approx(0, abs=1e-6) and float(gray["chroma_error"]) > 0
    assert "texture ratio" in (out / "summary.md").read_text()


def test_texture_ratio_is_one_for_the_truth_and_low_for_a_blur():
    from restore.metrics import hole_psnr, texture_ratio

    x = suite.load_reference(SAMPLE / "images" / "chelsea.png", 64)
    missing = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    missing[..., 16:48, 16:48] = True
    blurred = torch.nn.functional.avg_pool2d(x, 7, stride=1, padding=3, count_include_pad=False)
    assert float(texture_ratio(x, x, missing)) == pytest.approx(1.0)
    assert float(texture_ratio(blurred, x, missing)) < 0.6
    noisy = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert float(texture_ratio(noisy, x, missing)) > 1.5
    assert float(hole_psnr(x, x, missing)) > 100 and float(hole_psnr(blurred, x, missing)) < 40


def test_blind_task_hides_the_kernel_and_counts_the_estimate(two_images, tiny_prior, tmp_path, one_thread):
    from restore.blind import estimate_nfe

    out = tmp_path / "bench"
    result = invoke("bench", two_images, "--out", out, "--prior", tiny_prior, "--size", SIZE, "--steps", "2",
                    "--tasks", "mblur-blind", "--samplers", "dpir", "--limit", "1", "--quiet")
    assert result.exit_code == 0, result.output
    rows = {r["method"]: r for r in read_results(out)}
    assert rows["dpir"]["status"] == "ok" and rows["baseline"]["status"] == "ok"
    assert int(rows["dpir"]["nfe"]) == 2 + estimate_nfe((SIZE, SIZE), 31)  # the kernel estimate's evaluations counted
    assert "classical blind" in (out / "summary.md").read_text()
    # the classical blind baseline, aligned as blind methods are scored, beats the blurry measurement on a real photo
    task = suite.TASKS["mblur-blind"]
    problem = suite.make_problem(task, suite.load_reference(two_images / "camera.png", 128), 0)
    x_hat = suite.scored_estimate(task, suite.Method("baseline"), task.baseline(problem)[None], [problem])
    assert psnr(x_hat, problem.x).item() > psnr(problem.y, problem.x).item() + 1


def test_best_of_scores_the_sample_closest_to_the_truth_and_best_fit_the_one_that_fits_y():
    """--best-of N: of each image's N samples the one of highest PSNR, after the task's alignment (phase retrieval's
    180° turn); --best-fit-of N: the one whose A(x̂) is closest to y; --samples N: their mean."""
    from operators.phase import PhaseRetrieval
    from restore.noise import GaussianNoise

    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    op = PhaseRetrieval((3, 8, 8))
    problems = [suite.Problem(b, str(b), x[b : b + 1], op, op.A(x[b : b + 1]), GaussianNoise(0.05)) for b in range(2)]
    good, poor = x + 0.01, x + 0.3
    samples = torch.stack([torch.stack([poor[0], good[1].flip(-2, -1)]), torch.stack([good[0], poor[1]])])  # (K=2, B=2)
    task = suite.TASKS["phase"]
    for method in suite.parse_methods("dps", False, best_of=2) + suite.parse_methods("dps", False, best_fit_of=2):
        # image 1's best sample came out upside down: chosen all the same, and turned back
        assert torch.allclose(suite.scored_estimate(task, method, samples, problems), good), method.label
    mean = suite.scored_estimate(suite.TASKS["denoise"], suite.parse_methods("dps", False, samples=2)[0], samples, problems)
    assert torch.allclose(mean, samples.mean(dim=0).clamp(-1, 1))
    labels = [m.label for m in suite.parse_methods("dps:50,daps", False, best_of=4) + suite.parse_methods("dps", False, best_fit_of=3)]
    assert labels == ["dps:50+best4", "daps+best4", "dps+fit3"]
    with pytest.raises(RestoreError, match="give one of them"):
        suite.parse_methods("dps", False, samples=2, best_of=2)


def test_phase_rows_report_the_single_sample_and_the_best_of_n(two_images, tiny_prior, tmp_path, one_thread):
    out = tmp_path / "bench"
    common = ["bench", two_images, "--prior", tiny_prior, "--size", 32, "--steps", "2", "--tasks", "phase",
              "--samplers", "dps", "--limit", "1", "--quiet", "--out", out]
    assert invoke(*common).exit_code == 0
    for option in ("--best-of", "--best-fit-of"):
        result = invoke(*common, "--no-baselines", option, "2")
        assert result.exit_code == 0, result.output
    rows = {r["method"]: r for r in read_results(out)}
    assert set(rows) == {"baseline", "dps", "dps+best2", "dps+fit2"} and all(r["status"] == "ok" for r in rows.values())
    assert float(rows["dps+best2"]["psnr"]) >= float(rows["dps+fit2"]["psnr"])  # the oracle is never beaten
    blind = invoke(*common[:9], "mblur-blind", *common[10:], "--no-baselines", "--best-fit-of", "2")  # A is hidden there
    assert blind.exit_code == 0, blind.output
    assert {r["status"] for r in read_results(out) if r["task"] == "mblur-blind"} == {"n/a"}
    assert int(rows["dps+best2"]["nfe"]) == 2 * int(rows["dps"]["nfe"])
    summary = (out / "summary.md").read_text()
    assert "HIO" in summary and "oracle" in summary and "180° turn" in summary
