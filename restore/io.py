"""Image and measurement I/O: the only place where pixel ranges are converted.

Inside the library images are float tensors (C, H, W) in [-1, 1]; on disk they are 8- or 16-bit
PNG, JPEG, TIFF or BMP files in [0, 255] or [0, 65535]. Grayscale images have C = 1, colour C = 3;
an alpha channel is split off on reading (kept in [0, 1]) and put back on writing, so it passes
through a restoration untouched. Every write is atomic: a temporary file in the target folder,
then a rename, so an interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import glob
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor

from restore.errors import RestoreError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class Image:
    """A decoded image: pixels (C, H, W) in [-1, 1], optional alpha (1, H, W) in [0, 1], and the file's bit depth."""

    pixels: Tensor
    alpha: Tensor | None = None
    bit_depth: int = 8


def list_images(pattern: str | Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The input files named by a file, a folder (its files with ``suffixes``, sorted) or a glob (sorted)."""
    path = Path(pattern)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes and p.is_file())
        if not files:
            raise RestoreError(f"no input files ({', '.join(suffixes)}) in folder {path}")
        return files
    if path.is_file():
        return [path]
    matches = sorted(Path(p) for p in glob.glob(str(pattern)) if Path(p).suffix.lower() in suffixes)
    if matches:
        return matches
    if glob.has_magic(str(pattern)):
        raise RestoreError(f"no images match {pattern}" if suffixes == IMAGE_SUFFIXES else f"no files match {pattern}")
    raise RestoreError(f"file not found: {path}")


def read_image(path: str | Path) -> Image:
    """Decode an image file; unreadable, truncated or unsupported files raise one clear RestoreError.

    CMYK files (print JPEGs and TIFFs) are converted to RGB by Pillow, which knows their inverted forms;
    read as plain arrays they would pass for RGB plus alpha.
    """
    path = Path(path)
    if path.is_dir():
        raise RestoreError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise RestoreError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise RestoreError(f"cannot read image {path}: the file is empty")
    try:
        array = _read_png16(path) if _is_png16(path) else _read_pixels(path)
    except RestoreError:
        raise
    except Exception as err:  # imageio raises many exception types for bad files
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "Could not find a backend" in message or "cannot identify image file" in message:
            message = "not an image file that can be decoded (PNG, JPEG, TIFF, BMP, ...), or a damaged one"
        raise RestoreError(f"cannot read image {path}: {message}") from None
    return image_from_array(array, str(path))


def _read_pixels(path: Path) -> np.ndarray:
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as image:
            if image.mode == "CMYK":
                return np.asarray(image.convert("RGB"))
    except PILImage.UnidentifiedImageError:
        pass  # not a format Pillow knows: imageio's other plugins may
    return np.asarray(iio.imread(path))


def _is_png16(path: Path) -> bool:
    """A 16-bit PNG (bit depth byte of the IHDR chunk): Pillow would read its colour forms as 8-bit."""
    with open(path, "rb") as handle:
        header = handle.read(25)
    return header[:8] == b"\x89PNG\r\n\x1a\n" and len(header) == 25 and header[24] == 16


def _read_png16(path: Path) -> np.ndarray:
    import png  # pypng: reads and writes every PNG form at full bit depth

    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    return np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, info["planes"])


def image_from_array(array: np.ndarray, name: str = "array") -> Image:
    """Convert an (H, W), (H, W, C) uint8/uint16/float array to an :class:`Image`."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        raise RestoreError(f"{name}: multi-page or channel-first images are not supported (shape {array.shape})")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise RestoreError(f"{name}: unsupported image shape {array.shape}")
    if array.dtype == np.uint8:
        scaled, depth = array.astype(np.float32) / 255.0, 8
    elif array.dtype == np.uint16:
        scaled, depth = array.astype(np.float32) / 65535.0, 16
    elif array.dtype == bool:
        scaled, depth = array.astype(np.float32), 8
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise RestoreError(f"{name}: the image holds NaN or infinite pixel values")
        scaled, depth = np.clip(array.astype(np.float32), 0.0, 1.0), 16
    else:
        raise RestoreError(f"{name}: unsupported pixel type {array.dtype}")
    channels = scaled.shape[2]
    alpha = None
    if channels in (2, 4):  # gray + alpha or RGB + alpha
        alpha = torch.from_numpy(np.ascontiguousarray(scaled[:, :, -1]))[None]
        scaled = scaled[:, :, :-1]
    pixels = torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1))) * 2 - 1
    return Image(pixels, alpha, depth)


def to_array(pixels: Tensor, alpha: Tensor | None = None, bit_depth: int = 8) -> np.ndarray:
    """(C, H, W) in [-1, 1] (+ alpha in [0, 1]) → an (H, W[, C]) uint8/uint16 array, rounded and clipped."""
    if bit_depth not in (8, 16):
        raise RestoreError(f"bit depth must be 8 or 16, got {bit_depth}")
    unit = ((pixels.detach().float().cpu() + 1) / 2).clamp(0, 1)
    if alpha is not None:
        unit = torch.cat([unit, alpha.detach().float().cpu().reshape(1, *unit.shape[-2:]).clamp(0, 1)])
    peak, dtype = (255, np.uint8) if bit_depth == 8 else (65535, np.uint16)
    array = (unit.numpy().transpose(1, 2, 0) * peak).round().astype(dtype)
    return array[:, :, 0] if array.shape[2] == 1 else array


