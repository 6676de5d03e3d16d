"""The synthetic tile is deterministic and as hard to export as a model's output."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from darts_export.synthetic import make_synthetic_tile


def test_same_seed_same_tile_and_inputs_do_not_change_the_prediction() -> None:
    tile = make_synthetic_tile(512, seed=5)
    xr.testing.assert_identical(tile, make_synthetic_tile(512, seed=5))
    bare = make_synthetic_tile(512, seed=5, with_inputs=False)
    xr.testing.assert_identical(tile[list(bare.data_vars)], bare)
    assert not np.array_equal(tile["red"].values, make_synthetic_tile(512, seed=6)["red"].values, equal_nan=True)


def test_probabilities_are_noisy_objects_sized_and_the_swath_ragged() -> None:
    tile = make_synthetic_tile(1024, seed=0, n_objects=40)
    prob = tile["probabilities"].values
    valid = tile["extent"].values.astype(bool)
    assert np.isnan(prob[~valid]).all()
    assert np.isfinite(prob[valid]).all()
    assert 0.65 < valid.mean() < 0.75
    # neighbouring background pixels differ by the per-pixel noise: σ √2 for σ ≈ 0.006
    background = valid[:, 1:] & valid[:, :-1] & (prob[:, 1:] < 0.25)
    step = np.diff(prob, axis=1)[background]
    assert 0.006 < step.std() < 0.012
    labels, count = ndimage.label(tile["binarized_segmentation"].values, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    assert count == 40
    assert sizes.min() >= 32
    assert sizes.max() <= 5300
    assert not tile["binarized_segmentation"].values[~valid].any()


def test_input_bands_cover_the_swath_with_plausible_values() -> None:
    tile = make_synthetic_tile(256, seed=1)
    valid = tile["extent"].values.astype(bool)
    for name in ("red", "green", "blue", "nir", "slope", "relative_elevation"):
        values = tile[name].values
        assert values.dtype == np.float32
        assert np.isnan(values[~valid]).all()
        assert np.isfinite(values[valid]).all()
    for name in ("red", "green", "blue", "nir"):
        assert np.nanmin(tile[name].values) > 0
    assert np.nanmax(tile["nir"].values) < 0.6
    for name in ("tc_brightness", "tc_greenness", "tc_wetness"):
        assert (tile[name].values[~valid] == 0).all()
        assert (tile[name].values[valid] > 0).all()


def test_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        make_synthetic_tile(8)
