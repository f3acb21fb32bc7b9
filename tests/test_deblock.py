"""The JPEG deblocker (restore.prior.deblocker) and its method of the dejpeg task (restore.samplers.deblock):
its contract on JPEG operators, in place of the Gaussian-toy contract the samplers of any measurement keep."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from operators.jpeg import JPEG, JPEGTables
from operators.registry import build
from restore.errors import RestoreError
from restore.io import read_image, to_array
from restore.metrics import psnr
from restore.plan import Request, make_plan, solve
from restore.prior.deblocker import (SHIPPED_WEIGHTS, DeblockerTrainConfig, deblock, deblocker_loss, draw_tables,
                                     jpeg_pairs, load_deblocker, table_sigma, train_deblocker)
from restore.prior.denoiser import Denoiser
from restore.prior.schedule import linear_betas
from restore.samplers import SAMPLERS
from restore.samplers.deblock import DeblockParams, deblock_jpeg, tile_starts
from restore.samplers.defaults import choose_sampler

pytestmark = pytest.mark.usefixtures("one_thread")


class DecodedAsIs(Denoiser):
    """x̂0 = x_t / sqrt(ᾱ_t): a "deblocker" that hands the decoded file back, so any change is the method's own."""

    def __init__(self) -> None:
        super().__init__(linear_betas())

    def eps(self, x_t, t):
        return torch.zeros_like(x_t)


def photo(height: int = 72, width: int = 88) -> torch.Tensor:
    """An 8-bit crop of a sample photograph, (1, 3, H, W) in [-1, 1]."""
    return read_image("sample_data/images/chelsea.png").pixels[None, :, 40 : 40 + height, 60 : 60 + width]


def test_coarser_tables_mean_a_higher_noise_level():
    sigmas = [float(table_sigma(JPEGTables.standard(q).quant()[None])) for q in (1, 5, 10, 30, 50, 90, 100)]
    assert sigmas == sorted(sigmas, reverse=True) and sigmas[0] == pytest.approx(0.14)  # quality 1: every entry 255
    assert 0 < sigmas[-1] < 0.01  # all-ones tables: almost no artifacts


@pytest.mark.parametrize("ensemble, tile", [(1, 512), (3, 512), (8, 512), (2, 96)])
@pytest.mark.parametrize("size", [(72, 88), (37, 50), (300, 230)])
def test_every_turn_and_tile_is_undone(monkeypatch, ensemble, tile, size):
    """With a network that changes nothing, the method returns the decoded file exactly (up to the timestep's
    interpolation): turns, tiles and their blending, the padding to whole blocks and the crop back all cancel,
    at any size."""
    monkeypatch.setattr("restore.samplers.deblock.load_deblocker", lambda *args: DecodedAsIs())
    x = torch.nn.functional.interpolate(photo(), size=size, mode="bilinear")
    op = JPEG(JPEGTables.standard(20), tuple(x.shape[1:]))
    y = op.A_exact(x)
    out = deblock_jpeg(None, op, y, params=DeblockParams(ensemble=ensemble, tile=tile))
    assert out.shape == x.shape
    torch.testing.assert_close(out, op.pinv(y).clamp(-1, 1), atol=2e-3, rtol=0)


def test_the_shipped_deblocker_beats_the_decoded_file():
    """A photograph the deblocker never saw (the sample cat), saved at quality 10 and 30."""
    x = photo(128, 128)
    for quality, gain in ((10, 0.8), (30, 0.4)):
        op = JPEG(JPEGTables.standard(quality), tuple(x.shape[1:]))
        y = op.A_exact(x)
        decoded = op.pinv(y).clamp(-1, 1)
        restored = deblock_jpeg(None, op, y, params=DeblockParams(ensemble=2))
        assert float(psnr(restored, x) - psnr(decoded, x)) > gain, quality


def test_grayscale_files_come_back_gray_and_better():
    x = photo(64, 64).mean(dim=1, keepdim=True)
    x = ((x + 1) * 127.5).round() / 127.5 - 1
    op = JPEG(JPEGTables.standard(10, gray=True), (1, 64, 64))
    y = op.A_exact(x)
    restored = deblock_jpeg(None, op, y, params=DeblockParams(ensemble=1))
    assert restored.shape == x.shape
    assert float(psnr(restored, x)) > float(psnr(op.pinv(y).clamp(-1, 1), x)) + 0.3


def test_a_batch_of_files_with_their_own_tables_equals_one_by_one():
    x = torch.cat([photo(64, 64), photo(64, 64).flip(-1)])
    ops = [JPEG(JPEGTables.standard(q), (3, 64, 64)) for q in (10, 40)]
    ys = [op.A_exact(x[i : i + 1]) for i, op in enumerate(ops)]
    batch = deblock_jpeg(None, JPEG.stack(ops), torch.cat(ys), params=DeblockParams(ensemble=2))
    single = torch.cat([deblock_jpeg(None, op, y, params=DeblockParams(ensemble=2)) for op, y in zip(ops, ys)])
    torch.testing.assert_close(batch, single, atol=1e-4, rtol=0)


def test_the_callback_sees_the_result_and_the_nfe_counts_the_turns():
    x = photo(32, 32)
    op = JPEG(JPEGTables.standard(50), (3, 32, 32))
    seen = []
    out = deblock_jpeg(None, op, op.A_exact(x), params=DeblockParams(ensemble=4), callback=seen.append)
    assert len(seen) == 1 and torch.equal(seen[0]["x0"], out)
    assert SAMPLERS["deblock"].nfe(1, DeblockParams(ensemble=4)) == 4