def _file_mode() -> int:
    """The mode ``open()`` would give a new file under the current umask (mkstemp's 0600 is for secrets)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()
#: temporary files of atomic writes; one older than this was left by a killed process
STALE_SECONDS = 600


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_folder(folder: Path) -> None:
    """Create an output folder (and its parents), or say in one line why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test.", suffix=".tmp")
        probe.close()
    except FileExistsError:
        raise RestoreError(f"cannot create the output folder {folder}: a file is in the way") from None
    except OSError as err:
        raise RestoreError(f"cannot write to the output folder {folder}: {err.strerror or err}") from None


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files that killed runs left in ``folder`` and its subfolders; returns how many."""
    removed = 0
    now = time.time()
    for tmp in folder.rglob(".*.tmp") if folder.is_dir() else ():
        try:
            if now - tmp.stat().st_mtime > STALE_SECONDS:
                tmp.unlink()
                removed += 1
        except OSError:
            pass  # another process finished or removed it
    return removed


def write_image(path: str | Path, pixels: Tensor, *, alpha: Tensor | None = None, bit_depth: int = 8) -> None:
    """Encode (C, H, W) pixels in [-1, 1] to a file whose suffix gives the format; JPEG and BMP are 8-bit."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise RestoreError(f"cannot write {path}: use one of {', '.join(IMAGE_SUFFIXES)}")
    if suffix in (".jpg", ".jpeg", ".bmp"):
        bit_depth = 8
        alpha = None if suffix != ".bmp" else alpha
    array = to_array(pixels, alpha, bit_depth)
    if suffix == ".png" and bit_depth == 16 and array.ndim == 3:  # Pillow cannot write 16-bit colour PNGs
        import png

        planes = array.shape[2]
        writer = png.Writer(array.shape[1], array.shape[0], bitdepth=16, greyscale=planes < 3, alpha=planes in (2, 4))
        atomic_write(path, lambda f: writer.write(f, array.reshape(array.shape[0], -1)))
        return
    extension = ".tif" if suffix == ".tiff" else suffix
    atomic_write(path, lambda f: f.write(iio.imwrite("<bytes>", array, extension=extension)))


def save_array(path: str | Path, array: np.ndarray) -> None:
    """Save a NumPy array (.npy) atomically."""
    atomic_write(path, lambda f: np.save(f, array))


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Save named NumPy arrays (.npz) atomically."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def read_array(path: str | Path, what: str) -> np.ndarray:
    """Load a .npy array of finite numbers (no pickles), or raise a clear error naming ``what`` it was meant to be."""
    path = Path(path)
    if path.is_dir():
        raise RestoreError(f"{what} {path} is a folder, not a .npy file")
    if not path.is_file():
        raise RestoreError(f"{what} not found: {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - a damaged or non-.npy file, an object array
        raise RestoreError(f"cannot read {what} {path}: not a .npy array of numbers ({str(err).splitlines()[0]})") from None
    if not isinstance(array, np.ndarray) or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise RestoreError(f"{what} {path} must hold numbers, got {getattr(array, 'dtype', type(array).__name__)}")
    if array.size == 0:
        raise RestoreError(f"{what} {path} is empty (shape {array.shape})")
    if not np.isfinite(array).all():
        raise RestoreError(f"{what} {path} holds NaN or infinite values ({int((~np.isfinite(array)).sum())} of {array.size})")
    return array


def read_sinogram(path: str | Path) -> Tensor:
    """A CT sinogram from .npy: (angles, detectors) — or (1, angles, detectors), as restore saves one — → (1, angles, detectors)."""
    array = read_array(path, "sinogram")
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or np.iscomplexobj(array):
        raise RestoreError(f"sinogram {path} must be a real 2-D array (angles × detectors), got {array.dtype} {array.shape}")
    if min(array.shape) < 1:
        raise RestoreError(f"sinogram {path} has no angles or no detectors (shape {array.shape})")
    return torch.from_numpy(array.astype(np.float32))[None]


def to_display(measurement: Tensor, size: Sequence[int] | None = None) -> Tensor:
    """A measurement as a displayable (C, H, W) image in [-1, 1]: magnitude for complex data, min-max scaled
    when outside [-1, 1], nearest-neighbour resized to ``size`` (H, W) when given."""
    if measurement.is_complex():
        m = measurement.detach().abs().float().cpu()
        m = torch.log1p(m / m.amax().clamp_min(1e-12) * 1000)
    else:
        m = measurement.detach().float().cpu()
    if m.dim() == 2:
        m = m[None]
    if m.shape[0] not in (1, 3):
        m = m[:1]
    if m.min() < -1 - 1e-6 or m.max() > 1 + 1e-6 or measurement.is_complex():
        m = (m - m.min()) / (m.max() - m.min()).clamp_min(1e-12) * 2 - 1
    if size is not None and tuple(m.shape[-2:]) != tuple(size):
        m = torch.nn.functional.interpolate(m[None], size=tuple(size), mode="nearest")[0]
    return m


def make_grid(columns: Sequence[Tensor], labels: Sequence[str] | None = None, gap: int = 4) -> Tensor:
    """Images (C, H, W) in [-1, 1] side by side (resized to the first one's height, gray → RGB), white gaps."""
    height, width = columns[0].shape[-2:]
    tiles = []
    for image in columns:
        image = to_display(image, (height, width))
        tiles.append(image.expand(3, -1, -1) if image.shape[0] == 1 else image)
        tiles.append(torch.ones(3, height, gap))
    return torch.cat(tiles[:-1], dim=2)


def write_gif(path: str | Path, frames: Sequence[Tensor], seconds_per_frame: float = 0.1) -> None:
    """An animated GIF of (C, H, W) frames in [-1, 1], looping."""
    arrays = [to_array(to_display(f)) for f in frames]
    arrays = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    atomic_write(path, lambda f: f.write(iio.imwrite("<bytes>", np.stack(arrays), extension=".gif",
                                                     duration=int(seconds_per_frame * 1000), loop=0)))
