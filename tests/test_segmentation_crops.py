"""The shipped liver model on liver-centred crops gives nearly the whole-volume Dice (issue 19).

The two manually labelled VALIDATION cases of the project data (3D-IRCADb-01 patient 7, CHAOS CT 1)
are segmented whole and as three crops (a 128^3 cube resampled to 1.7 mm, a 160 mm cube at native
spacing, the upper half of the volume; ``napari_medai.segmentation.crops``). Version 1.2 (square field
of view resized to 128 px) lost up to 0.21 Dice on the 160 mm cube; with the fixed pixel size of
version 1.3 every crop is within the issue's -0.03 of the whole volume (measured margins in
docs/segmentation.md). The cases are VALIDATION: they guided the pixel size and the opening. Skips
without ../shared/data; one whole-volume run per case (module fixture), about 10 s each on 2 idle cores.
"""

import numpy as np
import pytest

from napari_medai.segmentation.crops import CROP_KINDS, liver_centred_crop
from napari_medai.segmentation.metrics import dice

CASES = {
    "ircadb07": ("ct/ircadb-07/ircadb01_07_ct.nii.gz", "ct/ircadb-07/ircadb01_07_label.nii.gz"),
    "chaos1": ("ct/chaos-ct-1/chaos_ct_01_ct.nii.gz", "ct/chaos-ct-1/chaos_ct_01_label.nii.gz"),
}
# The target: crop Dice - whole Dice >= -0.03. Measured (1.3): worst -0.007 (CHAOS-1 upper half);
# the other five crops are +0.001 to +0.030 above their whole volume, so -0.03 leaves 0.023 for float and
# thread-count differences. Whole volumes measured 0.885 / 0.921 (1.2: 0.876 / 0.918).
MARGIN = -0.03
WHOLE_MIN = {"ircadb07": 0.86, "chaos1": 0.90}



@pytest.fixture(scope="module", params=sorted(CASES))
def whole(request):
    from napari_medai.data_paths import shared_data_dir

    root = shared_data_dir()
    if root is None or not (root / CASES[request.param][0]).is_file():
        pytest.skip("validation CTs not available (set NAPARI_MEDAI_DATA or provide ../shared/data)")
    from napari_medai import segment
    from napari_medai.io.readers import load_image

    img, lab = (load_image(root / p) for p in CASES[request.param])
    r = segment(img.data, spacing=img.geometry.spacing, affine=img.geometry.affine_ras(), device="cpu")
    assert r.labels.shape == img.data.shape
    return request.param, img, lab, dice(r.labels > 0, lab.data > 0)


def test_whole_volume_liver_dice(whole):
    case, _, _, d = whole
    assert d >= WHOLE_MIN[case], f"{case}: whole-volume liver Dice {d:.4f}"


@pytest.mark.parametrize("kind", CROP_KINDS)
def test_liver_centred_crop_keeps_dice(whole, kind):
    from napari_medai import segment

    case, img, lab, whole_dice = whole
    ct, label, spacing, affine = liver_centred_crop(
        img.data, lab.data, img.geometry.spacing, img.geometry.affine_ras(), kind
    )
    r = segment(ct, spacing=spacing, affine=affine, device="cpu")
    assert r.labels.shape == ct.shape
    d = dice(r.labels > 0, label > 0)
    assert d - whole_dice >= MARGIN, f"{case} {kind}: crop Dice {d:.4f} vs whole {whole_dice:.4f}"


def test_crop_geometry_is_consistent():
    """The crops' affines place each crop voxel where it came from (no data needed)."""
    rng = np.random.default_rng(0)
    ct = rng.normal(size=(40, 64, 64)).astype(np.float32)
    label = np.zeros(ct.shape, np.uint8)
    label[10:30, 20:40, 25:45] = 1
    affine = np.array([[-0.8, 0, 0, 10], [0, -0.8, 0, 20], [0, 0, 2.0, -5], [0, 0, 0, 1]], float)[:, [2, 1, 0, 3]]
    for kind in CROP_KINDS:
        c, lb, sp, aff = liver_centred_crop(ct, label, (2.0, 0.8, 0.8), affine, kind)
        assert c.shape == lb.shape and np.allclose(np.linalg.norm(aff[:3, :3], axis=0), sp)
        if kind != "cube128_1.7mm":  # native grid: voxel (0,0,0) of the crop is an input voxel
            src = np.linalg.solve(affine, aff @ [0, 0, 0, 1])[:3]
            i, j, k = np.round(src).astype(int)
            assert c[0, 0, 0] == ct[i, j, k]
    up = liver_centred_crop(ct, label, (2.0, 0.8, 0.8), affine, "upper_half")[0]
    assert np.array_equal(up, ct[20:])  # axis 0 runs superior here: the upper half is the second half


