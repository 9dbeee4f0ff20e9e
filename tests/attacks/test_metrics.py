"""Reconstruction metrics: matching, hand-computed PSNR, label multisets, the prior's scores."""

from __future__ import annotations

import math

import pytest
import torch

from attacks.metrics import ReconstructionScores, best_match, image_scores, label_accuracy, score_reconstruction


def test_psnr_and_mse_match_the_hand_computed_values():
    truth = torch.zeros(1, 1, 8, 8)
    shifted = truth + 0.1  # MSE 0.01 -> PSNR 10 log10(1 / 0.01) = 20 dB
    scores = image_scores(shifted, truth)
    assert float(scores["mse"][0]) == pytest.approx(0.01, rel=1e-5)
    assert float(scores["psnr"][0]) == pytest.approx(20.0, abs=1e-4)
    assert float(image_scores(truth + 0.5, truth + 0.5)["ssim"][0]) == pytest.approx(1.0, abs=1e-6)


def test_best_match_undoes_a_permutation():
    truth = torch.rand(5, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    permutation = torch.tensor([3, 0, 4, 1, 2])
    candidates = truth[permutation] + 0.01 * torch.randn(5, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    order = best_match(candidates, truth)
    assert (candidates[order] - truth).abs().max() < 0.1
    assert torch.equal(permutation[order], torch.arange(5))


def test_labels_are_compared_as_multisets():
    assert label_accuracy(torch.tensor([1, 0, 1]), torch.tensor([0, 1, 1])) == 1.0
    assert label_accuracy(torch.tensor([1, 1, 1]), torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    assert label_accuracy(torch.tensor([2]), torch.tensor([0])) == 0.0


def test_the_prior_is_scored_beside_the_reconstruction_and_gains_are_differences():
    truth = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    prior = torch.full((1, 12, 12), 0.5)
    scores = score_reconstruction(truth.flip(0), torch.tensor([1, 0]), truth, torch.tensor([0, 1]), prior)
    assert scores.order == [1, 0]
    assert scores.label_accuracy == 1.0
    assert all(math.isinf(p) for p in scores.psnr)  # exact reconstructions
    expected_prior = [10 * math.log10(1 / float((t - 0.5).pow(2).mean())) for t in truth]
    assert scores.prior_psnr == pytest.approx(expected_prior, abs=1e-3)
    noisy = score_reconstruction(prior.expand(2, 1, 12, 12), torch.tensor([0, 1]), truth, torch.tensor([0, 1]), prior)
    assert noisy.psnr_gain_median == pytest.approx(0.0, abs=1e-6)  # the prior itself gains nothing
    assert noisy.relative_leakage == pytest.approx(0.0, abs=1e-6)


def test_concatenated_scores_keep_each_batch_matched_within_itself():
    a = ReconstructionScores([20.0], [0.5], [0.01], [18.0], [0.4], [0.02], 1.0, [0])
    b = ReconstructionScores(
        [30.0, 10.0], [0.9, 0.1], [0.001, 0.1], [19.0, 17.0], [0.5, 0.3], [0.01, 0.02], 0.5, [1, 0]
    )
    both = ReconstructionScores.concatenate([a, b])
    assert both.order == [0, 2, 1]
    assert both.label_accuracy == pytest.approx(2 / 3)
    assert both.psnr_median == 20.0
    assert both.psnr_gain_median == pytest.approx(2.0)  # gains 2, 11, -7
    assert both.psnr_worst_case == 30.0


def test_volumes_are_scored_with_3d_ssim():
    truth = torch.rand(2, 1, 8, 8, 8)
    same = image_scores(truth, truth)
    assert same["ssim"].tolist() == pytest.approx([1.0, 1.0]) and same["mse"].tolist() == [0.0, 0.0]
    noisy = image_scores((truth + 0.2 * torch.rand_like(truth)).clamp(0, 1), truth)
    assert noisy["ssim"].shape == (2,) and (noisy["ssim"] < 1).all() and (noisy["psnr"] > 0).all()
