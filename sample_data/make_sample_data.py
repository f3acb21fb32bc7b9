"""Regenerate sample_data/: five public-domain test images shipped with scikit-image, inpainting masks
(white = missing) matched to them by file name, two blur kernels, and degraded measurements of the
images for every command, made with restore's own operators (the README's examples run on them):

    python sample_data/make_sample_data.py

    images/    the photographs (longer side 256 pixels, odd sizes on purpose; ``camera`` is grayscale)
    masks/     free-form brush strokes plus a box, white = missing (the seeded ``strokes`` and ``box`` operators)
    kernels/   Levin et al.'s camera-shake kernel 3 (.npy) and a 15×15 Gaussian (.png)
    blurry/    astronaut, chelsea and coffee blurred by kernels/levin_k3.npy (reflecting borders), noise σ 0.01
    lowres/    astronaut and rocket downsampled 4× (bicubic), noise σ 0.01
    noisy/     astronaut with Gaussian noise σ 0.05
    mri/       camera's k-space (centred, orthonormal, of the [0, 1] image), 4× equispaced lines, noise σ 0.01
    ct/        camera's 60-angle parallel-beam sinogram (of the [0, 1] image), noise 0.5 % of its maximum

Noise is drawn from fixed seeds, so the same files come out every time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from skimage import data
from skimage.transform import resize

import operators
from restore.io import save_array, write_image
from restore.noise import GaussianNoise, simulate

HERE = Path(__file__).parent
IMAGES = ["astronaut", "camera", "chelsea", "coffee", "rocket"]
LONG_SIDE = 256


def load(name: str) -> torch.Tensor:
    """(C, H, W) in [-1, 1], the longer side scaled to LONG_SIDE with antialiasing."""
    image = getattr(data, name)().astype(np.float64) / 255.0
    scale = LONG_SIDE / max(image.shape[:2])
    shape = (round(image.shape[0] * scale), round(image.shape[1] * scale))
    image = resize(image, shape, anti_aliasing=True)
    if image.ndim == 2:
        image = image[:, :, None]
    return torch.from_numpy(image.transpose(2, 0, 1).copy()).float() * 2 - 1


def mask_for(shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """(1, H, W) with 1 = missing: brush strokes from the ``strokes`` operator plus a box from ``box``."""
    missing = torch.zeros(1, *shape[1:])
    for spec in (f"strokes:seed={seed}", f"box:{min(shape[1:]) // 4}:seed={seed}"):
        kept = operators.build(spec, (1, *shape[1:])).A(torch.ones(1, 1, *shape[1:]))[0]
        missing = torch.maximum(missing, 1 - kept)
    return missing


def main() -> None:
    for index, name in enumerate(IMAGES):
        image = load(name)
        write_image(HERE / "images" / f"{name}.png", image)
        write_image(HERE / "masks" / f"{name}.png", mask_for(tuple(image.shape), index) * 2 - 1)
    (HERE / "kernels").mkdir(exist_ok=True)
    kernels = np.load(Path(operators.__file__).parent / "data" / "levin09_motion_kernels.npz")
    np.save(HERE / "kernels" / "levin_k3.npy", kernels["k3"])
    x = np.arange(15) - 7
    gaussian = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 2.0**2))
    write_image(HERE / "kernels" / "gaussian_15_2.png", torch.from_numpy(gaussian / gaussian.max())[None].float() * 2 - 1)
    write_measurements()
    print(f"wrote {len(IMAGES)} images, masks, 2 kernels and measurements for every command under {HERE}")


def write_measurements() -> None:
    """Degraded versions of the images, the inputs of the README's examples (σ on the [0, 1] scale)."""
    levin = torch.from_numpy(np.load(HERE / "kernels" / "levin_k3.npy"))
    for index, name in enumerate(["astronaut", "chelsea", "coffee"]):
        x = load(name)[None]
        blur = operators.blur.make_blur(levin, tuple(x.shape[1:]), "reflect")
        write_image(HERE / "blurry" / f"{name}.png", simulate(x, blur, GaussianNoise(2 * 0.01), [index])[0])
    for index, name in enumerate(["astronaut", "rocket"]):
        x = load(name)[None]
        x = x[..., : x.shape[-2] // 4 * 4, : x.shape[-1] // 4 * 4]  # whole 4×4 blocks
        down = operators.build("bicubic:4", tuple(x.shape[1:]))
        write_image(HERE / "lowres" / f"{name}.png", simulate(x, down, GaussianNoise(2 * 0.01), [index])[0])
    x = load("astronaut")[None]
    write_image(HERE / "noisy" / "astronaut.png", simulate(x, operators.build("identity", tuple(x.shape[1:])), GaussianNoise(2 * 0.05), [0])[0])
    u = (load("camera")[None].double() + 1) / 2  # intensities in [0, 1], the convention of real k-space and sinograms
    mri = operators.build("mri:equispaced:4:center=20", tuple(u.shape[1:])).double()
    kspace = simulate(u, mri, GaussianNoise(0.01), [0])[0, 0]
    save_array(HERE / "mri" / "camera.npy", (kspace * mri.mask[0, 0]).numpy().astype(np.complex64))  # zero where not sampled
    ct = operators.build("ct:60", tuple(u.shape[1:])).double()
    clean = ct.A(u)
    sinogram = simulate(u, ct, GaussianNoise(0.005 * float(clean.abs().max())), [0])[0, 0]
    save_array(HERE / "ct" / "camera.npy", sinogram.numpy().astype(np.float32))


if __name__ == "__main__":
    main()
