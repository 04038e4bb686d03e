"""CLAHE core: parity with scikit-image on real images, dtypes, edge cases, refusals, both back ends.

Parity budget (issue 3): mean |ours - skimage| <= 0.005 and max <= 0.05 on [0, 1]. The measured
difference is far smaller (one grey level in 16383, 6e-5, on a few pixels); the tests also pin that,
so a regression in the shared specification shows up long before the issue's budget is spent.
"""

import numpy as np
import pytest

from napari_medai.enhance import clahe, run_clahe
from napari_medai.errors import CancelledError, MedaiError

skimage_exposure = pytest.importorskip("skimage.exposure")
equalize_adapthist = skimage_exposure.equalize_adapthist

BACKENDS = ["numba", "torch"]
FRAME = "steatosis/frames/ID_1_Class_0_Fat_3_Image_1.jpeg"
CT = "ct/totalseg-example/example_ct.nii.gz"


def _check_parity(ours, ref, *, tight=True):
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.isfinite(ours).all() and ours.min() >= 0.0 and ours.max() <= 1.0
    diff = np.abs(ours.astype(np.float64) - ref)
    assert diff.mean() <= 0.005 and diff.max() <= 0.05, (diff.mean(), diff.max())
    if tight:  # the shared spec reproduces scikit-image up to float32 rounding: <= 1 grey level of 16383
        assert diff.max() <= 1.5 / 16383 and diff.mean() <= 1e-5, (diff.mean(), diff.max())
    return diff


def _as_uint16_for_skimage(a):
    """scikit-image clips negative integers to 0; giving it the shifted image is the same min-max input."""
    return (a.astype(np.int64) - int(a.min())).astype(np.uint16)


@pytest.fixture(scope="module")
def frame(request):
    from napari_medai.data_paths import shared_data_dir
    from napari_medai.io.readers import load_image

    root = shared_data_dir()
    if root is None:
        pytest.skip("real data not available")
    return load_image(root / FRAME).data


@pytest.fixture(scope="module")
def ct():
    from napari_medai.data_paths import shared_data_dir
    from napari_medai.io.readers import load_image

    root = shared_data_dir()
    if root is None:
        pytest.skip("real data not available")
    return load_image(root / CT).data.astype(np.int16)  # int32 on disk, HU range fits int16


@pytest.mark.parametrize("backend", BACKENDS)
def test_parity_ultrasound_frame(frame, backend):
    assert frame.dtype == np.uint8 and frame.ndim == 2
    _check_parity(clahe(frame, backend=backend, device="cpu"), equalize_adapthist(frame))
    ref = equalize_adapthist(frame, kernel_size=(40, 64), clip_limit=0.03, nbins=128)
    _check_parity(clahe(frame, kernel_size=(40, 64), clip_limit=0.03, nbins=128, backend=backend), ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_parity_ct_slice_int16_hu(ct, backend):
    sl = ct[60]
    assert sl.min() < -900  # real HU, air included
    ref = equalize_adapthist(_as_uint16_for_skimage(sl))
    _check_parity(clahe(sl, backend=backend, device="cpu"), ref)
    # the intensity window: clipped to [-200, 250] and mapped onto [0, 1]
    windowed = np.clip(sl, -200, 250)
    ref_w = equalize_adapthist(_as_uint16_for_skimage(windowed))
    _check_parity(clahe(sl, window=(-200, 250), backend=backend), ref_w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_parity_ct_subvolume_3d(ct, backend):
    sub = np.ascontiguousarray(ct[30:78, 10:90, 20:110])  # (48, 80, 90): odd sizes, partial tiles
    ref = equalize_adapthist(_as_uint16_for_skimage(sub))
    out = clahe(sub, backend=backend)  # auto -> 3d
    _check_parity(out, ref)
    ref_k = equalize_adapthist(_as_uint16_for_skimage(sub), kernel_size=(8, 16, 24), clip_limit=0.02)
    _check_parity(clahe(sub, mode="3d", kernel_size=(8, 16, 24), clip_limit=0.02, backend=backend), ref_k)


def test_slices_mode_is_skimage_slice_by_slice(ct):
    stack = ct[50:56]
    out = clahe(stack, mode="slices")
    for i in range(len(stack)):
        _check_parity(out[i], equalize_adapthist(_as_uint16_for_skimage(stack[i])))
    torch_out = clahe(stack, mode="slices", backend="torch")
    assert np.abs(torch_out - out).max() <= 1.5 / 16383


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "float64"])
def test_dtypes(dtype):
    rng = np.random.default_rng(3)
    base = rng.normal(0, 1, (96, 80)).cumsum(0).cumsum(1)  # smooth, structured
    base = (base - base.min()) / np.ptp(base)
    if dtype == "uint8":
        img, ref_in = (base * 255).astype(np.uint8), None
    elif dtype == "uint16":
        img, ref_in = (base * 60000).astype(np.uint16), None
    elif dtype == "int16":
        img = (base * 2000 - 1000).astype(np.int16)  # HU-like, negative values
        ref_in = _as_uint16_for_skimage(img)
    else:
        img, ref_in = base.astype(dtype) * 7 - 3, None  # outside [-1, 1]: skimage refuses, we min-max
    ref_in = ref_in if ref_in is not None else img
    if dtype.startswith("float"):
        ref_in = (img - img.min()) / (img.max() - img.min())
    ref = equalize_adapthist(ref_in)
    out = clahe(img)
    # float input: skimage rounds to 16 bits before its own rescale, so a few pixels may sit one
    # 14-bit level apart -> the budget applies, not the bit-level one
    _check_parity(out, ref, tight=not dtype.startswith("float"))


