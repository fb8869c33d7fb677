"""The one definition of the domain-shift sets: cell size, matched windows, Reinhard normalisation."""
from __future__ import annotations

import numpy as np
import pytest

from wbcstudy.data import shift as S


def _disc(size: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2


def _smear(size: int = 256, r: float = 60.0) -> np.ndarray:
    """A pale pink background, a purple white cell of radius ``r`` at the centre and two red cells, one touching it."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = (236, 214, 205)  # background
    for cx, cy in ((40, 40), (size / 2 + r + 18, size / 2)):  # red cells: hue near 0
        img[_disc(size, cx, cy, 22)] = (200, 110, 110)
    img[_disc(size, size / 2, size / 2, r)] = (120, 80, 170)  # the white cell: purple (OpenCV hue ~ 135)
    return img


def test_pbc_cell_mask_finds_the_white_cell_and_not_the_red_ones() -> None:
    img = _smear(r=60.0)
    mask = S.pbc_cell_mask(img)
    assert mask[128, 128] and not mask[40, 40] and not mask[128, 128 + 60 + 18]
    assert S.mask_fraction(mask) == pytest.approx(120 / 256, abs=0.02)  # diameter over width
    smaller = S.mask_fraction(S.pbc_cell_mask(_smear(r=40.0)))
    assert smaller == pytest.approx(80 / 256, abs=0.02)
    with pytest.raises(S.ShiftSetError, match="uint8 HxWx3"):
        S.pbc_cell_mask(img[..., 0])


def test_mask_fraction_is_the_equivalent_diameter_over_the_width() -> None:
    assert S.mask_fraction(_disc(200, 100, 100, 50)) == pytest.approx(0.5, abs=0.01)
    square = np.zeros((100, 100), bool)
    square[:50, :50] = True  # area 2,500: a disc of that area has diameter 56.4
    assert S.mask_fraction(square) == pytest.approx(np.sqrt(4 * 2500 / np.pi) / 100)


def test_window_fills_outside_the_image_with_the_border_colour() -> None:
    img = np.zeros((10, 10, 3), np.uint8)
    img[:] = (50, 60, 70)
    img[4:6, 4:6] = 255
    out, real = S.window(img, 5, 5, 20)  # twice the image: a 5-px frame of fill around it
    assert out.shape == (20, 20, 3) and real.sum() == 100
    assert (out[0, 0] == (50, 60, 70)).all() and (out[5:15, 5:15] == img).all()
    inner, real = S.window(img, 5, 5, 4)  # inside: the exact pixels
    assert real.all() and (inner == img[3:7, 3:7]).all()


def test_reinhard_gives_the_target_statistics_over_the_real_pixels() -> None:
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal((200, 190, 90), 20, (64, 64, 3)), 0, 255).astype(np.uint8)  # a yellow stain
    valid = np.zeros((64, 64), bool)
    valid[8:56, 8:56] = True
    img[~valid] = 0  # a black fill that must not enter the statistics
    target_mean, target_std = (70.0, 15.0, -5.0), (12.0, 6.0, 8.0)
    out = S.reinhard(img, target_mean, target_std, valid)
    mean, std = S.lab_statistics(out, valid)
    np.testing.assert_allclose(mean, target_mean, atol=1.5)
    np.testing.assert_allclose(std, target_std, rtol=0.15)
    before, _ = S.lab_statistics(img, valid)
    assert before[2] > 40  # it was yellow (b* high) ...
    assert mean[2] < 0  # ... and is not now


def _reference(fraction: float) -> S.PbcReference:
    return S.PbcReference(fraction, np.array([fraction]), (70.0, 12.0, -4.0), (15.0, 8.0, 9.0), ("x",))


def test_crop_fraction_scales_with_the_crop_window() -> None:
    ref = _reference(0.5)
    assert ref.crop_fraction("none") == 0.5 and ref.crop_fraction("wnet") == pytest.approx(0.5 * 256 / 200)
    with pytest.raises(S.ShiftSetError, match="unknown PBC crop"):
        ref.crop_fraction("centre100")


def test_shift_set_variants_hold_the_same_cells_and_match_the_scale() -> None:
    ref = _reference(0.4)  # a PBC cell spanning 0.4 of the window
    as_is = S.shift_set("zheng2", 32, "as_is", limit=20, reference=ref)
    matched = S.shift_set("zheng2", 32, "matched", limit=20, reference=ref)
    norm = S.shift_set("zheng2", 32, "stainnorm", limit=20, reference=ref)
    assert as_is.images.shape == matched.images.shape == norm.images.shape == (len(as_is.labels), 32, 32, 3)
    assert 15 <= len(as_is.labels) <= 25
    assert (as_is.labels == matched.labels).all() and (matched.labels == norm.labels).all()
    assert list(as_is.rows["path"]) == list(norm.rows["path"])
    # Zheng 2's cells span about half the image: the matched window is wider by fraction / 0.4
    assert 0.45 < as_is.fraction < 0.6 and matched.window_scale == pytest.approx(as_is.fraction / 0.4)
    # the normalised cells carry the reference's colour, the others do not
    lab_b = lambda images: np.mean([S.lab_statistics(im)[0][2] for im in images])  # noqa: E731
    assert abs(lab_b(norm.images) - (-4.0)) < abs(lab_b(matched.images) - (-4.0))
    with pytest.raises(S.ShiftSetError, match="unknown shift-set variant"):
        S.shift_set("zheng2", 32, "stain", reference=ref)
    with pytest.raises(S.ShiftSetError, match="unknown shift set 'lisc'"):
        S.shift_set("lisc", 32, reference=ref)


def test_bccd_matched_window_is_one_size_for_the_set() -> None:
    ref = _reference(0.5)
    matched = S.shift_set("bccd", 32, "matched", limit=12, reference=ref)
    w = (matched.rows["xmax"] - matched.rows["xmin"]).to_numpy(float)
    h = (matched.rows["ymax"] - matched.rows["ymin"]).to_numpy(float)
    # a box fills its as-is square (about 0.95 of it); the matched window is about twice as wide
    assert 0.85 < matched.fraction < 1.0 and 1.6 < matched.window_scale < 2.2
    # one window for the set: the median box's geometric-mean side over PBC's fraction (of all usable boxes)
    rows = S.set_rows("bccd")
    median_side = np.median(np.sqrt((rows["xmax"] - rows["xmin"]) * (rows["ymax"] - rows["ymin"])))
    assert matched.window_side == pytest.approx(median_side / 0.5)
    assert len(np.unique(np.round(w * h))) > 1  # while the boxes differ in size


def test_segmentation_check_needs_experts_masks() -> None:
    with pytest.raises(S.ShiftSetError, match="no mask_path column"):
        S.segmentation_check("bccd")
