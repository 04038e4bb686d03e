"""The high-resolution tumour stage: crop, resample and paste back onto the organ, with a known network."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")


class DarkIsTumour(torch.nn.Module):
    """Tumour where the centre channel is darker than 0.45, halfway between lesion and liver (background low)."""

    def forward(self, x):
        centre = x[:, 1:2]
        return torch.cat([torch.full_like(centre, -10.0), torch.zeros_like(centre), (0.45 - centre) * 50.0], 1)


def _volume(spacing_yx=0.8):
    z, y, x = np.mgrid[:20, :160, :180]
    organ = ((y - 80) ** 2 + (x - 90) ** 2 < 50**2) & (z >= 3) & (z < 17)
    lesion = ((y - 70) ** 2 + (x - 100) ** 2 < 10**2) & (z >= 8) & (z < 12)
    data01 = np.where(organ, 0.7, 0.9).astype(np.float32)  # bright surroundings: only the lesion is dark
    data01[lesion] = 0.2
    return data01, organ.astype(np.uint8), lesion


@pytest.mark.parametrize("pixel", [0.8, 1.3])
def test_refine_tumour_marks_the_dark_lesion_inside_the_organ_only(pixel):
    from napari_medai.segmentation.metrics import dice
    from napari_medai.segmentation.tumour_stage import refine_tumour

    data01, labels, lesion = _volume()
    data01[0, 0, 0] = 0.0  # a dark voxel outside the organ must stay background
    before = labels.copy()
    out = refine_tumour(DarkIsTumour(), data01, labels, (2.0, 0.8, 0.8), {"pixel_mm": pixel, "margin_mm": 5.0})
    assert np.array_equal(labels, before)  # the input is not modified
    assert np.array_equal(out >= 1, labels >= 1)  # the organ is the cascade's
    assert out[0, 0, 0] == 0 and set(np.unique(out)) == {0, 1, 2}
    assert dice(out == 2, lesion) > 0.9


def test_refine_tumour_without_organ_returns_the_labels():
    from napari_medai.segmentation.tumour_stage import refine_tumour

    data01 = np.zeros((3, 32, 32), np.float32)
    labels = np.zeros((3, 32, 32), np.uint8)
    assert refine_tumour(DarkIsTumour(), data01, labels, (1.0, 1.0, 1.0), {}) is labels


def test_union_joins_a_lesion_the_organ_left_out_but_not_a_mass_beside_it_and_drops_specks():
    from napari_medai.segmentation.metrics import dice
    from napari_medai.segmentation.tumour_stage import refine_tumour

    data01, labels, lesion = _volume()
    z, y, x = np.mgrid[:20, :160, :180]
    mass = ((y - 80) ** 2 + (x - 150) ** 2 < 12**2) & (z >= 6) & (z < 14)  # outside the organ, touching it
    speck = ((y - 100) ** 2 + (x - 70) ** 2 < 2**2) & (z == 10)  # 3 mm across
    data01[mass | speck] = 0.2
    labels = (labels.astype(bool) & ~lesion & ~mass).astype(np.uint8)  # the organ network left the lesion out
    spec = {"pixel_mm": 0.8, "margin_mm": 15.0, "region": "union", "min_lesion_mm": 5.0}
    out = refine_tumour(DarkIsTumour(), data01, labels, (2.0, 0.8, 0.8), spec)
    assert dice(out == 2, lesion) > 0.95  # joined to the organ, as tumour
    assert not out[mass & (labels == 0)].any()  # the mass beside the liver stays out
    assert out[speck].tolist() == [1] * int(speck.sum())  # a 3 mm speck is liver, not a lesion
    organ_only = refine_tumour(DarkIsTumour(), data01, labels, (2.0, 0.8, 0.8), {**spec, "region": "organ"})
    assert (organ_only == 2).sum() < 0.1 * lesion.sum()


def test_liver_hu_reference_makes_a_dark_liver_look_like_the_training_livers():
    from napari_medai.segmentation.metrics import dice
    from napari_medai.segmentation.tumour_stage import refine_tumour

    _, labels, lesion = _volume()
    hu = np.where(labels >= 1, 20.0, 300.0).astype(np.float32)  # a non-contrast, fatty liver at 20 HU
    hu[lesion] = -40.0  # a lesion 60 HU below it
    data01 = np.clip((hu + 40.0) / 200.0, 0.0, 1.0)  # the [-40, 160] window
    spec = {"pixel_mm": 0.8, "margin_mm": 5.0}
    plain = refine_tumour(DarkIsTumour(), data01, labels, (2.0, 0.8, 0.8), spec, hu=hu, window=(-40, 160))
    assert (plain == 2).sum() > 0.9 * (labels >= 1).sum()  # the whole dark liver taken for tumour
    shifted = refine_tumour(DarkIsTumour(), data01, labels, (2.0, 0.8, 0.8), {**spec, "liver_hu_reference": 92.0},
                            hu=hu, window=(-40, 160))
    assert dice(shifted == 2, lesion) > 0.9
    assert np.array_equal(data01, np.clip((hu + 40.0) / 200.0, 0.0, 1.0))  # the input is not modified


def test_lesion_rules_drop_a_faint_lesion_and_keep_a_dark_one():
    """The 1.5 lesion rules: a lesion 15 HU below the liver is dropped (contrast < 30 HU), one 100 HU below is
    kept; the score rule drops a lesion the network is unsure of."""
    from napari_medai.segmentation.tumour_stage import LesionRules, refine_tumour

    _, labels, lesion = _volume()
    z, y, x = np.mgrid[:20, :160, :180]
    faint = ((y - 100) ** 2 + (x - 60) ** 2 < 8**2) & (z >= 8) & (z < 12)
    hu = np.where(labels >= 1, 100.0, 300.0).astype(np.float32)
    hu[lesion] = 0.0
    hu[faint] = 85.0
    data01 = np.where(lesion | faint, 0.2, np.clip((hu + 40.0) / 200.0, 0.0, 1.0)).astype(np.float32)
    spec = {"pixel_mm": 0.8, "margin_mm": 5.0, "min_lesion_mm": 7.0}
    both = refine_tumour(DarkIsTumour(), data01, labels, (2.0, 0.8, 0.8), spec, hu=hu, window=(-40, 160))
    assert both[faint].mean() > 1.9 and both[lesion].mean() > 1.9  # without the contrast rule: two lesions
    ruled = refine_tumour(DarkIsTumour(), data01, labels, (2.0, 0.8, 0.8), {**spec, "min_lesion_contrast_hu": 30.0},
                          hu=hu, window=(-40, 160))
    assert (ruled[faint] == 1).all()  # 15 HU below the liver: liver
    assert (ruled[lesion] == 2).mean() > 0.9
    rules = LesionRules(min_mm=7.0, min_score=0.7, min_contrast_hu=30.0)
    assert rules.keeps(12.0, 0.9, -45.0)  # brighter than the liver counts too (|contrast|)
    assert not rules.keeps(12.0, 0.65, 60.0)
    assert not rules.keeps(6.5, 0.9, 60.0)
    assert rules.keeps(12.0, None, None)  # a rule without its array is not applied


def test_lesion_size_on_its_extent_keeps_a_lesion_drawn_too_small():
    """The size clause measures the lesion, or with lesion_extent_p its connected region of p(tumour) >= p inside
    the organ region: a 5 px core (4 mm at 0.8 mm) with a p 0.3 halo of radius 8 px (12.5 mm across) passes a 10 mm
    clause only on its extent, and the halo outside the region does not count."""
    from napari_medai.segmentation.tumour_stage import LesionRules, _drop_lesions, lesion_diameters

    z, y, x = np.mgrid[:3, :60, :60]
    r2 = (y - 30) ** 2 + (x - 30) ** 2
    core = r2 < 2.5**2
    score = np.where(core, 0.9, np.where(r2 < 8**2, 0.3, 0.05)).astype(np.float32)
    region = np.ones(core.shape, bool)
    _, _, alone = lesion_diameters(core, 0.64)
    _, _, extent = lesion_diameters(core, 0.64, score=score, region=region, extent_p=0.2)
    _, _, strict = lesion_diameters(core, 0.64, score=score, region=region, extent_p=0.4)
    _, _, cut = lesion_diameters(core, 0.64, score=score, region=region & (x < 31), extent_p=0.2)
    assert alone == strict and abs(alone[0] - 2 * 0.8 * np.sqrt(21 / np.pi)) < 1e-6  # 21 px of the 5 px disc
    assert abs(extent[0] - 2 * 0.8 * np.sqrt(193 / np.pi)) < 1e-6  # 193 px of the radius-8 disc
    assert alone[0] < cut[0] < extent[0]
    rules, extended = LesionRules(min_mm=10.0), LesionRules(min_mm=10.0, extent_p=0.2)
    assert LesionRules.from_spec({"min_lesion_mm": 10.0, "lesion_extent_p": 0.2}).extent_p == 0.2
    none = np.zeros(core.shape, bool)
    assert not _drop_lesions(core, none, region.copy(), (0.8, 0.8), rules, score).any()
    assert np.array_equal(_drop_lesions(core, none, region.copy(), (0.8, 0.8), extended, score), core)


def test_organ_band_redraws_the_boundary_near_the_organ_only():
    """The 1 mm stage's p(background) redraws the cascade's boundary within organ_band_mm; farther out it is ignored."""
    from napari_medai.segmentation.tumour_stage import refine_organ_boundary

    z, y, x = np.mgrid[:6, :80, :80]
    truth = (y - 40) ** 2 + (x - 40) ** 2 < 20**2
    cascade = ((y - 40) ** 2 + (x - 40) ** 2 < 22**2).astype(np.uint8)  # 2 px too wide (coarse pixels)
    cascade[:, 40, 40] = 2  # a tumour voxel keeps its label
    far = (y - 5) ** 2 + (x - 5) ** 2 < 3**2  # the stage's false liver far from the organ
    background = np.where(truth | far, 0.1, 0.9).astype(np.float16)
    box = (slice(0, 6), slice(0, 80), slice(0, 80))
    maps = (box, None, None, None, background)
    before = cascade.copy()
    out = refine_organ_boundary(cascade, maps, (2.0, 1.0, 1.0), band_mm=3.0)
    assert np.array_equal(cascade, before)  # the input is not modified
    assert np.array_equal(out >= 1, truth)  # boundary redrawn, the far blob not added
    assert out[0, 40, 40] == 2