def test_constant_image_gives_no_nan():
    for value, dtype in [(7, np.uint8), (-1000, np.int16), (0.25, np.float32)]:
        img = np.full((40, 50), value, dtype=dtype)
        out = clahe(img)
        assert np.isfinite(out).all() and out.dtype == np.float32
        assert np.array_equal(out, np.ones_like(out))  # what scikit-image returns for a flat image
    np.testing.assert_array_equal(clahe(np.zeros((6, 20, 20), np.int16)), 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_image_smaller_than_a_tile(backend):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (5, 7), dtype=np.uint8)
    _check_parity(clahe(img, kernel_size=16, backend=backend), equalize_adapthist(img, kernel_size=16))
    vol = rng.integers(0, 4000, (3, 9, 6), dtype=np.uint16)
    _check_parity(clahe(vol, kernel_size=(4, 16, 32), backend=backend),
                  equalize_adapthist(vol, kernel_size=(4, 16, 32)))
    one = np.array([[5, 9]], np.uint8)  # a single row: reflection of a length-1 axis
    _check_parity(clahe(one, backend=backend), equalize_adapthist(one))


def test_rgb_equalises_value_and_keeps_hue():
    rng = np.random.default_rng(2)
    grey = rng.normal(0, 1, (60, 70)).cumsum(0).cumsum(1)
    grey = ((grey - grey.min()) / np.ptp(grey) * 200 + 20).astype(np.uint8)
    rgb = np.stack([grey, (grey * 0.8).astype(np.uint8), (grey * 0.5).astype(np.uint8)], -1)
    out = clahe(rgb)
    assert out.shape == rgb.shape and out.dtype == np.float32
    ref = equalize_adapthist(rgb)
    assert np.abs(out - ref).max() <= 1e-3
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 128, np.uint8)], -1)
    out4 = clahe(rgba)
    assert out4.shape == rgba.shape
    np.testing.assert_allclose(out4[..., :3], out, atol=1e-6)
    np.testing.assert_allclose(out4[..., 3], 128 / 255, atol=1e-6)


def test_input_is_never_modified_and_views_work(ct):
    sub = ct[40:50, ::2, ::2]  # a strided view
    before = sub.copy()
    out = clahe(sub, mode="slices")
    np.testing.assert_array_equal(sub, before)
    np.testing.assert_array_equal(out, clahe(np.ascontiguousarray(sub), mode="slices"))
    t = np.ascontiguousarray(ct[60]).T  # a transposed (Fortran-order) image
    tb = t.copy()
    clahe(t)
    np.testing.assert_array_equal(t, tb)


def test_batch_of_volumes_is_volume_by_volume():
    rng = np.random.default_rng(4)
    vols = rng.integers(0, 1000, (2, 8, 24, 20), dtype=np.uint16)
    out = clahe(vols)  # 4-D: each (Z, Y, X) volume on its own, in 3-D
    for i in range(2):
        np.testing.assert_array_equal(out[i], clahe(vols[i]))


@pytest.mark.parametrize(
    "image, kwargs, words",
    [
        (np.array([[np.nan, 1.0], [2.0, 3.0]] * 4), {}, "NaN"),
        (np.array([[np.inf, 1.0], [2.0, 3.0]] * 4), {}, "infinite"),
        (np.zeros((0, 10)), {}, "empty"),
        (np.zeros(10), {}, "1-D"),
        (np.zeros((2, 2, 2, 2, 2)), {}, "at most 4-D"),
        (np.zeros((4, 4), complex), {}, "real-valued"),
        (np.zeros((4, 8, 8)), {"mode": "2d"}, "slices"),
        (np.zeros((8, 8)), {"mode": "3d"}, "volume"),
        (np.zeros((8, 8)), {"mode": "4d"}, "unknown CLAHE mode"),
        (np.zeros((8, 8)), {"kernel_size": (2, 2, 2)}, "kernel size"),
        (np.zeros((8, 8)), {"kernel_size": 0}, "positive"),
        (np.zeros((8, 8)), {"clip_limit": -1}, "clip limit"),
        (np.zeros((8, 8)), {"nbins": 1}, "nbins"),
        (np.zeros((8, 8)), {"window": (250, -200)}, "window"),
        (np.zeros((8, 8, 3), np.uint8), {"window": (0, 9)}, "RGB"),
        (np.zeros((8, 8)), {"backend": "opencl"}, "back end"),
    ],
)
def test_refused_inputs_are_one_line_errors(image, kwargs, words):
    with pytest.raises(MedaiError) as info:
        clahe(image, **kwargs)
    message = str(info.value)
    assert words in message and "\n" not in message


