"""``--quick``: a small, fast version of a spec, for a first look before the real audit.

Same data source, sites, model, strategy, scenarios and attacks; fewer
rounds, passes, images and reference models. Its numbers show that the spec
runs and roughly where it lands; they are not evidence, and the report says so.
"""

from __future__ import annotations

from typing import Any

from fedsecure.config.spec import AuditSpec

QUICK_ROUNDS = 3
QUICK_TRAIN_SAMPLES = 400
QUICK_TEST_SAMPLES = 200
QUICK_INVERSION_BATCHES = 2
QUICK_INVERSION_ITERATIONS = 100
QUICK_REFERENCE_MODELS = 4
QUICK_CANARIES = 50
QUICK_MECHANISM_TRIALS = 4000
QUICK_CANARY_CLIENTS = 50


def quick_spec(spec: AuditSpec) -> AuditSpec:
    """The quick version of ``spec`` (validated like any spec)."""
    raw: dict[str, Any] = spec.model_dump(mode="json", exclude_unset=True)
    federation = raw.setdefault("federation", {})
    federation["rounds"] = min(spec.federation.rounds, QUICK_ROUNDS)
    federation["local_epochs"] = 1
    for scenario in raw["scenario"]:
        if scenario.get("training", {}).get("local_epochs") is not None:
            scenario["training"]["local_epochs"] = 1
    data = raw.setdefault("data", {})
    if spec.data.source == "synthetic":
        data["train_samples"] = min(spec.data.train_samples, QUICK_TRAIN_SAMPLES)
        data["test_samples"] = min(spec.data.test_samples, QUICK_TEST_SAMPLES)
    else:
        data["train_subset"] = min(spec.data.train_subset or QUICK_TRAIN_SAMPLES, QUICK_TRAIN_SAMPLES)
    if spec.study is not None:
        raw.setdefault("study", {})["seeds"] = min(spec.study.seeds, 2)
    inversion, membership = spec.attacks.inversion, spec.attacks.membership
    if inversion is not None:
        attack = raw["attacks"]["inversion"]
        attack["images"] = inversion.batch_size * min(inversion.images // inversion.batch_size, QUICK_INVERSION_BATCHES)
        attack["iterations"] = min(inversion.iterations or QUICK_INVERSION_ITERATIONS, QUICK_INVERSION_ITERATIONS)
        attack["restarts"] = 1
        if "round" in attack:
            attack["round"] = min(inversion.round, federation["rounds"])
    if membership is not None:
        attack = raw["attacks"]["membership"]
        attack["shadow_models"] = min(membership.shadow_models, QUICK_REFERENCE_MODELS)
        attack["canaries"] = min(membership.canaries, QUICK_CANARIES)
        if membership.canary_guesses is not None:
            attack["canary_guesses"] = min(membership.canary_guesses, attack["canaries"])
            if attack["canary_guesses"] < 2:  # too few canaries left to guess: no canary audit
                attack.pop("canary_guesses")
                attack["canaries"] = 0
    mechanism = spec.attacks.mechanism
    if mechanism is not None:
        attack = raw["attacks"]["mechanism"]
        attack["trials"] = min(mechanism.trials or QUICK_MECHANISM_TRIALS, QUICK_MECHANISM_TRIALS)
        attack["canary_clients"] = min(mechanism.canary_clients, QUICK_CANARY_CLIENTS)
    return AuditSpec.model_validate(raw)
