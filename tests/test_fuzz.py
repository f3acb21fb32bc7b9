"""Property-based fuzzing of everything that parses user text or user files: never a traceback, never a hang.

Each parser either returns a value or raises the project's one-line error (``restore.errors.USER_ERRORS``);
anything else (IndexError, ZeroDivisionError, …) is a bug. Example budgets are fixed so CI stays fast.
"""

from __future__ import annotations

import io
import string

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import operators
from restore.errors import USER_ERRORS
from restore.io import read_array, read_image, read_sinogram
from restore.samplers import SAMPLERS
from restore.samplers.defaults import with_options

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
NAMES = sorted(operators.REGISTRY)
FIELD = st.one_of(
    st.sampled_from(["", "0", "1", "2", "3", "-1", "0.5", "1.5", "nan", "inf", "-inf", "1e9", "x", "4.0", "1e-9", "61", "3.0",
                     "gaussian", "motion", "levin", "circular", "reflect", "valid", "equispaced", "random", "per", "shared",
                     "420", "444", "4:2:0", "signed", "unit"]),
    st.text(alphabet=string.ascii_letters + string.digits + ".-_", max_size=6),
)
KEYS = st.sampled_from(["seed", "boundary", "top", "left", "width", "channels", "invert", "center", "center_fraction",
                        "offset", "complex", "coils", "arc", "detectors", "start", "quality", "subsampling", "oversample",
                        "range", "file", "key", "bogus"])


@st.composite
def spec_text(draw) -> str:
    name = draw(st.sampled_from(NAMES + ["gaussian", "nope", ""]))
    fields = draw(st.lists(st.one_of(FIELD, st.builds(lambda k, v: f"{k}={v}", KEYS, FIELD)), max_size=4))
    return ":".join([name, *fields]) if fields else name


SHAPES = st.sampled_from([(3, 16, 16), (1, 8, 12), (3, 5, 7), (1, 1, 1), (3, 64, 48)])


@FAST
@given(spec=spec_text(), shape=SHAPES)
def test_operator_specs_build_or_refuse_in_one_line(spec, shape):
    torch.set_num_threads(1)
    try:
        op = operators.build(spec, shape)
    except USER_ERRORS:
        return
    x = torch.rand((1, *shape), generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = op.A(x.to(torch.float64) if op.linear else x)
    assert torch.isfinite(y.abs() if y.is_complex() else y).all()
    assert operators.build(op.spec, shape).spec == op.spec  # a spec rebuilds itself


@FAST
@given(fields=st.lists(FIELD, max_size=4))
def test_kernel_specs_build_or_refuse(fields):
    try:
        kernel = operators.blur.make_kernel(":".join(fields))
    except USER_ERRORS:
        return
    assert kernel.dim() == 2 and (kernel >= 0).all() and abs(float(kernel.sum()) - 1) < 1e-9


@FAST
@given(sampler=st.sampled_from(sorted(SAMPLERS)),
       options=st.lists(st.builds(lambda k, sep, v: f"{k}{sep}{v}",
                                  st.sampled_from(["eta", "lam", "zeta", "steps", "lr", "weight", "renoise", "sigma_min",
                                                   "cg_max_iter", "adam_betas", "skip", "travel_length", "__class__", ""]),
                                  st.sampled_from(["=", "", "=="]), FIELD), max_size=3))
def test_set_options_apply_or_refuse(sampler, options):
    params = SAMPLERS[sampler].params()
    try:
        changed = with_options(params, options, sampler)
    except USER_ERRORS:
        return
    assert type(changed) is type(params)


@FAST
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp", ".gif"]))
def test_image_reader_on_random_bytes(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"x{suffix}"
    path.write_bytes(data)
    try:
        image = read_image(path)
    except USER_ERRORS:
        return
    assert torch.isfinite(image.pixels).all()


@FAST
@given(header=st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"BM"]), data=st.binary(max_size=200))
def test_image_reader_on_damaged_headers(tmp_path_factory, header, data):
    path = tmp_path_factory.mktemp("fuzz") / "x.png"
    path.write_bytes(header + data)
    try:
        read_image(path)
    except USER_ERRORS:
        pass


ARRAYS = st.one_of(
    st.builds(lambda shape, fill: np.full(shape, fill), st.lists(st.integers(0, 5), max_size=4).map(tuple),
              st.sampled_from([0.0, 1.0, np.nan, np.inf, -1.0])),
    st.builds(lambda shape: np.zeros(shape, dtype=np.complex64), st.lists(st.integers(0, 4), max_size=3).map(tuple)),
    st.just(np.array(["a", "b"])), st.just(np.array(True)),
)


@FAST
@given(array=ARRAYS)
def test_array_readers_on_random_arrays(tmp_path_factory, array):
    path = tmp_path_factory.mktemp("fuzz") / "a.npy"
    np.save(path, array)
    for read in (lambda p: read_array(p, "array"), read_sinogram):
        try:
            read(path)
        except USER_ERRORS:
            pass


@FAST
@given(data=st.binary(max_size=200))
def test_array_and_mask_readers_on_random_bytes(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "a.npy").write_bytes(b"\x93NUMPY" + data)
    (folder / "m.png").write_bytes(data)
    for read in (lambda: read_sinogram(folder / "a.npy"), lambda: operators.mri.read_kspace(folder / "a.npy"),
                 lambda: operators.inpaint.read_mask(folder / "m.png", (3, 8, 8)),
                 lambda: operators.inpaint.read_mask(folder / "a.npy", (3, 8, 8))):
        try:
            read()
        except USER_ERRORS:
            pass


@pytest.mark.parametrize("quality", [5, 50, 95])
def test_jpeg_file_reader_on_damaged_files(tmp_path, quality):
    """Cutting a real JPEG anywhere gives the reader's one-line error, never another exception."""
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=quality)
    data = buffer.getvalue()
    for cut in range(0, len(data), max(1, len(data) // 40)):
        path = tmp_path / f"cut{cut}.jpg"
        path.write_bytes(data[:cut])
        try:
            operators.jpeg.read_coefficients(path)
        except USER_ERRORS:
            pass
