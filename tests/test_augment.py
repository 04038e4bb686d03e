"""The one augmentation home (napari_medai.augment): MONAI transforms, seeded per batch, with the kinds
and ranges of the hand-written functions the shipped weights were trained with (old values quoted)."""


import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from napari_medai import augment as A  # noqa: E402


def _geometric_only(recipe):
    """The same recipe without its intensity steps (to follow a marker exactly)."""
    return A.Augmentation(lambda size: [s for s in recipe._build(size) if isinstance(s, A.Spatial)], recipe.name)


def _draws(recipe, shape, n, seed=0):
    """Draw the geometric steps' parameters ``n`` times (randomize only) and return them per draw."""
    steps = [s for s in recipe.for_shape(shape[1:]) if isinstance(s, A.Spatial)]
    recipe.seed(seed)
    out = []
    for _ in range(n):
        for s in steps:
            s.transform.randomize(None)
        out.append([(type(s.transform).__name__, getattr(s.transform, "_do_transform", None),
                     A.zoom_of(s.transform) if hasattr(s.transform, "rand_affine_grid") else None,
                     list(s.transform.rand_affine_grid.scale_params) if hasattr(s.transform, "rand_affine_grid")
                     else None, getattr(s.transform, "_rand_k", None))
                    for s in steps])
    return out


def test_seeded_determinism_shapes_and_generators():
    x = torch.rand(6, 1, 40, 40)
    y = (torch.rand(6, 1, 40, 40) > 0.7).float()
    for make in (A.ct_slices, A.msd_slices, A.mri_standard, A.mri_strong):
        aug = make()
        a = aug(x, y, torch.Generator().manual_seed(5))
        b = aug(x, y, torch.Generator().manual_seed(5))
        c = aug(x, y, torch.Generator().manual_seed(6))
        assert a[0].shape == x.shape and a[1].shape == y.shape and a[0].dtype == torch.float32
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.equal(a[0], c[0])
    # numpy generators and plain ints seed too; labels keep their dtype; the input is not modified
    before = x.clone()
    yl = y.long()
    p = A.msd_slices()(x, yl, np.random.default_rng(1))
    q = A.msd_slices()(x, yl, np.random.default_rng(1))
    assert p[1].dtype == torch.int64 and torch.equal(p[0], q[0]) and torch.equal(x, before)
    assert torch.equal(A.mri_standard()(x, 7), A.mri_standard()(x, 7))
    with pytest.raises(ValueError):
        A.mri_standard()(x, None)


@pytest.mark.parametrize("make", [A.ct_slices, A.msd_slices, A.mri_strong])
def test_label_follows_the_image(make):
    """A 5x5 marker off the centre: after the geometric steps the mask's centroid is the image's."""
    x = torch.zeros(32, 1, 64, 64)
    x[:, :, 18:23, 38:43] = 1.0
    y = (x > 0).float()
    xa, ya = _geometric_only(make())(x, y, torch.Generator().manual_seed(0))
    ii, jj = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    for xi, yi in zip(xa[:, 0], ya[:, 0]):
        assert float(yi.sum()) > 10
        ci = (float((xi * ii).sum() / xi.sum()), float((xi * jj).sum() / xi.sum()))
        cl = (float((yi * ii).sum() / yi.sum()), float((yi * jj).sum() / yi.sum()))
        assert abs(ci[0] - cl[0]) < 0.75 and abs(ci[1] - cl[1]) < 0.75
    # with the intensity steps too, the labelled pixels are the bright ones
    xf, yf = make()(x, y, torch.Generator().manual_seed(0))
    inside, outside = xf[yf > 0].mean(), xf[yf == 0].mean()
    assert float(inside) > float(outside) + 0.4