def test_progress_and_cancel():
    img = np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)
    seen = []
    result = run_clahe(img, progress=lambda i, n: seen.append((i, n)))
    assert seen[0] == (0, 1000) and seen[-1] == (1000, 1000)
    assert result.backend == "numba" and result.device == "cpu" and result.kernel_size == (8, 8)
    with pytest.raises(CancelledError):
        clahe(img, should_stop=lambda: True)
    calls = []

    def stop_later():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(CancelledError):
        clahe(np.zeros((4, 32, 32), np.uint8) + np.arange(32, dtype=np.uint8), mode="3d", should_stop=stop_later)


def test_top_level_api():
    import napari_medai

    img = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) % 251
    np.testing.assert_array_equal(napari_medai.clahe(img), clahe(img))


def test_top_level_function_after_the_subpackage_is_imported():
    import importlib

    import napari_medai

    importlib.import_module("napari_medai.enhance.cli")
    img = (np.arange(40 * 30, dtype=np.int32).reshape(40, 30) * 7) % 1000
    np.testing.assert_array_equal(napari_medai.clahe(img, kernel_size=8), clahe(img, kernel_size=8))


def test_clip_and_redistribute_is_scikit_image_step_for_step():
    """The three implementations of the clipping loop against scikit-image's own, on hard cases."""
    torch = pytest.importorskip("torch")
    from skimage.exposure._adapthist import clip_histogram as sk_clip

    from napari_medai.enhance import _numba, _spec, _torch

    rng = np.random.default_rng(7)
    cases = []
    for nbins in (16, 256):
        for _ in range(60):
            kind = rng.integers(4)
            if kind == 0:  # one dominant bin (air in CT)
                h = rng.integers(0, 5, nbins)
                h[rng.integers(nbins)] += rng.integers(100, 5000)
            elif kind == 1:  # spiky
                h = rng.integers(0, 3, nbins) * rng.integers(0, 300, nbins)
            elif kind == 2:  # nearly flat around the limit
                h = rng.integers(35, 45, nbins)
            else:  # every bin above the limit
                h = rng.integers(50, 60, nbins)
            cases.append((h.astype(np.int64), int(rng.integers(1, 60))))
    batch = {}
    for h, clim in cases:
        want = sk_clip(h.copy(), clim)
        np.testing.assert_array_equal(_spec.clip_histogram(h.copy(), clim), want)
        got = h.copy()
        _numba._clip_histogram(got, clim)
        np.testing.assert_array_equal(got, want)
        batch.setdefault((h.size, clim), []).append((h, want))
    for (_size, clim), items in batch.items():
        hs = torch.as_tensor(np.stack([h for h, _ in items]))
        np.testing.assert_array_equal(_torch.clip_histograms(hs, clim).numpy(), np.stack([w for _, w in items]))


def test_numba_band_path_for_big_volumes_gives_the_same_maps(monkeypatch, ct):
    """Volumes above 16 M voxels histogram band by band; force that path on a small one."""
    from napari_medai.enhance import _numba

    sub = np.ascontiguousarray(ct[20:60, 5:95, 7:117])
    want = clahe(sub, kernel_size=(6, 20, 25))  # partial tiles on every axis (mirrored positions)
    _no_band_slices = clahe(sub, mode="slices", kernel_size=24)
    monkeypatch.setattr(_numba, "_BAND_ABOVE", 0)
    np.testing.assert_array_equal(clahe(sub, kernel_size=(6, 20, 25)), want)
    np.testing.assert_array_equal(clahe(sub, mode="slices", kernel_size=24), _no_band_slices)


def test_gpu_out_of_memory_falls_back_to_the_cpu(monkeypatch):
    from napari_medai.enhance import _torch, core

    def oom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(_torch, "run", oom)
    monkeypatch.setattr(core, "_choose", lambda backend, device, numel: ("torch", "cuda:0", "test"))
    img = np.arange(50 * 40, dtype=np.uint16).reshape(50, 40) % 97
    result = run_clahe(img)
    assert result.backend == "numba" and result.device == "cpu" and "out of memory" in result.notes[0]
    np.testing.assert_array_equal(result.image, clahe(img, device="cpu"))
