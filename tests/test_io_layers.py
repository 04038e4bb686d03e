"""io/layers.py and io/planes.py: the one home of plane / shape / grey / ROI conversions (no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medai.errors import MedaiError
from napari_medai.io.layers import current_plane, plane_indices, shape_to_roi, shape_vertices
from napari_medai.io.planes import parse_xywh, to_gray


class FakeLayer:
    """napari's layer API in miniature: world = data * scale + translate."""

    def __init__(self, data, scale=None, translate=None, rgb=False, shape_type=None, selected=()):
        self.data = data
        self.multiscale = False
        self.rgb = rgb
        nd = np.asarray(data[0]).shape[-1] if shape_type else np.ndim(data) - (1 if rgb else 0)
        self.scale = np.ones(nd) if scale is None else np.asarray(scale, float)
        self.translate = np.zeros(nd) if translate is None else np.asarray(translate, float)
        self.shape_type = shape_type
        self.selected_data = set(selected)

    def world_to_data(self, p):
        return (np.asarray(p, float) - self.translate) / self.scale

    def data_to_world(self, p):
        return np.asarray(p, float) * self.scale + self.translate


def test_current_plane_of_a_scaled_volume():
    vol = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    layer = FakeLayer(vol, scale=(2.5, 1, 1), translate=(10, 0, 0))
    assert plane_indices(layer, (15.2, 0, 0)) == (2,)
    plane, index = current_plane(layer, (99, 0, 0))  # clipped to the last slice
    assert index == (4,) and np.array_equal(plane, vol[4])
    assert current_plane(FakeLayer(vol[0]), (0, 0))[1] == ()
    rgb = FakeLayer(np.zeros((3, 8, 9, 3)), rgb=True)
    assert current_plane(rgb, (1, 0, 0))[0].shape == (8, 9, 3)


def test_rectangle_and_polygon_from_a_shapes_layer_in_image_pixels():
    image = FakeLayer(np.zeros((40, 50)), scale=(0.5, 0.5))
    rect = [[2.0, 3.0], [2.0, 8.0], [6.0, 8.0], [6.0, 3.0]]  # world units: rows 4-12, cols 6-16 in pixels
    shapes = FakeLayer([np.array(rect)], shape_type=["rectangle"])
    assert shape_to_roi(shapes, image) == (6, 4, 10, 8)
    tri = FakeLayer([np.array([[0.0, 0.0], [0.0, 10.0], [10.0, 0.0]])], shape_type=["polygon"])
    mask = shape_to_roi(tri, image, frame_shape=(40, 50))
    assert mask.dtype == bool and mask[1, 1] and not mask[19, 19]
    with pytest.raises(MedaiError, match="Shapes layer"):
        shape_to_roi(FakeLayer([], shape_type=[]), image)


def test_rectangle_on_a_scaled_layer_keeps_its_whole_pixel_size():
    """Corners drawn on a layer scaled by 0.3 come back with float noise (28 -> 28.000000000000004 px)."""
    image = FakeLayer(np.zeros((434, 636)), scale=(0.3, 0.3))
    y, x, h, w = 28, 14, 28, 43  # 28 * 0.3 / 0.3 != 28, 14 * 0.3 / 0.3 != 14
    rect = np.array([[y, x], [y, x + w], [y + h, x + w], [y + h, x]], float) * 0.3
    shapes = FakeLayer([rect], shape_type=["rectangle"])
    _, rc = shape_vertices(shapes, image)
    assert not np.array_equal(rc, np.round(rc))  # the float noise this guards against is really there
    assert shape_to_roi(shapes, image) == (x, y, w, h)


def test_selected_shape_wins_over_the_last_one():
    image = FakeLayer(np.zeros((40, 50)))
    a = np.array([[1.0, 1.0], [1.0, 5.0], [5.0, 5.0], [5.0, 1.0]])
    shapes = FakeLayer([a, a + 10], shape_type=["rectangle"] * 2, selected={0})
    assert shape_to_roi(shapes, image) == (1, 1, 4, 4)


def test_to_gray_luminance_keeps_grey_levels_of_grey_rgb():
    grey = np.arange(60, dtype=np.uint8).reshape(6, 10)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    np.testing.assert_allclose(to_gray(rgb), grey, atol=1e-9)
    colour = np.zeros((6, 10, 3), np.uint8)
    colour[..., 1] = 100
    np.testing.assert_allclose(to_gray(colour), 58.7)
    assert to_gray(grey[None], squeeze=True, dtype=np.float32).dtype == np.float32
    with pytest.raises(MedaiError, match="3-D"):
        to_gray(np.zeros((5, 6, 7)), hint="pick a plane")


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "1,2,0,4", "1,2,nan,4"])
def test_parse_xywh_refuses(text):
    with pytest.raises(MedaiError, match="X,Y,W,H|empty|NaN"):
        parse_xywh(text)


def test_parse_xywh_accepts_separators():
    assert parse_xywh("10, 20;30 40") == (10.0, 20.0, 30.0, 40.0)
    assert parse_xywh((1, 2, 3, 4)) == (1.0, 2.0, 3.0, 4.0)


def test_canonical_orientation_lives_in_geometry_and_round_trips():
    from napari_medai.io.geometry import Geometry, canonical_orientation, from_canonical, to_canonical

    rng = np.random.default_rng(0)
    for _ in range(10):
        perm = rng.permutation(3)
        signs = rng.choice([-1.0, 1.0], 3)
        affine = np.eye(4)
        affine[:3, :3] = np.eye(3)[:, perm] * signs * rng.uniform(0.5, 3, 3)
        p, f = canonical_orientation(affine, 3)
        vol = rng.random((4, 5, 6))
        np.testing.assert_array_equal(from_canonical(to_canonical(vol, p, f), p, f), vol)
        g = Geometry.from_affine_ras(affine)
        assert g.canonical_orientation() == (p, f)
    assert canonical_orientation(None, 3) == ((0, 1, 2), ())


def test_reorder_with_affine_keeps_every_voxel_in_place():
    """The same image in another voxel order: a voxel's value and its RAS position travel together, and the
    canonical order of the reordered copy undoes the reordering."""
    from napari_medai.io.geometry import canonical_orientation, reorder_with_affine, to_canonical

    rng = np.random.default_rng(1)
    vol = rng.random((4, 5, 6))
    affine = np.diag([3.0, -0.8, 0.7, 1.0])
    affine[:3, 3] = (10.0, -20.0, 5.0)
    stored, moved = reorder_with_affine(vol, affine, (2, 0, 1), (0, 2))
    assert stored.shape == (6, 4, 5)
    for index in [(0, 0, 0), (5, 3, 4), (2, 1, 3)]:
        k, i, j = index  # stored[k, i, j] = vol[i, 4 - j, 5 - k]: axes (2, 0, 1), then axes 0 and 2 flipped
        source = (i, 4 - j, 5 - k)
        assert stored[index] == vol[source]
        np.testing.assert_allclose(moved @ (*index, 1.0), affine @ (*source, 1.0))
    p, f = canonical_orientation(moved, 3)
    np.testing.assert_array_equal(to_canonical(stored, p, f), to_canonical(vol, *canonical_orientation(affine, 3)))
