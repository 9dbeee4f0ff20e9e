"""Membership attacks on a toy problem with planted members, and the metrics with their intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.membership import MEMBERSHIP_ATTACKS, ReferenceOutputs, balanced_memberships, train_references
from attacks.membership.signals import scaled_confidence
from attacks.metrics import membership_scores, tpr_at_fpr

N, K = 2000, 16


def toy_world(seed: int = 0):
    """Samples of varied difficulty; training on a sample raises its confidence by 2 (plus noise).

    For a binary model with logits [phi, 0] and label 0 the scaled confidence is phi exactly.
    """
    rng = np.random.default_rng(seed)
    difficulty = torch.from_numpy(rng.normal(0.0, 3.0, N))
    labels = torch.zeros(N, dtype=torch.long)

    def train_and_predict(mask: np.ndarray) -> torch.Tensor:
        phi = difficulty + 2.0 * torch.from_numpy(mask).double() + torch.from_numpy(rng.normal(0, 0.5, N))
        return torch.stack([phi, torch.zeros(N, dtype=torch.float64)], -1)

    target_members = rng.random(N) < 0.5
    references = train_references(train_and_predict, balanced_memberships(N, K, rng), labels)
    return train_and_predict(target_members), labels, torch.from_numpy(target_members), references


def test_scaled_confidence_is_stable_and_exact():
    logits = torch.tensor([[40.0, 0.0], [2.0, -1.0], [0.0, 0.0]])
    assert scaled_confidence(logits, torch.tensor([0, 0, 1])).tolist() == pytest.approx([40.0, 3.0, 0.0])


def test_balanced_memberships_put_each_sample_in_half_the_models():
    members = balanced_memberships(50, 8, np.random.default_rng(0))
    assert members.shape == (8, 50) and (members.sum(0) == 4).all()


def test_lira_separates_planted_members_far_better_than_the_loss():
    target, labels, truth, references = toy_world()
    loss = membership_scores(MEMBERSHIP_ATTACKS.get("loss")().fit(None).score(target, labels), truth)
    for options in ({"online": True}, {"online": False}, {"online": True, "per_example_variance": True}):
        lira = membership_scores(MEMBERSHIP_ATTACKS.get("lira")(**options).fit(references).score(target, labels), truth)
        assert lira.auc > 0.95, options
        assert lira.auc > loss.auc + 0.2
        assert lira.tpr_at_fpr["0.01"].tpr >= 2 * loss.tpr_at_fpr["0.01"].tpr
        assert lira.tpr_at_fpr["0.01"].low > loss.tpr_at_fpr["0.01"].high  # the intervals do not overlap


# Per-sample calibrated attacks (reference, RMIA) see through much of the varied difficulty; the
# shadow-model attack learns one rule for all samples, so it does about as well as the loss.
@pytest.mark.parametrize(("name", "least_auc"), [("reference", 0.9), ("rmia", 0.8), ("shadow", 0.62)])
def test_every_reference_based_attack_beats_chance_on_planted_members(name, least_auc):
    target, labels, truth, references = toy_world(1)
    scores = MEMBERSHIP_ATTACKS.get(name)().fit(references).score(target, labels)
    assert membership_scores(scores, truth).auc > least_auc


def test_attacks_that_need_references_refuse_to_run_without():
    with pytest.raises(ValueError, match="needs reference models"):
        MEMBERSHIP_ATTACKS.get("lira")().fit(None)


def test_tpr_at_fpr_reads_the_roc_at_the_right_threshold():
    # 4 members (scores 10, 9, 2, 1), 100 non-members (scores 0..0.99): every member beats every
    # non-member; FPR <= 1% admits one false positive (0.99).
    scores = torch.cat([torch.tensor([10.0, 9.0, 2.0, 1.0]), torch.linspace(0, 0.99, 100)])
    truth = torch.cat([torch.ones(4), torch.zeros(100)]).bool()
    rate = tpr_at_fpr(scores, truth, 0.01)
    assert rate.tpr == 1.0 and rate.achieved_fpr == pytest.approx(0.01)
    assert rate.low == pytest.approx(0.025 ** (1 / 4))  # 4 of 4: the Clopper-Pearson lower end
    scores[3] = 0.5  # now one member sits among the non-members, below 49 of them
    rate = tpr_at_fpr(scores, truth, 0.01)
    assert rate.tpr == 0.75 and rate.achieved_fpr == pytest.approx(0.01)
    result = membership_scores(scores, truth)
    assert set(result.tpr_at_fpr) == {"0.01", "0.001"}  # 100 non-members cannot resolve 0.1%: marked
    assert result.tpr_at_fpr["0.01"].resolved and not result.tpr_at_fpr["0.001"].resolved
    assert result.tpr_at_fpr["0.001"].achieved_fpr == 0.0
    assert result.tpr_at_fpr["0.001"].fpr_high == pytest.approx(1 - 0.025 ** (1 / 100))
    assert result.auc == pytest.approx((3 * 100 + 50.5) / 400)  # the fourth beats 50 of 100 and ties 0.50
    assert result.roc_fpr[0] == 0.0 and result.roc_tpr[-1] == 1.0


def test_reference_outputs_check_their_shapes():
    with pytest.raises(ValueError, match="disagree"):
        ReferenceOutputs(torch.zeros(2, 5, 2), torch.zeros(2, 4, dtype=torch.bool), torch.zeros(5, dtype=torch.long))


def test_cached_references_are_reused_only_under_the_same_key(tmp_path):
    calls = []

    def train(mask):
        calls.append(1)
        return torch.randn(6, 2)

    members = balanced_memberships(6, 2, np.random.default_rng(0))
    labels = torch.zeros(6, dtype=torch.long)
    first = train_references(train, members, labels, cache=tmp_path, key="a")
    again = train_references(train, members, labels, cache=tmp_path, key="a")
    assert len(calls) == 2 and torch.equal(first.logits, again.logits)
    train_references(train, members, labels, cache=tmp_path, key="b")
    assert len(calls) == 4


def test_a_reference_model_that_fails_to_train_is_left_out():
    members = balanced_memberships(6, 4, np.random.default_rng(0))
    outcomes = iter([torch.zeros(6, 2), None, torch.ones(6, 2), torch.zeros(6, 2)])
    references = train_references(lambda mask: next(outcomes), members, torch.zeros(6, dtype=torch.long))
    assert references.models == 3
    assert torch.equal(references.members, torch.as_tensor(members[[0, 2, 3]]))
    with pytest.raises(ValueError, match="every reference model failed"):
        train_references(lambda mask: None, members, torch.zeros(6, dtype=torch.long))
