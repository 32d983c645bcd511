"""Semantic-shift metrics on constructed states with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from safety_probe.analysis.shift import (
    MIN_PAIRS,
    cka_scores,
    debiased_cka,
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
    out = cka_scores(x, y, layers=[5, 6, 7])
    assert set(out) == {"cka", "cka_debiased", "cka_null", "cka_p", "cka_debiased_null", "cka_debiased_p"}
    for name, s in out.items():
        assert s.layers == [5, 6, 7] and s.name == name
        assert np.all(s.lower <= s.mean) and np.all(s.mean <= s.upper)
    assert np.all(out["cka"].lower < out["cka"].mean)
    np.testing.assert_allclose(cka_scores(x, x)["cka"].mean, 1.0, atol=1e-10)
    np.testing.assert_allclose(cka_scores(x, x)["cka_debiased"].mean, 1.0, atol=1e-10)
    assert set(cka_scores(x, y, n_perm=0)) == {"cka", "cka_debiased"}


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
    result = semantic_shift(_paired_states())
    out = result.scores
    assert set(out) == set(MIN_PAIRS) and result.skipped == {}
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
    out = semantic_shift(_paired_states(shared=50.0)).scores
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
    assert "cos_last" not in without_last.scores and "cos_last" not in without_last.skipped
    with pytest.raises(ValueError, match="layer indices"):
        semantic_shift(states, layers=[0, 1])


def _anisotropic(n: int, d: int, n_layers: int, seed: int) -> torch.Tensor:
    """``[n, L, d]`` Gaussian states whose k-th feature has scale k^-1/2, a slowly decaying spectrum."""
    return _randn(n, n_layers, d, seed=seed).double() * torch.arange(1, d + 1).double() ** -0.5


def test_cka_of_independent_wide_states_is_biased_and_the_debiased_one_and_null_are_not():
    # 20 layers = 20 independent draws of the design, so the p-values can be checked as a sample.
    image, caption = _anisotropic(60, 2000, 20, seed=20), _anisotropic(60, 2000, 20, seed=21)
    out = cka_scores(image, caption)
    assert np.all(out["cka"].mean > 0.3)  # d >> n: independent states look similar to raw linear CKA
    # Over 200 simulations of one layer the debiased CKA has mean -0.002 and sd 0.022 (|.| < 0.07 in all).
    assert np.all(np.abs(out["cka_debiased"].mean) < 0.08)
    # The null sits where the raw CKA is, and the p-values are uniform: none is systematically small.
    assert abs(out["cka_null"].mean.mean() - out["cka"].mean.mean()) < 0.01
    for name in ("cka", "cka_debiased"):
        p = out[f"{name}_p"].mean
        assert np.median(p) > 0.2 and np.sum(p <= 0.05) <= 3, name  # 1 expected below 0.05
    # The debiased statistic's own null sits where it is (near 0), far below the raw CKA's null.
    assert abs(out["cka_debiased_null"].mean.mean() - out["cka_debiased"].mean.mean()) < 0.02
    assert np.all(out["cka_debiased_null"].upper < out["cka_null"].lower)


def test_cka_of_dependent_wide_states_is_significant_and_debiased_near_one():
    image = _anisotropic(60, 2000, 2, seed=22)
    rotation, _ = torch.linalg.qr(_randn(2000, 2000, seed=23).double())
    caption = image @ rotation + 0.01 * _randn(60, 2, 2000, seed=24).double()
    out = cka_scores(image, caption, n_perm=199)
    np.testing.assert_allclose(out["cka_p"].mean, 1 / 200)  # no re-pairing reaches the observed CKA
    np.testing.assert_allclose(out["cka_debiased_p"].mean, 1 / 200)
    assert np.all(out["cka_p"].lower > 0) and np.all(out["cka_p"].upper < 0.05)
    assert np.all(out["cka_debiased"].mean > 0.95)
    assert np.all(out["cka_null"].upper < out["cka"].mean)
    assert np.all(out["cka_debiased_null"].upper < out["cka_debiased"].mean)


def test_the_debiased_null_is_the_debiased_cka_of_each_re_pairing():
    from safety_probe.analysis.shift import _gram, _repaired_cka

    x, y = _randn(15, 1, 40, seed=30)[:, 0] + 2, _randn(15, 1, 30, seed=31)[:, 0]
    y = y + x @ _randn(40, 30, seed=32) * 0.2
    perms = np.stack([np.arange(15), *(np.random.default_rng(5).permutation(15) for _ in range(8))])
    raw, debiased = _repaired_cka(_gram(x), _gram(y), perms)
    for p, r, d in zip(perms, raw, debiased):
        assert r == pytest.approx(linear_cka(x, y[p]), rel=1e-5)
        assert d == pytest.approx(debiased_cka(x, y[p]), abs=1e-5)


def _unbiased_hsic_reference(k: np.ndarray, l: np.ndarray) -> float:
    """HSIC₁ of Song et al. (2012), written from its definition with explicit sums."""
    n = k.shape[0]
    k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    trace = sum(k[i, j] * l[j, i] for i in range(n) for j in range(n))
    totals = k.sum() * l.sum() / ((n - 1) * (n - 2))
    cross = sum(k[i, j] * l[j, m] for i in range(n) for j in range(n) for m in range(n))
    return (trace + totals - 2 * cross / (n - 2)) / (n * (n - 3))


def test_debiased_cka_matches_the_unbiased_hsic_definition():
    x, y = _randn(9, 2, 5, seed=25).double(), _randn(9, 2, 7, seed=26).double()
    y[:, 1] += x[:, 1] @ _randn(5, 7, seed=27).double()
    out = cka_scores(x, y, n_perm=0)["cka_debiased"]
    for layer in range(2):
        k, l = (m[:, layer].numpy() @ m[:, layer].numpy().T for m in (x, y))
        expected = _unbiased_hsic_reference(k, l) / np.sqrt(
            _unbiased_hsic_reference(k, k) * _unbiased_hsic_reference(l, l)
        )
        assert out.mean[layer] == pytest.approx(expected, rel=1e-10)
        assert debiased_cka(x[:, layer], y[:, layer]) == pytest.approx(expected, rel=1e-10)
    # The jackknife's leave-one-out values are the estimator on the n - 1 remaining pairs.
    loo = [debiased_cka(torch.cat([x[:k], x[k + 1 :]])[:, 1], torch.cat([y[:k], y[k + 1 :]])[:, 1]) for k in range(9)]
    se = np.sqrt(8 / 9 * np.sum((np.array(loo) - np.mean(loo)) ** 2))
    assert out.upper[1] - out.mean[1] == pytest.approx(1.96 * se, rel=1e-8)


def test_cka_is_linear_cka_with_a_leave_one_out_band():
    x = _randn(12, 2, 8, seed=8)
    y = x + 0.5 * _randn(12, 2, 8, seed=9)
    s = cka_scores(x, y)["cka"]
    for layer in range(2):
        assert s.mean[layer] == pytest.approx(linear_cka(x[:, layer], y[:, layer]), rel=1e-12)
        loo = np.array([linear_cka(torch.cat([x[:k], x[k + 1 :]])[:, layer], torch.cat([y[:k], y[k + 1 :]])[:, layer])
                        for k in range(12)])
        se = np.sqrt(11 / 12 * np.sum((loo - loo.mean()) ** 2))
        assert s.upper[layer] - s.mean[layer] == pytest.approx(1.96 * se, rel=1e-8)


def test_permutation_null_is_seeded_and_counts_the_observed():
    x, y = _randn(12, 2, 30, seed=28), _randn(12, 2, 30, seed=29)
    a, b = cka_scores(x, y, n_perm=50, seed=3), cka_scores(x, y, n_perm=50, seed=3)
    for name in ("cka", "cka_debiased"):
        np.testing.assert_array_equal(a[f"{name}_null"].mean, b[f"{name}_null"].mean)
        assert not np.array_equal(a[f"{name}_null"].mean, cka_scores(x, y, n_perm=50, seed=4)[f"{name}_null"].mean)
        assert np.all(a[f"{name}_p"].mean >= 1 / 51)  # the +1 correction: never 0
    with pytest.raises(ValueError, match="n_perm"):
        cka_scores(x, y, n_perm=-1)


def test_cos_gap_is_the_paired_difference():
    out = semantic_shift(_paired_states()).scores
    gap = out["cos_gap"]
    np.testing.assert_allclose(gap.mean, out["cos_matched"].mean - out["cos_mismatched"].mean, atol=1e-12)
    np.testing.assert_allclose(gap.per_pair, out["cos_matched"].per_pair - out["cos_mismatched"].per_pair)
    assert np.all(gap.lower <= gap.mean) and np.all(gap.mean <= gap.upper)
    assert np.all(gap.per_pair.min(0) <= gap.lower) and np.all(gap.upper <= gap.per_pair.max(0))
    assert np.all(gap.lower[[0, 1, 3]] > 0.5)  # pairs that share content are far above the baseline


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_few_pairs_give_what_they_can_and_name_the_rest(n):
    states = {k: v[:n] for k, v in _paired_states().items()}
    result = semantic_shift(states)
    assert set(result.scores) == {m for m, need in MIN_PAIRS.items() if n >= need}
    assert set(result.skipped) == {m for m, need in MIN_PAIRS.items() if n < need}
    assert all(why == f"needs at least {MIN_PAIRS[m]} pairs, got {n}" for m, why in result.skipped.items())
    full = semantic_shift(_paired_states()).scores
    np.testing.assert_allclose(result.scores["cos_matched"].mean, full["cos_matched"].per_pair[:n].mean(0))
    off = semantic_shift(_paired_states(), n_perm=0)
    assert off.skipped == dict.fromkeys(("cka_null", "cka_p", "cka_debiased_null", "cka_debiased_p"),
                                        "turned off (n_perm=0)")


def test_constant_states_have_no_cka_and_no_p_value():
    out = cka_scores(torch.ones(6, 2, 4), _randn(6, 2, 4))
    assert all(np.all(np.isnan(s.mean)) for s in out.values())
