"""The inversion audit: attack the server's view of round 1, then score it against the truth and the prior.

Threat model (server position, honest but curious): the server sent the
initial global model and received one site's protected update. It knows the
training settings it set (learning rate, epochs, batch size) and how many
images the update came from (the FedAvg weight tells it; where the weight does
not, as under client-level DP, the audit grants it that knowledge: the
strongest attacker). It also holds public images of the modality: the test
split stands in for them, and their mean image is the attacker's prior.

The attacked site holds ``batch_size`` images in the probed round (the
setting of the gradient-inversion literature); ``images / batch_size`` such
rounds are probed, each with a different batch from the site's training data.
Each probe is the scenario's own client pipeline (:meth:`Federation.first_round_view`:
the same strategy, privacy mechanism and protocol), so a DP scenario's probe
carries that scenario's noise and a CKKS scenario's probe is ciphertext. The
noise is the real run's: DP-SGD's multiplier is pinned to the one calibrated
for the site's real size (a site of ``batch_size`` images would otherwise be
recalibrated with far more noise, understating the leakage).

The attack sees the :class:`~attacks.inversion.Observation` only; the truth
stays here, with the auditor, for scoring.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from attacks.inversion import LocalSteps, Observation
from attacks.metrics import ReconstructionScores, score_reconstruction
from fedsecure.config.spec import AuditSpec, InversionSpec, ScenarioSpec
from fedsecure.data.federated import FederatedData
from fedsecure.data.splits import Split
from fedsecure.fl.federation import Federation
from fedsecure.fl.privacy_hooks import PrivacyMechanism
from fedsecure.fl.views import ReceivedUpdate, ServerView
from fedsecure.positions import Position
from fedsecure.report.findings import ImageScores, InversionFinding
from fedsecure.report.output import write_atomic
from fedsecure.report.png import encode_gray, image_grid
from fedsecure.seeding import derive_seed, numpy_rng

FIGURES = "figures"
POSITION = Position.SERVER


def audit_inversion(
    spec: AuditSpec,
    scenario: ScenarioSpec,
    data: FederatedData,
    build_federation: Callable[..., Federation],
    out_dir: Path,
) -> InversionFinding:
    """Run ``[attacks] inversion`` against one scenario from the server's position.

    Every scenario is probed with the same victim images, so that their results compare side by side.

    Args:
        spec: the audit spec (``spec.attacks.inversion`` must be set).
        scenario: the scenario whose client pipeline is probed.
        data: the federated data.
        build_federation: the scenario's federation on given data (same settings as its real run).
        out_dir: where the image grid goes (``figures/inversion-<scenario>.png``).
    """
    settings = spec.attacks.inversion
    assert settings is not None
    site = data.sites[settings.site]
    base = dict(method=settings.method, position=POSITION, site=site.name, images=settings.images,
                batch_size=settings.batch_size)
    if site.n_train < settings.images:
        return InversionFinding(
            status="skipped", reason=f"site {site.name} holds {site.n_train} training images, fewer than the "
            f"{settings.images} to attack", **base,
        )
    chosen = numpy_rng(spec.seed, "inversion-victims").choice(site.n_train, settings.images, replace=False)
    batches = np.sort(chosen).reshape(-1, settings.batch_size)

    def probe_privacy() -> tuple[PrivacyMechanism | None, str | None]:
        if scenario.dp is None:
            return None, None
        mechanism = scenario.dp.mechanism()
        return mechanism, mechanism.pin_noise_to_site(
            site.n_train, scenario.local_training(spec.federation), spec.federation.rounds
        )

    observations, truths, assumptions = [], [], []
    for batch in batches:
        victim = Split(images=site.train.images[batch], labels=site.train.labels[batch])
        probe = replace(data, sites=[replace(s, train=victim) if s is site else s for s in data.sites])
        privacy, pinned = probe_privacy()
        view = build_federation(probe, privacy=privacy).first_round_view(settings.site)
        received = view.round(1).received[site.name]
        if not received.plaintext:
            return InversionFinding(
                status="no_access",
                reason="the server holds only ciphertexts of the site's update (secure aggregation); "
                "there is nothing it can invert",
                **base,
            )
        observation, assumptions = _observation(view, received, settings, data)
        assumptions += [pinned] if pinned else []
        observations.append(observation)
        truths.append(victim)

    public = torch.from_numpy(data.test.images)
    attack = settings.attack(derive_seed(spec.seed, "inversion-attack"))
    reconstructions = attack.reconstruct_all(observations, public_images=public)
    prior = public.mean(0)
    scores = [
        score_reconstruction(r.images, r.labels, torch.from_numpy(t.images), torch.from_numpy(t.labels), prior)
        for r, t in zip(reconstructions, truths, strict=True)
    ]
    figure = _save_grid(out_dir, scenario.name, truths, reconstructions, scores, prior)
    merged = ReconstructionScores.concatenate(scores)
    return InversionFinding(
        status="ok",
        psnr_median=merged.psnr_median,
        psnr_worst_case=merged.psnr_worst_case,
        ssim_median=merged.ssim_median,
        label_accuracy=merged.label_accuracy,
        prior_psnr_median=merged.prior_psnr_median,
        prior_ssim_median=merged.prior_ssim_median,
        psnr_gain_median=merged.psnr_gain_median,
        relative_leakage=merged.relative_leakage,
        per_image=[
            ImageScores(psnr=p, ssim=s, prior_psnr=pp, prior_ssim=ps)
            for p, s, pp, ps in zip(merged.psnr, merged.ssim, merged.prior_psnr, merged.prior_ssim, strict=True)
        ],
        seconds=reconstructions[0].seconds,
        figure=figure,
        assumptions=assumptions,
        **base,
    )


def _observation(
    view: ServerView, received: ReceivedUpdate, settings: InversionSpec, data: FederatedData
) -> tuple[Observation, list[str]]:
    """The server's view of one plaintext message, as an attack's observation (no images, no labels)."""
    sent = view.round(1).sent_model
    assert sent is not None and received.parameters is not None
    training = view.recipe.training
    assumptions = [
        f"the server knows the site's update came from {settings.batch_size} image(s), and its training settings"
    ]
    if view.recipe.one_full_batch_step:
        steps = LocalSteps(lr=training.lr)
    else:
        steps = LocalSteps(lr=training.lr, epochs=training.epochs, batch_size=training.batch_size)
        if training.optimizer != "sgd" or training.momentum:
            assumptions.append(
                "the replay assumes plain SGD; the site's optimizer differs, so the replay is approximate"
            )
    observation = Observation(
        model=copy.deepcopy(sent), update=received.parameters, n_images=settings.batch_size,
        image_shape=(data.in_channels, *data.image_size), n_classes=data.n_classes, training=steps,
    )
    return observation, assumptions


def _save_grid(out_dir: Path, scenario: str, truths: list[Split], reconstructions, scores, prior: torch.Tensor) -> str:
    """Three rows (true images, their matched reconstructions, the prior image); the first channel."""
    true_row, reconstructed_row = [], []
    for truth, reconstruction, score in zip(truths, reconstructions, scores, strict=True):
        for i, match in enumerate(score.order):
            true_row.append(truth.images[i, 0])
            reconstructed_row.append(reconstruction.images[match, 0].numpy())
    prior_row = [prior[0].numpy()] * len(true_row)
    relative = f"{FIGURES}/inversion-{scenario}.png"
    write_atomic(out_dir / relative, encode_gray(image_grid([true_row, reconstructed_row, prior_row])))
    return relative
