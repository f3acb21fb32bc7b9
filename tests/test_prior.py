"""The prior: ADM UNet layout against the public checkpoints, weights I/O, the denoiser wrapper, the registry."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as imageio
import numpy as np
import pytest
import torch

from restore.errors import RestoreError
from restore.prior import registry
from restore.prior.denoiser import UNetDenoiser
from restore.prior.gaussian import GaussianDenoiser
from restore.prior.schedule import make_betas, respaced_timesteps, strided_timesteps, timestep_for_sigma
from restore.prior.unet import UNetConfig, UNetModel
from restore.prior.weights import load_network, save_prior

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
TINY = UNetConfig(image_size=32, num_channels=32, channel_mult="1,2", num_res_blocks=1, attention_resolutions="16",
                  num_head_channels=16, resblock_updown=True, learn_sigma=True)


@pytest.mark.parametrize("fixture, name", [("adm_ffhq256_keys.json", "ffhq-256"),
                                           ("adm_imagenet256_uncond_keys.json", "imagenet-256")])
def test_public_checkpoint_layouts_match_name_for_name_and_shape_for_shape(fixture, name):
    path = FIXTURES / fixture
    if not path.is_file():
        pytest.skip("../shared/fixtures not available")
    expected = json.loads(path.read_text())
    config = UNetConfig.from_dict(expected["config"])
    assert config == UNetConfig.from_dict(registry.PRIORS[name].unet), "registry config differs from the fixture's"
    with torch.device("meta"):
        net = UNetModel(config)
    got = {k: list(v.shape) for k, v in net.state_dict().items()}
    want = expected.get("state_dict") or expected.get("keys")
    want = {k: list(v) for k, v in (want.items() if isinstance(want, dict) else want)}
    assert list(got) == list(want), "parameter names or order differ"
    assert got == want
    assert sum(v.numel() for v in net.parameters()) == expected["params"]


def tiny_net(seed: int = 0) -> UNetModel:
    torch.manual_seed(seed)
    net = UNetModel(TINY)
    with torch.no_grad():  # zero-initialised output layers would make every test trivially pass
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return net.eval()


def test_save_load_round_trip_keeps_outputs(tmp_path):
    net = tiny_net()
    path = tmp_path / "tiny.safetensors"
    save_prior(net, path, schedule="cosine", training={"steps": 3})
    loaded, info = load_network(path)
    assert info["schedule"] == "cosine" and info["training"]["steps"] == 3
    assert json.loads(path.with_suffix(".json").read_text())["unet"] == TINY.to_dict()
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10.0, 500.0])
    assert torch.equal(net(x, t), loaded(x, t))
    denoiser = registry.load_prior(str(path))
    assert denoiser.num_timesteps == 1000 and torch.allclose(denoiser.betas, make_betas("cosine"))


def test_guided_diffusion_pt_with_config_beside_loads(tmp_path):
    net = tiny_net()
    path = tmp_path / "model.pt"
    torch.save(net.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps(TINY.to_dict()))  # create_model's keyword arguments
    loaded, _ = load_network(path)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(loaded(x, torch.tensor([3.0])), net(x, torch.tensor([3.0])))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_shape", "no_config"])
def test_bad_weight_files_give_one_clear_error(tmp_path, damage):
    net = tiny_net()
    path = tmp_path / "w.safetensors"
    save_prior(net, path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "garbage":
        path = tmp_path / "w.pt"
        path.write_bytes(b"not a checkpoint at all")
        path.with_suffix(".json").write_text(json.dumps(TINY.to_dict()))
    elif damage == "wrong_shape":
        other = UNetModel(UNetConfig(**{**TINY.to_dict(), "num_channels": 64}))
        path = tmp_path / "o.pt"
        torch.save(other.state_dict(), path)
        path.with_suffix(".json").write_text(json.dumps(TINY.to_dict()))
    else:
        path = tmp_path / "bare.pt"
        torch.save(net.state_dict(), path)
    with pytest.raises(RestoreError) as info:
        registry.load_prior(str(path))
    assert str(path.name) in str(info.value) and "\n" not in str(info.value)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": torch.zeros(1), "f": print}, path)  # a pickle that references a callable
    path.with_suffix(".json").write_text(json.dumps(TINY.to_dict()))
    with pytest.raises(RestoreError):
        registry.load_prior(str(path))


def test_denoiser_any_size_and_grayscale():
    denoiser = UNetDenoiser(tiny_net(), make_betas("linear"))
    for shape in [(1, 3, 37, 53), (2, 1, 20, 31)]:
        x = torch.randn(shape)
        out = denoiser(x, 100)
        assert out.shape == x.shape and torch.isfinite(out).all()
    eps, v = denoiser.eps_and_v(torch.randn(1, 1, 16, 16), 5)
    assert eps.shape == v.shape == (1, 1, 16, 16)


def test_padding_does_not_change_multiples_of_the_network_size():
    """An image already a multiple of the size multiple goes through unpadded: equal to the raw network."""
    net = tiny_net()
    denoiser = UNetDenoiser(net, make_betas("linear"), clip_x0=False)
    x, t = torch.randn(1, 3, 32, 32), 50
    ab = denoiser.alpha_bar(t, x)
    raw_eps = net(x, torch.tensor([float(t)]))[:, :3]
    assert torch.allclose(denoiser(x, t), (x - (1 - ab).sqrt() * raw_eps) / ab.sqrt(), atol=1e-6)


def test_x0_is_clipped_to_the_image_range_and_eps_follows():
    net = tiny_net()
    clipped, raw = UNetDenoiser(net, make_betas("linear")), UNetDenoiser(net, make_betas("linear"), clip_x0=False)
    x_t, t = 3 * torch.randn(2, 3, 32, 32), 900
    x0, x0_raw = clipped(x_t, t), raw(x_t, t)
    assert x0.abs().max() <= 1 + 1e-3 and x0_raw.abs().max() > 1.5  # the raw estimate leaves the range at high noise
    inside = x0_raw.abs() < 1
    assert torch.allclose(x0[inside], x0_raw[inside], atol=1e-3)
    assert torch.allclose(x0, x0_raw.clamp(-1, 1), atol=1e-3)
    ab = clipped.alpha_bar(t, x_t)
    assert torch.allclose(clipped.eps(x_t, t), (x_t - ab.sqrt() * x0) / (1 - ab).sqrt(), atol=1e-4)


def test_bf16_wrapper_stays_close_to_fp32():
    net = tiny_net()
    x = torch.randn(1, 3, 32, 32)
    full = UNetDenoiser(net, make_betas("linear"))(x, 200)
    half = UNetDenoiser(net, make_betas("linear"), precision="bf16")(x, 200)
    assert half.dtype == torch.float32
    assert (half - full).abs().max() < 0.05 * full.abs().max()


def test_gaussian_denoiser_is_the_posterior_mean():
    """For x0 ~ N(μ, Σ), E[x0 | x_t] by Monte Carlo (importance weights) matches the closed form."""
    gen = torch.Generator().manual_seed(0)
    n = 4
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    cov = a @ a.T / n + 0.1 * torch.eye(n, dtype=torch.float64)
    mean = torch.randn(n, generator=gen, dtype=torch.float64)
    den = GaussianDenoiser(mean, cov, (1, 2, 2))
    t = 300
    ab = float(den.alpha_bar(t, torch.zeros(1)))
    samples = mean + torch.randn(400_000, n, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    x_t = (ab**0.5 * samples[0] + (1 - ab) ** 0.5 * torch.randn(n, generator=gen, dtype=torch.float64))
    log_w = -((x_t - ab**0.5 * samples) ** 2).sum(1) / (2 * (1 - ab))
    w = torch.softmax(log_w, 0)
    mc = (w[:, None] * samples).sum(0)
    exact = den(x_t.reshape(1, 1, 2, 2), t).reshape(-1)
    assert torch.allclose(mc, exact, atol=0.03), (mc, exact)
    # Tweedie: score = (sqrt(ᾱ) x̂0 - x_t) / (1 - ᾱ)
    score = den.score(x_t.reshape(1, 1, 2, 2), t).reshape(-1)
    assert torch.allclose(score, (ab**0.5 * exact - x_t) / (1 - ab), atol=1e-8)


def test_schedule_helpers():
    betas = make_betas("linear")
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02) and len(betas) == 1000
    steps = respaced_timesteps(1000, 20)
    assert len(steps) == 20 and steps[0] == 999 and (steps[:-1] > steps[1:]).all()
    for total, count in ((1000, 20), (1000, 7), (1000, 1000), (171, 40)):  # the official range(0, T, T // steps)
        strided = strided_timesteps(total, count)
        assert strided.tolist() == list(range(0, total, total // count))[:count][::-1]
    assert strided_timesteps(1000, 20)[0] == 950 and strided_timesteps(1000, 1000).equal(respaced_timesteps(1000, 1000))
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    t = int(timestep_for_sigma(alphas_cumprod, 0.2))
    sigma = ((1 - alphas_cumprod[t]) / alphas_cumprod[t]).sqrt()
    assert abs(float(sigma) - 0.2) < 0.01


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_timestep_for_sigma_inverts_the_schedule_on_the_schedules_device(device):
    alphas_cumprod = torch.cumprod(1 - make_betas("linear"), 0).to(device)
    t = torch.tensor([0.0, 57.0, 400.0, 999.0], dtype=torch.float64, device=device)
    sigma = ((1 - alphas_cumprod[t.long()].double()) / alphas_cumprod[t.long()].double()).sqrt()
    found = timestep_for_sigma(alphas_cumprod, sigma)
    assert found.device == alphas_cumprod.device
    assert torch.allclose(found, t, atol=1e-6)
    assert float(timestep_for_sigma(alphas_cumprod, 0.2)) == pytest.approx(57.5, abs=1.0)  # a plain float on the device too


def test_registry_names_and_offline_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTORE_CACHE", str(tmp_path))
    assert registry.cache_dir() == tmp_path
    assert {"default", "ffhq-256", "imagenet-256"} <= set(registry.PRIORS)
    with pytest.raises(RestoreError, match="neither a known name"):
        registry.load_prior("no-such-prior")
    # ffhq-256 is offered only on a web page: the error says where to put the file
    with pytest.raises(RestoreError, match=str(tmp_path / "ffhq_10m.pt").replace(".", r"\.")):
        registry.load_prior("ffhq-256")
    # a direct download that cannot connect names the file, the URL and the place
    entry = registry.PriorEntry("test", "x", "w.pt", url="http://127.0.0.1:9/w.pt")
    with pytest.raises(RestoreError) as info:
        registry.download(entry)
    assert "w.pt" in str(info.value) and "http://127.0.0.1:9/w.pt" in str(info.value) and str(tmp_path) in str(info.value)


def test_download_resumes_and_verifies(tmp_path, monkeypatch):
    """A local HTTP server with Range support: a partial file is completed, not restarted."""
    import hashlib
    import http.server
    import threading

    payload = bytes(range(256)) * 400
    served_ranges = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            start = 0
            if "Range" in self.headers:
                start = int(self.headers["Range"].split("=")[1].split("-")[0])
                self.send_response(206)
            else:
                self.send_response(200)
            served_ranges.append(start)
            self.send_header("Content-Length", str(len(payload) - start))
            self.end_headers()
            self.wfile.write(payload[start:])

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("RESTORE_CACHE", str(tmp_path))
        url = f"http://127.0.0.1:{server.server_port}/w.pt"
        digest = hashlib.sha256(payload).hexdigest()
        entry = registry.PriorEntry("t", "x", "w.pt", url=url, size=len(payload), sha256=digest)
        (tmp_path / "w.pt.part").write_bytes(payload[:5000])
        path = registry.download(entry)
        assert served_ranges == [5000] and path.read_bytes() == payload
        assert registry.verify(entry) == "ok"
        path.write_bytes(payload[:-1] + b"x")
        assert registry.verify(entry).startswith("checksum mismatch")
        bad = registry.PriorEntry("b", "x", "b.pt", url=url, sha256="0" * 64)
        with pytest.raises(RestoreError, match="checksum"):
            registry.download(bad)
        assert not (tmp_path / "b.pt").exists()
    finally:
        server.shutdown()


class _GrayGaussianRGBNet(torch.nn.Module):
    """ε-network of the exact RGB denoiser for gray images (g, g, g), g ~ N(0, s²) per pixel."""

    def __init__(self, schedule: UNetDenoiser, s: float) -> None:
        super().__init__()
        self.schedule, self.s = schedule, s
        self.config = UNetConfig(channel_mult="1", learn_sigma=False)

    def forward(self, z, timesteps):
        ab = self.schedule.alpha_bar(timesteps.double(), z.double()).to(z.dtype)
        lum = z.mean(dim=1, keepdim=True)  # the luminance coordinate (per channel)
        # E[g | lum] for lum = sqrt(ab) g + noise of variance (1 - ab) / 3
        g = ab.sqrt() * self.s**2 * lum / (ab * self.s**2 + (1 - ab) / 3)
        return (z - ab.sqrt() * g) / (1 - ab).sqrt()


def test_grayscale_through_the_rgb_prior_is_the_exact_gray_posterior_mean():
    """One noisy gray channel counts as three channels at 3× the variance: exact for a gray Gaussian prior."""
    schedule = UNetDenoiser(tiny_net(), make_betas("linear"))
    s = 0.5
    denoiser = UNetDenoiser(_GrayGaussianRGBNet(schedule, s), make_betas("linear"), channels_last=False, clip_x0=False)
    x_t = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    for t in (30.0, 400.0):
        ab = float(denoiser.alpha_bar(t, x_t).reshape(-1)[0])
        exact = ab**0.5 * s**2 * x_t / (ab * s**2 + 1 - ab)
        assert torch.allclose(denoiser(x_t, t), exact, atol=1e-6)
    assert torch.equal(denoiser(x_t, 30.0)[1:], denoiser(x_t[1:], 30.0))  # batch = one by one


def test_learning_rate_warms_up_then_anneals_to_zero():
    from restore.prior.train import TrainConfig, learning_rate_scale

    constant = TrainConfig(warmup_steps=10)
    assert learning_rate_scale(constant, step=5000, optimizer_steps=4) == pytest.approx(0.5)
    assert learning_rate_scale(constant, step=5000, optimizer_steps=100) == 1.0
    annealed = TrainConfig(warmup_steps=10, anneal_start=100, anneal_end=200)
    scales = [learning_rate_scale(annealed, step, optimizer_steps=1000) for step in (100, 150, 200, 300)]
    assert scales == pytest.approx([1.0, 0.5, 0.0, 0.0], abs=1e-12)
    by_time = [learning_rate_scale(constant, 0, 1000, time_progress=p) for p in (0.0, 0.5, 1.0, 1.2)]
    assert by_time == pytest.approx([1.0, 0.5, 0.0, 0.0], abs=1e-12)


@pytest.mark.parametrize("legacy_order", [True, False])
def test_attention_block_is_softmax_attention_over_positions(legacy_order):
    """The fused-attention block against the textbook formula, in both qkv channel layouts."""
    from restore.prior.unet import AttentionBlock

    torch.manual_seed(0)
    block = AttentionBlock(64, num_heads=4, num_head_channels=-1, legacy_order=legacy_order).double()
    torch.nn.init.normal_(block.proj_out.weight, std=0.1)
    x = torch.randn(2, 64, 5, 3, dtype=torch.float64)
    qkv = block.qkv(block.norm(x.reshape(2, 64, -1)))  # (b, 3c, L)
    heads, ch = 4, 16
    if legacy_order:
        q, k, v = qkv.reshape(2, heads, 3 * ch, -1).split(ch, dim=2)
    else:
        q, k, v = (part.reshape(2, heads, ch, -1) for part in qkv.chunk(3, dim=1))
    weights = torch.softmax(torch.einsum("bhcs,bhct->bhst", q, k) / ch**0.5, dim=-1)
    attended = torch.einsum("bhst,bhct->bhcs", weights, v).reshape(2, 64, -1)
    expected = x + block.proj_out(attended).reshape(x.shape)
    assert torch.allclose(block(x), expected, atol=1e-10)


def test_auto_precision_is_bf16_only_where_it_is_native(monkeypatch):
    from restore import api

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert api.resolve_precision("auto", cuda) == "bf16"
    monkeypatch.setattr(api, "cpu_has_native_bf16", lambda: True)
    assert api.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(api, "cpu_has_native_bf16", lambda: False)
    assert api.resolve_precision("auto", cpu) == "fp32"
    assert api.resolve_precision("fp32", cuda) == "fp32"
    with pytest.raises(RestoreError, match="unknown precision"):
        api.resolve_precision("fp8", cpu)


@pytest.mark.slow
def test_compiled_network_computes_the_same_denoiser(one_thread):
    """The torch.compile path (CUDA graphs on a GPU) checked for numerics on CPU (about a minute to compile)."""
    from restore.prior.denoiser import UNetDenoiser

    torch.manual_seed(0)
    net = UNetModel(TINY)
    eager = UNetDenoiser(net, make_betas("linear"))
    compiled = UNetDenoiser(net, make_betas("linear"), compile_mode="default")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(eager(x, 300.0), compiled(x, 300.0), atol=1e-5)
    assert compiled.net is net  # weights and config stay reachable as before


@pytest.mark.slow
def test_compiled_training_takes_the_steps_eager_training_takes(tmp_path, one_thread):
    """``restore train --compile`` (for GPUs) checked for numerics on CPU: same losses and weights as eager."""
    from restore.prior.train import TrainConfig, train

    image = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    imageio.imwrite(image, rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    config = TrainConfig(unet={**TINY.to_dict(), "image_size": 16, "attention_resolutions": ""}, crop=16,
                         batch_size=2, precision="fp32")
    runs = [train([image], tmp_path / f"{flag}.safetensors", config=config, steps=3, compile_network=flag)
            for flag in (False, True)]
    eager, compiled = runs
    assert compiled.step == eager.step == 3 and len(compiled.losses) == 3
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-4)
    for a, b in zip(eager.ema.parameters(), compiled.ema.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_divergence_is_reported_at_the_step_it_happened():
    """Losses are read from the device in batches; a non-finite one still names its own step."""
    from restore.prior.train import record_losses

    state = SimpleNamespace(step=45, losses=[0.5])
    seen = []
    record_losses(state, [torch.tensor(0.4), torch.tensor(0.3)], lambda step, loss: seen.append((step, loss)))
    assert state.losses == pytest.approx([0.5, 0.4, 0.3]) and seen == [(45, pytest.approx(0.3))]
    pending = [torch.tensor(0.2), torch.tensor(0.1), torch.tensor(float("nan")), torch.tensor(0.1)]
    with pytest.raises(RestoreError, match="diverged at step 43"):
        record_losses(state, pending, None)


def test_min_snr_weights_cap_the_signal_to_noise_ratio_at_five():
    from restore.prior.train import loss_weights

    alpha_bar = torch.tensor([0.999, 5 / 6, 0.5, 0.01], dtype=torch.float64)  # SNR 999, 5, 1, 1/99
    assert torch.equal(loss_weights("eps", alpha_bar), torch.ones(4, dtype=torch.float64))
    expected = torch.tensor([5 / 999, 1.0, 1.0, 1.0], dtype=torch.float64)
    assert torch.allclose(loss_weights("min-snr", alpha_bar), expected, rtol=1e-9)
    with pytest.raises(RestoreError, match="min-snr"):
        loss_weights("snr", alpha_bar)


def test_random_crops_are_dihedral_views_of_real_image_regions():
    """Every crop is one of the 8 symmetries of a window inside one image (never the padding), and all 8 occur."""
    from restore.prior.train import CropSource, random_crops

    # pixel values 1..255 that say where they came from; portrait and landscape sizes mixed
    shapes = [(3, 9, 6), (3, 6, 10), (3, 7, 7)]
    images = [(torch.arange(1, 1 + 3 * h * w) % 255 + 1).to(torch.uint8).view(3, h, w).add(40 * k % 200)
              for k, (_, h, w) in enumerate(shapes)]
    source = CropSource.from_images(images)
    crops = random_crops(source, 200, 4, torch.Generator().manual_seed(0))
    assert crops.shape == (200, 3, 4, 4)
    raw = ((crops + 1) * 127.5).round().to(torch.uint8)
    seen = set()
    for crop in raw:
        matches = set()
        for img in images:
            for top in range(img.shape[1] - 3):
                for left in range(img.shape[2] - 3):
                    window = img[:, top : top + 4, left : left + 4]
                    for s, view in enumerate(dihedral_views(window)):
                        if torch.equal(view, crop):
                            matches.add(s)
        assert matches, "a crop that is no window of any image"
        seen |= matches
    assert seen == set(range(8))


def dihedral_views(x):
    views = []
    for k in range(4):
        turned = torch.rot90(x, k, dims=(1, 2))
        views += [turned, turned.flip(-1)]
    return views


def test_training_scales_add_box_averaged_copies_of_each_photograph(tmp_path):
    """``--scales 1,2,4``: each photograph also comes shrunk by 2 and 4 (box means of its pixels); too small ones go."""
    from restore.prior.train import TrainConfig, check_request, load_images_uint8

    pixels = np.random.default_rng(1).integers(0, 256, (40, 24, 3), dtype=np.uint8)
    imageio.imwrite(tmp_path / "photo.png", pixels)
    images = load_images_uint8([tmp_path / "photo.png"], min_side=8, scales=(1, 2, 4))
    assert [tuple(i.shape) for i in images] == [(3, 40, 24), (3, 20, 12)]  # ×4 is 6 px wide: left out
    box = pixels.reshape(20, 2, 12, 2, 3).astype(float).mean(axis=(1, 3)).transpose(2, 0, 1)
    assert np.abs(images[1].numpy().astype(float) - box).max() <= 0.5 + 1e-6
    assert TrainConfig.from_dict({"scales": [1, 2]}).scales == (1, 2)
    with pytest.raises(RestoreError, match="--scales"):
        check_request(TrainConfig(scales=(0, 2)), None, False, steps=1)