# ---- the fixed pixel size and the field-of-view-independent post-processing (no data needed) ------------
def test_physical_canvas_keeps_the_pixel_size():
    from napari_medai.segmentation.core import physical_canvas

    assert physical_canvas(512, 512, (0.684, 0.684), 3.0, (128, 128)) == (117, 117, 128, 128, 5, 5)
    rh, rw, ch, cw, top, left = physical_canvas(205, 205, (0.782, 0.782), 3.0, (128, 128))  # a 160 mm crop
    assert (rh, rw, ch, cw) == (53, 53, 128, 128) and top == left == 37  # padded, not enlarged
    rh, rw, ch, cw, _, _ = physical_canvas(512, 800, (1.2, 0.75), 3.0, (128, 128))  # wide, anisotropic
    assert (rh, rw, ch, cw) == (205, 200, 208, 208)


def test_predict_slices_maps_back_onto_the_input_grid():
    """A stand-in network that labels bright pixels: the labels land where the bright square is, for a
    crop at any pixel size, within one model pixel (3 mm)."""
    import torch

    from napari_medai.runtime.device import resolve_device
    from napari_medai.segmentation.core import LoadedModel, _predict_slices

    class Bright(torch.nn.Module):
        def forward(self, x):
            return torch.cat([0.5 - x, x - 0.5, torch.full_like(x, -9.0)], 1) * 10

    spec = {"window_hu": [-40, 160], "size": [128, 128], "pixel_mm": 3.0, "decision": "region"}
    lm = LoadedModel(Bright().eval(), spec, "test", 2, {1: "liver", 2: "tumour"}, False)
    for shape, spacing in (((90, 140), (0.7, 0.7)), ((300, 200), (0.5, 1.1))):
        data = np.zeros((1, *shape), np.float32)
        data[0, 20:60, 30:70] = 1.0
        labels = _predict_slices(lm, data, spacing, resolve_device("cpu"), (8, 1), lambda i, n: None, None)
        assert labels.shape == data.shape
        truth = data[0] > 0
        wrong = np.argwhere((labels[0] > 0) != truth)
        assert len(wrong) < 0.1 * truth.sum()
        # every wrong pixel is within 3 mm of the square's edge
        from scipy import ndimage

        edge_mm = np.minimum(
            ndimage.distance_transform_edt(truth, sampling=spacing),
            ndimage.distance_transform_edt(~truth, sampling=spacing),
        )
        assert edge_mm[tuple(wrong.T)].max() <= 3.0


def test_midline_only_when_the_body_outline_is_seen():
    from napari_medai.segmentation.core import body_midline_x

    ct = np.full((4, 100, 120), -1000.0, np.float32)
    ct[:, 20:80, 30:100] = 40.0  # whole body in view, centred at column 64.5
    assert body_midline_x(ct) == pytest.approx(64.5)
    assert body_midline_x(ct[:, 30:70, 40:90]) is None  # a crop inside the body: no outline, no midline
    assert body_midline_x(np.full((2, 10, 10), -1000.0)) is None


def test_opening_drops_a_neighbour_on_a_thin_bridge():
    from napari_medai.segmentation.core import postprocess

    labels = np.zeros((20, 60, 90), np.uint8)
    labels[2:18, 10:50, 5:45] = 1  # "liver"
    labels[4:16, 15:45, 55:85] = 1  # a neighbour ...
    labels[9:11, 29:31, 45:55] = 1  # ... joined by a 2 mm bridge
    plain = postprocess(labels)
    opened = postprocess(labels, spacing=(1.0, 1.0, 1.0), open_mm=5.0)
    assert plain[10, 30, 70] == 1  # one component: the plain rule keeps the neighbour
    assert opened[10, 30, 70] == 0 and opened[10, 30, 25] == 1
    assert (opened > 0).sum() >= 0.97 * 16 * 40 * 40  # the liver itself is kept (corners aside)