@pytest.mark.parametrize("ensemble", [0, 9, 2.5, True])
def test_bad_ensembles_are_refused(ensemble):
    with pytest.raises(RestoreError, match="ensemble in 1..8"):
        DeblockParams(ensemble=ensemble)


@pytest.mark.parametrize("tile", [100, 64, 0, 512.0])
def test_bad_tiles_are_refused(tile):
    with pytest.raises(RestoreError, match="multiple of 16 above 64"):
        DeblockParams(tile=tile)


def test_tiles_cover_the_image_on_the_block_grid_with_overlap():
    for size in (16, 128, 144, 1008, 4000):  # padded sizes: multiples of 16
        starts = tile_starts(size, 128)
        assert starts[0] == 0 and min(starts[-1] + 128, size) == size and all(s % 16 == 0 for s in starts)
        assert all(b - a <= 128 - 32 for a, b in zip(starts, starts[1:]))


def test_tiles_restore_at_least_as_well_as_the_whole_file_at_once():
    """The network was trained on 64-pixel crops: tiles near that size are its home ground (GroupNorm's statistics)."""
    x = torch.nn.functional.interpolate(photo(), size=(384, 384), mode="bilinear")
    x = ((x + 1) * 127.5).round() / 127.5 - 1
    op = JPEG(JPEGTables.standard(15), (3, 384, 384))
    y = op.A_exact(x)
    whole = deblock_jpeg(None, op, y, params=DeblockParams(ensemble=1, tile=384))
    tiles = deblock_jpeg(None, op, y, params=DeblockParams(ensemble=1))
    assert float(psnr(tiles, x)) > float(psnr(whole, x)) - 0.1 > float(psnr(op.pinv(y).clamp(-1, 1), x))


def test_other_measurements_and_posterior_samples_are_refused_naming_what_can():
    with pytest.raises(RestoreError, match="works only on jpeg measurements.*use one of: ddrm"):
        choose_sampler("inpaint", build("random:0.5", (3, 16, 16)), "deblock")
    op = JPEG(JPEGTables.standard(50), (3, 16, 16))
    with pytest.raises(RestoreError, match="one estimate, not posterior samples"):
        make_plan("dejpeg", Request(sampler="deblock", num_samples=2), op)


def test_missing_weights_are_one_clear_line_before_any_work(tmp_path):
    with pytest.raises(RestoreError, match="no weights file .*none.safetensors"):
        load_deblocker("cpu", "fp32", str(tmp_path / "none.safetensors"))
    op = JPEG(JPEGTables.standard(50), (3, 16, 16))
    with pytest.raises(RestoreError, match="no weights file .*none.safetensors"):
        make_plan("dejpeg", Request(sampler="deblock", options=(f"weights={tmp_path / 'none.safetensors'}",)), op)


def test_the_training_loss_is_the_error_of_what_the_method_returns():
    """Training and use compute x̂0 the same way: the loss of a batch is the MSE of ``deblock`` on it."""
    generator = torch.Generator().manual_seed(3)
    crops = photo(64, 64).repeat(4, 1, 1, 1)
    decoded, clean, quant = jpeg_pairs(crops, draw_tables(DeblockerTrainConfig(gray_share=0.0), 4, generator))
    net = load_deblocker("cpu", "fp32", str(SHIPPED_WEIGHTS))
    loss = deblocker_loss(net.net, net.alphas_cumprod, decoded, clean, quant, "fp32")
    mse = float((deblock(net, decoded, quant) - clean).pow(2).mean())
    assert float(loss) == pytest.approx(mse, rel=1e-3)


def test_training_pairs_are_what_pillow_saves():
    """Each training pair is the crop and the file libjpeg writes for it, as restore reads that file."""
    crop = photo(64, 64)
    tables = [JPEGTables.standard(25)]
    decoded, _, _ = jpeg_pairs(crop, tables)
    buffer = io.BytesIO()
    Image.fromarray(to_array(crop[0])).save(buffer, "JPEG", quality=25, subsampling=2)
    pillow = torch.from_numpy(np.array(Image.open(buffer))).permute(2, 0, 1).float() / 127.5 - 1
    assert float((decoded[0] - pillow).abs().max()) <= 3 / 127.5  # libjpeg's integer IDCT and upsampling vs floats


def test_training_writes_weights_the_method_loads_and_resumes(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(to_array(photo(80, 80)[0].roll(9 * i, dims=-1))).save(folder / f"p{i}.png")
    out = tmp_path / "deblocker.safetensors"
    first = train_deblocker([folder], out, init_from=SHIPPED_WEIGHTS, minutes=0.02,
                            config=DeblockerTrainConfig(batch_size=2))
    assert first >= 1 and out.is_file() and out.with_suffix(".ckpt").is_file()
    second = train_deblocker([folder], out, init_from=SHIPPED_WEIGHTS, minutes=0.02,
                             config=DeblockerTrainConfig(batch_size=2))
    assert second > first  # continued from the checkpoint, not restarted
    op = JPEG(JPEGTables.standard(30), (3, 32, 32))
    x = photo(32, 32)
    plan = make_plan("dejpeg", Request(sampler="deblock", options=(f"weights={out}", "ensemble=1")), op)
    result = solve(plan, None, op, op.A_exact(x), noise=None)
    assert result.mean.shape == x.shape and torch.isfinite(result.mean).all()


def test_train_deblocker_refuses_a_prior_it_cannot_fine_tune_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(app, ["train-deblocker", "sample_data/images", "--out", str(tmp_path / "d.safetensors"),
                                      "--minutes", "1", "--init-from", "patch-gmm", "--quiet"])
    assert result.exit_code == 1 and "is not a UNet prior" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "d.safetensors").exists()
