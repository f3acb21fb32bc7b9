"""Image I/O round trips and metrics against scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from restore.errors import RestoreError
from restore.io import (image_from_array, list_images, make_grid, read_image, read_sinogram, save_array, to_array,
                        write_gif, write_image)
from restore.metrics import compute_metrics, psnr, ssim


@pytest.mark.parametrize("suffix, depth, channels", [(".png", 8, 3), (".png", 16, 1), (".png", 16, 3), (".png", 16, 4), (".tif", 16, 3), (".bmp", 8, 3),
                                                     (".png", 8, 4), (".tiff", 8, 2)])
def test_write_read_round_trip_is_exact_at_the_file_bit_depth(tmp_path, suffix, depth, channels):
    gen = np.random.default_rng(0)
    peak = 255 if depth == 8 else 65535
    array = gen.integers(0, peak + 1, size=(9, 13, channels)).astype(np.uint8 if depth == 8 else np.uint16)
    if channels == 1:
        array = array[:, :, 0]
    given = image_from_array(array)
    path = tmp_path / f"a{suffix}"
    write_image(path, given.pixels, alpha=given.alpha, bit_depth=depth)
    image = read_image(path)
    color = 1 if channels in (1, 2) else 3
    assert image.pixels.shape == (color, 9, 13) and image.bit_depth == depth
    assert (image.alpha is not None) == (channels in (2, 4))
    assert np.array_equal(to_array(image.pixels, image.alpha, image.bit_depth), array)
    if suffix == ".png" and depth == 8:  # files other programs wrote read the same
        import imageio.v3 as iio

        assert np.array_equal(iio.imread(path), array)


def test_jpeg_reads_and_writes_8_bit(tmp_path):
    x = torch.rand(3, 16, 16) * 2 - 1
    write_image(tmp_path / "a.jpg", x)
    assert read_image(tmp_path / "a.jpg").pixels.shape == (3, 16, 16)


def test_bad_files_raise_one_line_errors(tmp_path):
    with pytest.raises(RestoreError, match="file not found"):
        read_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(RestoreError, match="cannot read image") as info:
        read_image(bad)
    assert "\n" not in str(info.value)
    x = torch.zeros(3, 32, 32)
    write_image(tmp_path / "ok.png", x)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    with pytest.raises(RestoreError, match="cannot read image"):
        read_image(truncated)


def test_list_images_file_folder_glob(tmp_path):
    for name in ["b.png", "a.jpg", "c.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.png"]
    assert [p.name for p in list_images(str(tmp_path / "*.png"))] == ["b.png"]
    assert list_images(tmp_path / "a.jpg") == [tmp_path / "a.jpg"]
    with pytest.raises(RestoreError, match="file not found"):
        list_images(tmp_path / "nope.png")
    with pytest.raises(RestoreError, match="no images match"):
        list_images(str(tmp_path / "*.tif"))
    assert [p.name for p in list_images(tmp_path, suffixes=(".txt",))] == ["c.txt"]


def test_sinogram_arrays(tmp_path):
    save_array(tmp_path / "s.npy", np.ones((6, 11), np.float32))
    assert read_sinogram(tmp_path / "s.npy").shape == (1, 6, 11)
    save_array(tmp_path / "k.npy", np.ones((6, 11), np.complex64))
    with pytest.raises(RestoreError, match="must be a real 2-D array"):
        read_sinogram(tmp_path / "k.npy")


def test_grid_and_gif(tmp_path):
    grid = make_grid([torch.zeros(3, 8, 8), torch.zeros(1, 4, 4), torch.zeros(2, 8, 8, dtype=torch.complex64)[:1]])
    assert grid.shape == (3, 8, 8 * 3 + 2 * 4)
    write_gif(tmp_path / "p.gif", [torch.rand(3, 8, 8) * 2 - 1 for _ in range(3)])
    import imageio.v3 as iio

    assert iio.imread(tmp_path / "p.gif").shape[0] == 3


def test_psnr_and_ssim_agree_with_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    gen = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 3, 32, 40, generator=gen) * 2 - 1
    x = (ref + 0.1 * torch.randn(ref.shape, generator=gen)).clamp(-1, 1)
    for b in range(2):
        a, r = ((x[b] + 1) / 2).permute(1, 2, 0).double().numpy(), ((ref[b] + 1) / 2).permute(1, 2, 0).double().numpy()
        assert psnr(x, ref)[b].item() == pytest.approx(peak_signal_noise_ratio(r, a, data_range=1.0), abs=1e-6)
        assert ssim(x, ref)[b].item() == pytest.approx(structural_similarity(r, a, data_range=1.0, channel_axis=2), abs=1e-9)
    values = compute_metrics(x, ref)
    assert values["psnr"] == pytest.approx(psnr(x, ref).mean().item()) and np.isnan(values["lpips"])
    with pytest.raises(RestoreError, match="differ in size"):
        psnr(x, ref[..., :30])
