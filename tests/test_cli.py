"""The command line on sample_data/ with a tiny random prior: outputs, reports, resume, and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from restore.io import read_image, write_image

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
runner = CliRunner()


@pytest.fixture
def images(tmp_path) -> Path:
    """Two small RGB images and one grayscale, written as PNG."""
    folder = tmp_path / "images"
    gen = torch.Generator().manual_seed(0)
    for name, shape in [("a", (3, 24, 32)), ("b", (3, 24, 32)), ("g", (1, 20, 20))]:
        write_image(folder / f"{name}.png", torch.rand(shape, generator=gen) * 2 - 1)
    return folder


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def fast(prior: str) -> list[str]:
    return ["--prior", prior, "--steps", "3", "--quiet"]


def test_help_and_version():
    result = invoke("--help")
    assert result.exit_code == 0 and "inpaint" in result.output and "superres" in result.output
    assert invoke("--version").output.startswith("restore ")
    assert "--mask" in invoke("inpaint", "--help").output


def test_inpaint_folder_with_mask_spec_writes_outputs_and_reports(images, tiny_prior, tmp_path):
    out = tmp_path / "out"
    result = invoke("inpaint", images, "--mask", "random:0.5", "--out", out, *fast(tiny_prior), "--save-grid")
    assert result.exit_code == 0, result.output
    for name in ("a", "b", "g"):
        restored = read_image(out / f"{name}.png")
        assert restored.pixels.shape == read_image(images / f"{name}.png").pixels.shape
        assert (out / "grid" / f"{name}.png").is_file()
    report = json.loads((out / "report.json").read_text())
    assert len(report["images"]) == 3 and all(r["status"] == "ok" for r in report["images"])
    assert report["images"][0]["sampler"] == "dpir" and report["images"][0]["steps"] == 3
    assert report["images"][0]["plan"]["seed"] == 0 and report["settings"]["mask"] == "random:0.5"
    assert np.isfinite(report["mean"]["psnr"]) and np.isfinite(report["mean"]["ssim"])
    csv_lines = (out / "report.csv").read_text().splitlines()
    assert csv_lines[0].startswith("name,status,psnr") and len(csv_lines) == 1 + 3 + 1


def test_rerun_resumes_and_changed_settings_are_refused(images, tiny_prior, tmp_path):
    out = tmp_path / "out"
    assert invoke("inpaint", images, "--mask", "box:8", "--out", out, *fast(tiny_prior)).exit_code == 0
    stamp = (out / "a.png").stat().st_mtime_ns
    again = invoke("inpaint", images, "--mask", "box:8", "--out", out, *fast(tiny_prior), "--json")
    assert again.exit_code == 0
    assert all(r["status"] == "skipped" for r in json.loads(again.stdout)["images"])
    assert (out / "a.png").stat().st_mtime_ns == stamp
    changed = invoke("inpaint", images, "--mask", "box:8", "--out", out, *fast(tiny_prior), "--seed", "5")
    assert changed.exit_code == 1 and "other settings" in changed.output and "Traceback" not in changed.output
    redo = invoke("inpaint", images, "--mask", "box:8", "--out", out, *fast(tiny_prior), "--seed", "5", "--overwrite")
    assert redo.exit_code == 0


def test_mask_files_matched_by_name_white_is_missing(images, tiny_prior, tmp_path):
    masks = tmp_path / "masks"
    for name in ("a", "b"):
        m = -torch.ones(1, 24, 32)
        m[:, 4:12, 4:12] = 1  # white square = missing
        write_image(masks / f"{name}.png", m)
    out = tmp_path / "out"
    result = invoke("inpaint", images / "a.png", "--mask", masks, "--out", out, *fast(tiny_prior), "--json")
    assert result.exit_code == 0, result.output
    assert "mask:" in json.loads(result.stdout)["images"][0]["operator"]


@pytest.mark.parametrize("command", [
    ["deblur", "--kernel", "gaussian:5:1.0", "--simulate"],
    ["deblur", "--kernel", "gaussian:5:1.0", "--boundary", "circular", "--simulate", "--sampler", "dps"],
    ["superres", "--scale", "2", "--simulate"],
    ["denoise", "--simulate", "--noise-sigma", "0.1"],
    ["colorize", "--simulate", "--sampler", "ddnm"],
])
def test_image_tasks_simulate_and_report(images, tiny_prior, tmp_path, command):
    out = tmp_path / "out"
    result = invoke(command[0], images / "a.png", *command[1:], "--out", out, *fast(tiny_prior), "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["images"][0]
    assert row["status"] == "ok" and np.isfinite(row["psnr"])
    assert (out / "measurement" / "a.png").is_file()


def test_num_samples_write_samples_and_uncertainty(images, tiny_prior, tmp_path):
    out = tmp_path / "out"
    result = invoke("superres", images / "a.png", "--scale", "2", "--simulate", "--num-samples", "2", "--out", out,
                    *fast(tiny_prior), "--save-progress")
    assert result.exit_code == 0, result.output
    for side in ("samples/1/a.png", "samples/2/a.png", "std/a.png", "std/a.npy", "progress/a.gif"):
        assert (out / side).is_file(), side


def test_mri_and_ct_simulated(images, tiny_prior, tmp_path):
    result = invoke("mri", images / "g.png", "--simulate", "--acceleration", "2", "--out", tmp_path / "m", *fast(tiny_prior), "--json")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "measurement" / "g.npz").is_file()
    result = invoke("ct", images / "g.png", "--simulate", "--angles", "8", "--out", tmp_path / "c", *fast(tiny_prior), "--json")
    assert result.exit_code == 0, result.output


def test_metrics_command(images, tmp_path):
    result = invoke("metrics", images, images, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mean"]["ssim"] == pytest.approx(1.0)


@pytest.mark.parametrize("args, message", [
    (["inpaint", "missing.png", "--mask", "box:8"], "file not found"),
    (["deblur", "{a}", "--kernel", "wobbly:3"], "kernel"),
    (["superres", "{a}", "--scale", "3", "--simulate"], "divisible"),
    (["inpaint", "{a}", "--mask", "{small}"], "but the image is"),
    (["inpaint", "{a}", "--mask", "box:8", "--prior", "nonexistent-prior"], "prior"),
    (["inpaint", "{a}", "--mask", "box:8", "--sampler", "magic"], "unknown sampler"),
    (["inpaint", "{a}", "--mask", "box:8", "--sampler", "dpir", "--num-samples", "3"], "not posterior samples"),
    (["inpaint", "{bad}", "--mask", "box:8"], "cannot read image"),
    (["inpaint", "{a}", "--mask", "box:8", "--sampler", "dpir", "--set", "lamb=0.3"], "its hyperparameters: lam="),
    (["inpaint", "{a}", "--mask", "box:8", "--sampler", "dpir", "--set", "lam=much"], "not a valid value"),
    (["inpaint", "{a}", "--mask", "box:8", "--set", "zeta"], "name=value"),
])
def test_bad_inputs_give_one_line_and_exit_1(images, tiny_prior, tmp_path, args, message):
    small = tmp_path / "small.png"
    write_image(small, torch.zeros(1, 5, 5))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    args = [a.format(a=images / "a.png", small=small, bad=bad) for a in args]
    if "--prior" not in args:
        args += ["--prior", tiny_prior]
    result = invoke(*args, "--steps", "2", "--out", tmp_path / "o")
    assert result.exit_code == 1, result.output
    assert message in result.output.lower() and "Traceback" not in result.output


def test_set_changes_a_hyperparameter_and_is_recorded(images, tiny_prior, tmp_path):
    common = ["superres", images / "a.png", "--scale", "2", "--simulate", "--sampler", "dpir", *fast(tiny_prior)]
    assert invoke(*common, "--out", tmp_path / "default").exit_code == 0
    result = invoke(*common, "--set", "lam=5", "--set", "renoise=0", "--out", tmp_path / "set")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "set" / "report.json").read_text())
    params = report["images"][0]["plan"]["params"]
    assert params["lam"] == 5 and params["renoise"] == 0
    default, changed = (read_image(tmp_path / d / "a.png").pixels for d in ("default", "set"))
    assert not torch.equal(default, changed)
    again = invoke(*common, "--set", "lam=6", "--out", tmp_path / "set")  # other options: not mixed into that folder
    assert again.exit_code == 1 and "other settings (plan)" in again.output


def test_cuda_without_gpu_is_a_clear_error(images, tiny_prior, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = invoke("denoise", images / "a.png", "--device", "cuda", "--prior", tiny_prior, "--out", tmp_path / "o")
    assert result.exit_code == 1 and "no CUDA GPU" in result.output


def test_failing_image_in_folder_is_reported_and_run_goes_on(images, tiny_prior, tmp_path):
    (images / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = invoke("inpaint", images, "--mask", "box:4", "--out", out, *fast(tiny_prior), "--json")
    assert result.exit_code == 1
    rows = {r["name"]: r for r in json.loads((out / "report.json").read_text())["images"]}
    assert rows["broken"]["status"] == "failed" and rows["a"]["status"] == "ok"


def test_never_overwrites_an_input(images, tiny_prior):
    result = invoke("inpaint", images, "--mask", "box:4", "--out", images, *fast(tiny_prior))
    assert result.exit_code == 1 and "folder restore reads from" in result.output and "overwrite" in result.output


def test_sample_data_is_complete():
    names = sorted(p.stem for p in (SAMPLE / "images").glob("*.png"))
    assert names == ["astronaut", "camera", "chelsea", "coffee", "rocket"]
    assert sorted(p.stem for p in (SAMPLE / "masks").glob("*.png")) == names
    for name in names:
        assert read_image(SAMPLE / "masks" / f"{name}.png").pixels.shape[-2:] == read_image(SAMPLE / "images" / f"{name}.png").pixels.shape[-2:]


def test_priors_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTORE_CACHE", str(tmp_path))
    result = invoke("priors", "list")
    assert result.exit_code == 0 and "imagenet-256" in result.output
    info = invoke("priors", "info", "imagenet-256", "--json")
    assert info.exit_code == 0 and json.loads(info.stdout)["status"] == "missing"
    table = invoke("priors", "info", "default")
    assert table.exit_code == 0 and "steps=18800" in table.stdout and "status" in table.stdout and "{" not in table.stdout
    local = invoke("priors", "info", str(Path(__file__).parents[1] / "restore" / "prior" / "weights" / "default.safetensors"), "--json")
    assert local.exit_code == 0 and len(json.loads(local.stdout)["sha256"]) == 64  # a file --prior takes is described too
    assert invoke("priors", "info", "nope").exit_code == 1
    assert invoke("priors", "verify").exit_code == 0


def test_train_command_runs_and_resumes(images, tmp_path):
    out = tmp_path / "p.safetensors"
    args = ["train", images, "--out", out, "--steps", "2", "--channels", "32", "--channel-mult", "1,2", "--crop", "16", "--batch-size", "2", "--quiet"]
    assert invoke(*args).exit_code == 0
    assert out.is_file() and out.with_suffix(".ckpt").is_file()
    args[args.index("--steps") + 1] = "3"
    assert invoke(*args).exit_code == 0
    assert json.loads(out.with_suffix(".json").read_text())["training"]["steps"] == 3


def test_train_anneal_continues_from_weights_and_stops_at_the_anneal_step(images, tmp_path):
    first = tmp_path / "first.safetensors"
    base = [images, "--channels", "32", "--channel-mult", "1,2", "--crop", "16", "--batch-size", "2", "--quiet"]
    assert invoke("train", *base, "--out", first, "--steps", "2").exit_code == 0
    second = tmp_path / "second.safetensors"
    assert invoke("train", *base, "--out", second, "--init-from", first, "--anneal-to", "5", "--low-t-fraction", "0.9").exit_code == 0
    training = json.loads(second.with_suffix(".json").read_text())["training"]
    assert training["steps"] == 5
    assert training["train_config"]["anneal_start"] == 2 and training["train_config"]["low_t_fraction"] == 0.9


def test_a_constant_rate_run_resumed_with_anneal_to_anneals_from_where_it_stands(images, tmp_path):
    out = tmp_path / "p.safetensors"
    base = ["train", images, "--out", out, "--channels", "32", "--channel-mult", "1,2", "--crop", "16", "--batch-size", "2", "--quiet"]
    assert invoke(*base, "--steps", "2").exit_code == 0
    assert invoke(*base, "--anneal-to", "4").exit_code == 0  # resumes the .ckpt, anneals steps 2 → 4, stops
    training = json.loads(out.with_suffix(".json").read_text())["training"]
    assert training["steps"] == 4 and training["train_config"]["anneal_start"] == 2
    assert training["train_config"]["anneal_end"] == 4
    behind = invoke(*base, "--anneal-to", "3")
    assert behind.exit_code == 1 and "already at step 4" in behind.output


def test_train_anneal_over_minutes_records_the_steps_it_came_to(images, tmp_path):
    out = tmp_path / "p.safetensors"
    base = ["train", images, "--out", out, "--crop", "16", "--batch-size", "2", "--channel-mult", "1,2", "--quiet"]
    assert invoke(*base, "--minutes", "0.02", "--anneal", "--device", "cpu").exit_code == 0
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["unet"]["channel_mult"] == "1,2" and info["training"]["device"] == "cpu"
    config = info["training"]["train_config"]
    assert config["anneal_start"] == 0 and config["anneal_end"] == info["training"]["steps"] > 0
    # again on the same --out: resumes the .ckpt and anneals anew over the new minutes
    assert invoke(*base, "--minutes", "0.01", "--anneal", "--device", "cpu").exit_code == 0
    again = json.loads(out.with_suffix(".json").read_text())["training"]
    assert again["train_config"]["anneal_start"] == info["training"]["steps"] < again["steps"]
    deeper = tmp_path / "deeper.safetensors"
    args = [*base[:3], deeper, *base[4:], "--steps", "2", "--res-blocks", "2", "--loss-weight", "min-snr", "--low-t-max", "100"]
    assert invoke(*args).exit_code == 0
    info = json.loads(deeper.with_suffix(".json").read_text())
    assert info["unet"]["num_res_blocks"] == 2
    assert info["training"]["train_config"]["loss_weight"] == "min-snr" and info["training"]["train_config"]["low_t_max"] == 100
    for bad in (["--anneal", "--steps", "3"], ["--minutes", "1", "--channel-mult", "1,x"], ["--steps", "1", "--loss-weight", "snr"],
                ["--minutes", "1", "--channel-mult", "1,2,2,2,2,2"]):  # 16 px do not halve five times
        result = invoke(*base, *bad)
        assert result.exit_code == 1 and "Traceback" not in result.output, bad


def test_readme_job_on_sample_data_with_masks_matched_by_name(tiny_prior, tmp_path):
    """The quick start's command (on two of the sample images, with the tiny prior and few steps)."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("camera", "rocket"):  # one grayscale, one colour
        shutil.copy(SAMPLE / "images" / f"{name}.png", images)
    out = tmp_path / "restored"
    result = invoke("inpaint", images, "--mask", SAMPLE / "masks", "--out", out, *fast(tiny_prior), "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["images"]
    assert [r["name"] for r in rows] == ["camera", "rocket"] and all(r["status"] == "ok" for r in rows)
    for name in ("camera", "rocket"):
        restored = read_image(out / f"{name}.png").pixels
        original = read_image(SAMPLE / "images" / f"{name}.png").pixels
        missing = read_image(SAMPLE / "masks" / f"{name}.png").pixels[0] > 0
        assert restored.shape == original.shape
        # noiseless inpainting keeps the observed pixels: DiffPIR's last data step weighs the measurement
        # 1 : ρ = 0.01 against x̂0, so up to 0.01 × 2 in [-1, 1] plus 8-bit rounding
        assert (restored - original)[:, ~missing].abs().max() <= 0.02 + 2 / 255


def test_rgba_16_bit_input_keeps_alpha_and_depth(tiny_prior, tmp_path):
    from restore.io import image_from_array, to_array

    rgba = (np.random.default_rng(0).random((24, 32, 4)) * 65535).astype(np.uint16)
    given = image_from_array(rgba)
    write_image(tmp_path / "x.png", given.pixels, alpha=given.alpha, bit_depth=16)
    out = tmp_path / "out"
    result = invoke("denoise", tmp_path / "x.png", "--noise-sigma", "0.05", "--out", out, *fast(tiny_prior))
    assert result.exit_code == 0, result.output
    restored = read_image(out / "x.png")
    assert restored.bit_depth == 16 and restored.pixels.shape == (3, 24, 32)
    assert np.array_equal(to_array(restored.pixels, restored.alpha, 16)[..., 3], rgba[..., 3])


def test_reference_folder_gives_metrics_for_real_measurements(images, tiny_prior, tmp_path):
    """A real (not simulated) low-resolution input, with the ground truth given by --reference."""
    import operators

    low = tmp_path / "low"
    x = read_image(images / "a.png").pixels[None]
    write_image(low / "a.png", operators.build("bicubic:2", (3, 24, 32)).A(x)[0].clamp(-1, 1))
    result = invoke("superres", low, "--scale", "2", "--reference", images, "--out", tmp_path / "o", *fast(tiny_prior), "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["images"][0]
    assert np.isfinite(row["psnr"]) and read_image(tmp_path / "o" / "a.png").pixels.shape == (3, 24, 32)


def test_measured_kspace_and_sinogram_files(images, tiny_prior, tmp_path):
    import operators

    x = read_image(images / "g.png").pixels[None]  # (1, 1, 20, 20)
    mri = operators.build("mri:equispaced:2:center_lines=4", (1, 20, 20))
    kspace = mri.A((x + 1) / 2)[0].numpy()  # k-space of the [0, 1] image, as a scanner would give it
    np.save(tmp_path / "scan.npy", kspace)
    result = invoke("mri", tmp_path / "scan.npy", "--reference", images / "g.png", "--out", tmp_path / "m",
                    *fast(tiny_prior), "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["images"][0]
    assert np.isfinite(row["psnr"]) and "white taken as the largest zero-filled magnitude" in row["notes"]  # said, not hidden
    given = invoke("mri", tmp_path / "scan.npy", "--intensity-scale", "1", "--out", tmp_path / "m1", *fast(tiny_prior), "--json")
    assert given.exit_code == 0 and "white taken" not in json.loads(given.stdout)["images"][0]["notes"]
    ct = operators.build("ct:8", (1, 20, 20))
    np.save(tmp_path / "sino.npy", ct.A((x + 1) / 2)[0, 0].numpy())  # (angles, detectors)
    result = invoke("ct", tmp_path / "sino.npy", "--angles", "8", "--size", "20", "--out", tmp_path / "c", *fast(tiny_prior), "--json")
    assert result.exit_code == 0, result.output
    assert read_image(tmp_path / "c" / "sino.png").pixels.shape == (1, 20, 20)
    wrong = invoke("ct", tmp_path / "sino.npy", "--angles", "9", "--out", tmp_path / "c2", *fast(tiny_prior))
    assert wrong.exit_code == 1 and "angles" in wrong.output


def test_mask_glob_matched_by_name(images, tiny_prior, tmp_path):
    masks = tmp_path / "masks"
    write_image(masks / "a_mask_unused.png", torch.ones(1, 24, 32))
    write_image(masks / "a.png", -torch.ones(1, 24, 32))
    result = invoke("inpaint", images / "a.png", "--mask", str(masks / "*.png"), "--out", tmp_path / "o", *fast(tiny_prior))
    assert result.exit_code == 0, result.output


def test_compile_switch_restores_the_same_image(images, tiny_prior, tmp_path):
    """--compile (torch.compile of the network; CUDA graphs on a GPU) computes what the eager network does."""
    args = ["denoise", images / "a.png", "--noise-sigma", "0.1", "--simulate", *fast(tiny_prior), "--precision", "fp32"]
    assert invoke(*args, "--out", tmp_path / "eager").exit_code == 0
    result = invoke(*args, "--out", tmp_path / "compiled", "--compile")
    assert result.exit_code == 0, result.output
    eager = read_image(tmp_path / "eager" / "a.png").pixels
    compiled = read_image(tmp_path / "compiled" / "a.png").pixels
    assert (eager - compiled).abs().max() <= 2 / 255 * 2  # [-1, 1] pixels, at most a rounding step apart


def test_phase_retrieval_from_magnitudes_and_its_clear_errors(images, tiny_prior, tmp_path):
    """restore phase: --simulate saves the magnitudes (.npy), which restore again (the image size read from the
    padded size); the linear samplers refuse it naming those that can; a file of the wrong shape is one line."""
    out = tmp_path / "out"
    result = invoke("phase", images / "a.png", "--simulate", "--out", out, *fast(tiny_prior), "--save-grid")
    assert result.exit_code == 0, result.output
    assert read_image(out / "grid" / "a.png").pixels.shape[0] == 3  # the spectrum shown on a log scale
    saved = np.load(out / "measurement" / "a.npy")
    assert saved.shape == (3, 24 + 2 * 6, 32 + 2 * 8)  # int(2 / 8 · side) zeros on each side
    report = json.loads((out / "report.json").read_text())["images"][0]
    assert report["sampler"] == "daps" and report["operator"] == "phase:oversample=2" and np.isfinite(report["psnr"])
    again = invoke("phase", out / "measurement" / "a.npy", "--out", tmp_path / "again", *fast(tiny_prior))
    assert again.exit_code == 0, again.output
    assert read_image(tmp_path / "again" / "a.png").pixels.shape == (3, 24, 32)
    refused = invoke("phase", out / "measurement" / "a.npy", "--sampler", "dpir", "--out", tmp_path / "x", *fast(tiny_prior))
    assert refused.exit_code == 1 and "dpir needs" in refused.output and "use one of: dps, reddiff, daps" in refused.output
    np.save(tmp_path / "flat.npy", np.ones(10))
    bad = invoke("phase", tmp_path / "flat.npy", "--out", tmp_path / "y", *fast(tiny_prior))
    assert "Fourier magnitudes must be a real" in bad.output and "Traceback" not in bad.output
    np.save(tmp_path / "odd.npy", np.ones((1, 35, 35), dtype=np.float32))  # no side pads to 35 at oversample 2
    odd = invoke("phase", tmp_path / "odd.npy", "--out", tmp_path / "z", *fast(tiny_prior))
    assert "no image side pads to 35 at oversample 2" in odd.output
    zero = invoke("phase", tmp_path / "odd.npy", "--oversample", "0", "--out", tmp_path / "w", *fast(tiny_prior))
    assert zero.exit_code == 1 and "--oversample must be a number > 0" in zero.output


def test_a_jpeg_grid_shows_the_decoded_file(images, tiny_prior, tmp_path):
    """The measurement panel of a JPEG is its coefficients decoded (Operator.picture), not the raw coefficients."""
    from operators.jpeg import JPEG, JPEGTables

    out = tmp_path / "out"
    result = invoke("dejpeg", images / "a.png", "--simulate", "--quality", "10", "--save-grid", "--out", out, *fast(tiny_prior))
    assert result.exit_code == 0, result.output
    x = read_image(images / "a.png").pixels[None]
    op = JPEG(JPEGTables.standard(10, "4:2:0"), tuple(x.shape[1:]))
    assert torch.allclose(op.picture(op.A_exact(x)), op.pinv(op.A_exact(x)))
    assert (out / "grid" / "a.png").is_file()