def test_ct_slices_zoom_flip_and_quarter_turns_match_the_old_code():
    """Old augment_slices: zoom log-uniform in ``zoom`` (isotropic), flip p 0.2, k*90° with p 0.3 for k in 0..3."""
    draws = _draws(A.ct_slices(zoom=(0.8, 1.25)), (1, 32, 32), 2000)
    rot90 = np.array([d[0][1] for d in draws])
    ks = np.array([d[0][4] for d in draws])[rot90]
    flips = np.array([d[1][1] for d in draws])
    zooms = np.array([d[2][2] for d in draws])
    assert all(d[2][3][0] == d[2][3][1] for d in draws)  # isotropic
    assert 0.8 - 1e-9 <= zooms.min() < 0.81 and 1.24 < zooms.max() <= 1.25 + 1e-9
    assert abs(float(np.median(np.log(zooms)))) < 0.02  # log-uniform: the median is 1
    assert abs(flips.mean() - 0.2) < 0.03
    assert abs(rot90.mean() - 0.3 * 0.75) < 0.03 and set(ks.tolist()) == {1, 2, 3}
    tumour = np.array([d[2][2] for d in _draws(A.ct_slices(zoom=(1 / 1.5, 1.5)), (1, 32, 32), 500)])
    assert 1 / 1.5 - 1e-9 <= tumour.min() < 0.7 and 1.45 < tumour.max() <= 1.5 + 1e-9


def test_zoom_acts_on_the_pixels():
    """A disk's area scales with the square of the drawn zoom (0.8-1.25 -> 0.64-1.56)."""
    yy, xx = np.mgrid[:96, :96]
    disk = torch.from_numpy(((yy - 48) ** 2 + (xx - 48) ** 2 < 15**2).astype(np.float32))
    disk = disk[None, None].repeat(200, 1, 1, 1)
    _, ya = _geometric_only(A.ct_slices())(disk, disk, torch.Generator().manual_seed(0))
    ratio = ya.sum((1, 2, 3)).numpy() / float(disk[0].sum())
    assert 0.6 < ratio.min() < 0.7 and 1.45 < ratio.max() < 1.62 and abs(float(np.median(ratio)) - 1.0) < 0.06


def test_mri_recipes_match_the_old_ranges():
    """Old augment: flip p 0.5, zoom uniform 0.85-1.15; old augment_strong: vertical flip p 0.2, zoom 0.7-1.3,
    ±90° with p 0.15 (here k = 1..3 with p 0.225: ±90° at 0.15)."""
    std = _draws(A.mri_standard(), (1, 32, 32), 2000)
    flips = np.array([d[0][1] for d in std])
    zooms = np.array([d[1][2] for d in std])
    assert abs(flips.mean() - 0.5) < 0.03
    assert 0.85 - 1e-9 <= zooms.min() < 0.86 and 1.14 < zooms.max() <= 1.15 + 1e-9 and abs(zooms.mean() - 1) < 0.01
    strong = _draws(A.mri_strong(), (1, 32, 32), 2000)
    vflip = np.array([d[1][1] for d in strong])
    turns = np.array([d[2][4] if d[2][1] else 0 for d in strong])
    zooms = np.array([d[3][2] for d in strong])
    assert abs(vflip.mean() - 0.2) < 0.03
    assert abs(np.isin(turns, (1, 3)).mean() - 0.15) < 0.025
    assert 0.7 - 1e-9 <= zooms.min() < 0.71 and 1.29 < zooms.max() <= 1.3 + 1e-9


def test_intensity_ranges():
    const = torch.full((400, 1, 32, 32), 0.5)
    out = A.msd_slices()(const, torch.zeros_like(const), torch.Generator().manual_seed(0))[0]
    means = out.mean((1, 2, 3)).numpy()
    # old _augment_2d: x * (1 ± 0.15) ± 0.1, noise sd 0.02
    assert 0.5 * 0.85 - 0.1 - 0.01 < means.min() < 0.35 and 0.65 < means.max() < 0.5 * 1.15 + 0.1 + 0.01
    assert 0.017 < float(out.std((2, 3)).median()) < 0.023
    for make in (A.ct_slices, A.mri_standard, A.mri_strong):
        o = make()(torch.rand(32, 1, 32, 32), torch.Generator().manual_seed(1))
        assert float(o.min()) >= 0.0 and float(o.max()) <= 1.0


