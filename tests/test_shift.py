"""Semantic-shift metrics on constructed states with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from safety_probe.shift import (
    cka_scores,
    derangement,
    linear_cka,
    mismatched_cosine,
    pair_cosine,
    semantic_shift,
)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n", [2, 3, 7, 50])
def test_derangement_has_no_fixed_point(n):
    for seed in range(20):
        perm = derangement(n, seed)
        assert sorted(perm) == list(range(n))
        assert not np.any(perm == np.arange(n))
    np.testing.assert_array_equal(derangement(n, 3), derangement(n, 3))
    with pytest.raises(ValueError):
        derangement(1)


def test_cosine_of_identical_states_is_one():
    x = _randn(4, 3, 8)
    np.testing.assert_allclose(pair_cosine(x, x).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(pair_cosine(x, -2 * x).numpy(), -1.0, atol=1e-12)


def test_linear_cka_invariances_and_independence():
    x = _randn(100, 16, seed=1).double()
    rotation, _ = torch.linalg.qr(_randn(16, 16, seed=2).double())
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, x @ rotation) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, 3.0 * x + 5.0) == pytest.approx(1.0, abs=1e-10)  # isotropic scale and offset
    assert linear_cka(_randn(400, 4, seed=3), _randn(400, 4, seed=4)) < 0.1


def test_linear_cka_matches_the_feature_space_formula():
    x, y = _randn(30, 6, seed=5).double(), _randn(30, 9, seed=6).double()
    y = y + x @ _randn(6, 9, seed=7).double()
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = (xc.T @ yc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
    assert linear_cka(x, y) == pytest.approx(float(expected), rel=1e-10)


def test_cka_scores_band_contains_estimate():
    x = _randn(40, 3, 8, seed=8)
    y = x + 0.5 * _randn(40, 3, 8, seed=9)
    s = cka_scores(x, y, layers=[5, 6, 7])
    assert s.layers == [5, 6, 7] and s.name == "cka"
    assert np.all(s.lower < s.mean) and np.all(s.mean < s.upper)
    np.testing.assert_allclose(cka_scores(x, x).mean, 1.0, atol=1e-10)


def _paired_states(
    n: int = 30, n_layers: int = 4, d: int = 32, shared: float = 0.0
) -> dict[str, torch.Tensor]:
    """Each pair shares its own random content; layer 2 of the image run loses it (pure noise there)."""
    content = _randn(n, 1, d, seed=10).expand(n, n_layers, d)
    common = shared * _randn(1, n_layers, d, seed=11)
    image = content + 0.3 * _randn(n, n_layers, d, seed=12)
    image[:, 2] = _randn(n, d, seed=13)
    caption = content + 0.3 * _randn(n, n_layers, d, seed=14)
    return {
        "image_mean": image + common,
        "caption_mean": caption + common,
        "image_last": caption + common,
        "caption_last": caption + common,
    }


def test_semantic_shift_matched_vs_mismatched():
    out = semantic_shift(_paired_states())
    assert set(out) == {"cos_matched", "cos_mismatched", "cos_centred", "cka", "cos_last"}
    matched, mismatched = out["cos_matched"].mean, out["cos_mismatched"].mean
    assert np.all(matched[[0, 1, 3]] > 0.85)
    assert abs(matched[2]) < 0.15  # the image lost its content at layer 2
    assert np.all(np.abs(mismatched) < 0.15)
    assert out["cka"].mean[2] < 0.6 < out["cka"].mean[0]
    np.testing.assert_allclose(out["cos_last"].mean, 1.0, atol=1e-10)
    assert out["cos_matched"].per_pair.shape == (30, 4)


def test_mismatched_cosine_derangement_option():
    x = _randn(10, 2, 8)
    np.testing.assert_allclose(mismatched_cosine(x, x, "all").numpy(), mismatched_cosine(x, x).numpy())
    perm = derangement(10, seed=4)
    expected = pair_cosine(x, x[torch.from_numpy(perm)])
    np.testing.assert_allclose(mismatched_cosine(x, x, "derangement", seed=4).numpy(), expected.numpy())
    with pytest.raises(ValueError, match="mismatch"):
        mismatched_cosine(x, x, "shuffle")


def test_centring_removes_a_shared_component():
    out = semantic_shift(_paired_states(shared=50.0))
    # A large component shared by every input drives raw cosines, matched or not, towards 1 ...
    assert np.all(out["cos_mismatched"].mean > 0.9)
    # ... while the centred cosine keeps only pair-specific agreement.
    centred = out["cos_centred"].mean
    assert np.all(centred[[0, 1, 3]] > 0.85) and abs(centred[2]) < 0.15


def test_semantic_shift_input_errors():
    states = _paired_states()
    with pytest.raises(ValueError, match="caption_mean"):
        semantic_shift({**states, "caption_mean": states["caption_mean"][:, :3]})
    with pytest.raises(KeyError, match="image_mean"):
        semantic_shift({"caption_mean": states["caption_mean"]})
    with pytest.raises(KeyError, match="image_last"):
        semantic_shift({k: states[k] for k in ("image_mean", "caption_mean", "image_last")})
    without_last = semantic_shift({k: states[k] for k in ("image_mean", "caption_mean")})
    assert "cos_last" not in without_last
    with pytest.raises(ValueError, match="layer indices"):
        semantic_shift(states, layers=[0, 1])
