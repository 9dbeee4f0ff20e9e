"""The utility a Flower server pools from the sites' counts, against the utility of the predictions themselves.

A site sends :func:`score_histograms` of its test predictions (counts of fixed
shapes), never the predictions or labels; :func:`utility_from_histograms` pools
them. The reference is :func:`utility_from_predictions` (MONAI's ROC AUC) on the
pooled probabilities and labels, what the in-process engine reports.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsecure.fl.evaluation import (
    SCORE_BINS,
    auc_error_bound,
    score_bins,
    score_histograms,
    utility_from_histograms,
    utility_from_predictions,
)

TOLERANCE = 1e-3  # what the pooled AUC from counts must stay within on model-like scores


def _exact(sites: list[tuple[torch.Tensor, torch.Tensor]]):
    return utility_from_predictions(torch.cat([p for p, _ in sites]), torch.cat([y for _, y in sites]))


def _counts(sites: list[tuple[torch.Tensor, torch.Tensor]], n_classes: int):
    return [score_histograms(p, y, n_classes) for p, y in sites]


def _model_like_sites(seed: int, n_classes: int, sizes: list[int], spread: float, separation: float):
    """Sites' float32 softmax outputs of logits N(separation * onehot(label), spread^2), as a model's."""
    rng = np.random.default_rng(seed)
    sites = []
    for n in sizes:
        labels = rng.integers(0, n_classes, n)
        logits = rng.normal(0.0, spread, (n, n_classes)) + separation * np.eye(n_classes)[labels]
        probabilities = torch.softmax(torch.from_numpy(logits).float(), dim=1)  # float32, as a site's model gives
        sites.append((probabilities, torch.from_numpy(labels)))
    return sites


# Scores with many ties, exact 0s and 1s, subnormals and near-equal values: anything a model could output.
_score = st.one_of(
    st.floats(0.0, 1.0, width=32),
    st.floats(0.0, 1.0),
    st.sampled_from([0.0, 1.0, 0.5, 1e-45, 1e-30, 1 - 2**-24, 0.5 + 2**-24]),
)


@st.composite
def _any_sites(draw):
    n_classes = draw(st.integers(2, 4))
    sites = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 25))
        rows = draw(st.lists(st.lists(_score, min_size=n_classes, max_size=n_classes), min_size=n, max_size=n))
        labels = draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n))
        scores = torch.tensor(rows, dtype=torch.float64).reshape(n, n_classes)
        sites.append((scores, torch.tensor(labels, dtype=torch.int64)))
    return n_classes, sites


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=200, deadline=None)
@given(_any_sites())
def test_a_sites_own_counts_give_exactly_its_utility(drawn):
    n_classes, sites = drawn
    for probabilities, labels in sites:
        exact = utility_from_predictions(probabilities, labels)
        from_counts = utility_from_histograms([score_histograms(probabilities, labels, n_classes)])
        assert from_counts.n == exact.n and _same(from_counts.accuracy, exact.accuracy)
        assert (from_counts.auc is None) == (exact.auc is None)
        if exact.auc is not None:
            assert from_counts.auc == pytest.approx(exact.auc, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(_any_sites())
def test_the_pooled_auc_from_counts_is_within_its_stated_bound_for_any_scores(drawn):
    # The bound (half the cross-site opposite-class pairs that share a bin, over all pairs) holds for any
    # scores, because bins are monotone in the score: only pairs within one bin can be misordered.
    n_classes, sites = drawn
    exact, counts = _exact(sites), _counts(sites, n_classes)
    pooled = utility_from_histograms(counts)
    assert pooled.n == exact.n and _same(pooled.accuracy, exact.accuracy)
    assert (pooled.auc is None) == (exact.auc is None)
    if exact.auc is not None:
        assert abs(pooled.auc - exact.auc) <= auc_error_bound(counts) + 1e-12


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1), n_classes=st.integers(2, 4),
    sizes=st.lists(st.integers(150, 600), min_size=2, max_size=4),
    spread=st.floats(0.05, 4.0), separation=st.floats(0.0, 2.0),
)
def test_the_pooled_auc_from_counts_is_within_0_001_on_model_like_scores(seed, n_classes, sizes, spread, separation):
    # From nearly constant outputs (spread 0.05: an untrained model, every score within about +-0.1 in logit)
    # to well-separated ones; a few hundred test images per site.
    sites = _model_like_sites(seed, n_classes, sizes, spread, separation * spread)
    exact, pooled = _exact(sites), utility_from_histograms(_counts(sites, n_classes))
    assert pooled.accuracy == exact.accuracy and pooled.n == exact.n
    assert abs(pooled.auc - exact.auc) <= TOLERANCE


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1), n_classes=st.integers(2, 4),
    sizes=st.lists(st.integers(150, 600), min_size=2, max_size=4),
    spread=st.floats(5.0, 30.0), separation=st.floats(10.0, 60.0),
)
def test_the_pooled_auc_from_counts_is_within_0_001_on_saturated_scores(seed, n_classes, sizes, spread, separation):
    # Logits tens apart: float32 probabilities pile up at exactly 0 and 1 and spread over 1e-45 .. 1 - 6e-8.
    sites = _model_like_sites(seed, n_classes, sizes, spread, separation)
    probabilities = torch.cat([p for p, _ in sites])
    assert bool((probabilities == 1).any()) and bool((probabilities < 1e-8).any()), "the scores saturate"
    exact, pooled = _exact(sites), utility_from_histograms(_counts(sites, n_classes))
    assert pooled.accuracy == exact.accuracy and pooled.n == exact.n
    assert abs(pooled.auc - exact.auc) <= TOLERANCE


@pytest.mark.parametrize("n_images", [0, 1, 7, 500])
@pytest.mark.parametrize("n_classes", [2, 5])
def test_what_a_site_sends_has_a_shape_that_does_not_depend_on_its_images(n_images, n_classes):
    generator = torch.Generator().manual_seed(n_images)
    probabilities = torch.softmax(torch.randn(n_images, n_classes, generator=generator), dim=1)
    labels = torch.randint(0, n_classes, (n_images,), generator=generator)
    scored = 1 if n_classes == 2 else n_classes  # binary: class 1's AUC; otherwise one-vs-rest for every class
    shapes = {name: array.shape for name, array in score_histograms(probabilities, labels, n_classes).arrays().items()}
    assert shapes == {
        "positive_counts": (scored, SCORE_BINS), "negative_counts": (scored, SCORE_BINS),
        "twice_mann_whitney": (scored,), "confusion": (n_classes, n_classes),
    }


def test_float32_certainties_get_bins_of_their_own_and_bins_never_decrease():
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    below_one = np.nextafter(np.float32(1), np.float32(0))
    scores = np.array([0.0, tiny, 1e-30, 0.25, 0.5, below_one, 1.0], dtype=np.float32)
    bins = score_bins(scores)
    assert bins[0] == 0 and bins[-1] == SCORE_BINS - 1
    assert np.all(np.diff(bins) > 0), "0, the smallest float32 above it, 1 and the largest below it are told apart"
    dense = np.sort(np.random.default_rng(0).random(100_000) ** 8)
    assert np.all(np.diff(score_bins(dense)) >= 0)
