"""Membership inference: was this sample in the model's training data?

One interface (:class:`MembershipAttack`: fit on reference material, score
candidates), chosen by name from :data:`MEMBERSHIP_ATTACKS`:

* ``loss``: the loss threshold (Yeom et al. 2018);
* ``reference``: per-sample thresholds from reference models (Ye et al. 2022);
* ``shadow``: attack models trained on shadow models' outputs (Shokri et al. 2017);
* ``lira``: the likelihood-ratio attack, online or offline, fixed or
  per-example variance (Carlini et al. 2022);
* ``rmia``: the robust membership inference attack, offline (Zarifzadeh et al. 2024).

Attacks read model outputs (logits), so they work on any model; the
reference models come from :func:`train_references` with the caller's own
training function. Scoring against the truth is :func:`attacks.metrics.membership_scores`.

Example:
    >>> members = balanced_memberships(len(pool), 16, rng)
    >>> references = train_references(train_and_predict, members, pool_labels)
    >>> scores = MEMBERSHIP_ATTACKS.get("lira")().fit(references).score(target_logits, pool_labels)
"""

from attacks.membership.base import MEMBERSHIP_ATTACKS, MembershipAttack, ReferenceOutputs
from attacks.membership.lira import LiRA
from attacks.membership.loss import LossAttack
from attacks.membership.reference import ReferenceAttack
from attacks.membership.references import balanced_memberships, train_reference_signals, train_references
from attacks.membership.rmia import RMIA
from attacks.membership.shadow import ShadowModelAttack

__all__ = [
    "MEMBERSHIP_ATTACKS",
    "RMIA",
    "LiRA",
    "LossAttack",
    "MembershipAttack",
    "ReferenceAttack",
    "ReferenceOutputs",
    "ShadowModelAttack",
    "balanced_memberships",
    "train_reference_signals",
    "train_references",
]