def test_bias_field_strength_is_the_old_one():
    """Old augment_strong: x * (1 + 0.35 u f), f a smooth field in [-1, 1], u ~ U(0, 1): the largest excursion
    over a 96-px image had quantiles 10/50/90 % = 0.036 / 0.17 / 0.305 and never exceeded 0.35."""
    from monai.transforms import RandBiasField

    t = RandBiasField(prob=1.0, degree=3, coeff_range=(-A.BIAS_COEFF, A.BIAS_COEFF))
    t.set_random_state(0)
    ex = [float((A._plain(t(torch.ones(1, 96, 96))) - 1).abs().max()) for _ in range(300)]
    q50, q90 = np.quantile(ex, [0.5, 0.9])
    assert 0.12 < q50 < 0.24 and 0.22 < q90 < 0.36


def test_ultrasound_patches_flip_shift_and_gain():
    """Old steatosis trainer: horizontal flip p 0.5, shift -3..3 px (reflect), gain N(1, 0.05) on the raw channel."""
    n = 600
    x = torch.full((n, 2, 28, 28), 0.5)
    x[:, 1] = 0.0
    x[:, 1, 10, 6] = 1.0  # a marker in the channel without gain
    out = A.ultrasound_patches(gain_channels=(0,))(x, torch.Generator().manual_seed(0))
    gains = out[:, 0].mean((1, 2)).numpy() / 0.5
    assert torch.allclose(out[:, 0], out[:, 0, :1, :1].expand(-1, 28, 28))  # gain is one factor per patch
    assert 1 - 0.0867 <= gains.min() and gains.max() <= 1 + 0.0867 and abs(gains.std() - 0.05) < 0.006
    rows, cols, mirrored = [], [], 0
    for p in out[:, 1]:
        r, c = np.unravel_index(int(p.argmax()), p.shape)
        assert float(p.sum()) == pytest.approx(1.0)
        if abs(c - 6) > 3:
            c, mirrored = 27 - c, mirrored + 1
        rows.append(r - 10)
        cols.append(c - 6)
    assert set(rows) == set(range(-3, 4)) and set(cols) == set(range(-3, 4))
    assert abs(mirrored / n - 0.5) < 0.06
    none = A.ultrasound_patches(gain_channels=None)(x, torch.Generator().manual_seed(0))
    assert torch.allclose(none[:, 0], torch.full_like(none[:, 0], 0.5))


def test_crop_sets_air_outside_a_box_around_the_label():
    x = torch.full((40, 1, 64, 64), 0.6)
    y = torch.zeros(40, 1, 64, 64)
    y[:, :, 30:40, 30:40] = 1.0
    aug = A.Augmentation(lambda size: [A._air_canvas_crop(1.0, (0.3, 0.8))], "crop")
    xa, ya = aug(x, y, torch.Generator().manual_seed(0))
    for xi, yi in zip(xa[:, 0], ya[:, 0]):
        kept = xi > 0
        rows, cols = np.nonzero(kept.numpy())
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert int(kept.sum()) == h * w and 0.3 * 64 - 1 <= h <= 0.8 * 64 and 0.3 * 64 - 1 <= w <= 0.8 * 64
        assert float(yi.sum()) > 0 and bool((yi[~kept] == 0).all())
    assert float(xa.max()) == pytest.approx(0.6)


def test_steatosis_texture_training_is_deterministic_with_a_seed():
    """The texture network's augmentation is seeded from the trainer's generator: same seed, same weights."""
    from napari_medai.steatosis.train import train_net

    rng = np.random.default_rng(0)
    crops = np.concatenate([rng.normal(60, 10, (8, 28, 28)), rng.normal(160, 10, (8, 28, 28))]).clip(0, 255)
    y = np.repeat([0, 3], 8)
    a = train_net(crops, y, "cnn", {"width": 4}, "raw", epochs=2, batch=8, seed=3)
    b = train_net(crops, y, "cnn", {"width": 4}, "raw", epochs=2, batch=8, seed=3)
    c = train_net(crops, y, "cnn", {"width": 4}, "raw", epochs=2, batch=8, seed=4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
