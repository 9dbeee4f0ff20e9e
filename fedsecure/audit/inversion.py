"""The inversion audit: attack what a seat sees of one round, then score it against the truth and the prior.

Threat model (honest but curious, at two seats):

* ``server``: it sent the global model of round ``round`` and received the
  attacked site's protected update; nothing to invert under secure
  aggregation (``no_access``);
* ``client``: another site (``attacker_site``) took part in the same round.
  It reads the aggregate's sums (every site does, to move its model) and knows
  its own message, so it holds the other sites' weighted mean update: under
  CKKS as in the clear. With two sites that mean is the attacked site's update.

Either attacker knows the training settings (learning rate, epochs, batch
size) and how many images the attacked update came from (the FedAvg weight
tells the server; the audit grants it where it does not, as under
client-level DP, and to the client: the strongest attacker). Both hold public
images of the modality: the test split stands in for them, and their mean
image is the attacker's prior.

The attacked site holds ``batch_size`` images in the probed round (the
setting of the gradient-inversion literature); ``images / batch_size`` such
rounds are probed, each with a different batch from the site's training data,
every other site training on its own data. Each probe is the scenario's own
pipeline (the same strategy, privacy mechanism and protocol) run for one round
from the real run's global model of that round, so a DP scenario's probe
carries that scenario's noise and a CKKS scenario's probe is ciphertext to the
server. The noise is the real run's: DP-SGD's multiplier is pinned to the one
calibrated for the site's real size (a site of ``batch_size`` images would
otherwise be recalibrated with far more noise, understating the leakage).

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
from torch import nn

from attacks.inversion import LocalSteps, Observation
from attacks.metrics import ReconstructionScores, score_reconstruction
from fedsecure.config.spec import AuditSpec, InversionSpec, ScenarioSpec
from fedsecure.data.federated import FederatedData
from fedsecure.data.splits import Split
from fedsecure.fl.federation import Federation
from fedsecure.fl.privacy_hooks import PrivacyMechanism
from fedsecure.fl.strategies import STRATEGIES
from fedsecure.fl.task import TASKS
from fedsecure.fl.views import Recipe
from fedsecure.positions import Position
from fedsecure.report.findings import ImageScores, InversionFinding
from fedsecure.report.output import write_atomic
from fedsecure.report.png import as_picture, encode_gray, image_grid
from fedsecure.seeding import derive_seed, numpy_rng

FIGURES = "figures"

#: What one probe gives an attacker at a seat: its observation's model and update, or why it has none.
Probe = tuple[nn.Module, dict[str, torch.Tensor], Recipe] | str



# Why the server seat has nothing to invert, by what it holds of a site's update.
NOTHING_TO_INVERT = {
    "ciphertext": "the server holds only ciphertexts of the site's update (CKKS); there is nothing it can invert",
    "masked": ("the server holds the site's update only under SecAgg+ masks and unmasks only the sum of the "
               "round's sites (at least the threshold); inverting a sum of several sites' updates is not run by "
               "this audit"),
}

def audit_inversion(
    spec: AuditSpec,
    scenario: ScenarioSpec,
    data: FederatedData,
    build_federation: Callable[..., Federation],
    out_dir: Path,
    start: torch.Tensor | None = None,
) -> list[InversionFinding]:
    """Run ``[attacks] inversion`` against one scenario from every seat asked for: one finding per position.

    Every scenario is probed with the same victim images, so that their results compare side by side.

    Args:
        spec: the audit spec (``spec.attacks.inversion`` must be set).
        scenario: the scenario whose client pipeline is probed.
        data: the federated data.
        build_federation: the scenario's federation on given data (same settings as its real run).
        out_dir: where the image grids go (``figures/inversion-<scenario>-<position>.png``).
        start: the real run's global state at the start of the probed round (None: the initial model;
            for a later round, the finding is skipped).
    """
    settings = spec.attacks.inversion
    assert settings is not None
    site = data.sites[settings.site]
    positions = settings.positions_on(len(data.sites))
    attacker = settings.attacker_on(len(data.sites))

    def base(position: Position) -> dict:
        observer = data.sites[attacker].name if position is Position.CLIENT else None
        return dict(method=settings.method, position=position, site=site.name, images=settings.images,
                    batch_size=settings.batch_size, round=settings.round, attacker_site=observer)

    if site.n_train < settings.images:
        reason = f"site {site.name} holds {site.n_train} training images, fewer than the {settings.images} to attack"
        return [InversionFinding(status="skipped", reason=reason, **base(p)) for p in positions]
    if settings.round > 1 and start is None:
        reason = f"the run kept no global model of round {settings.round} (it stopped before, or kept none)"
        return [InversionFinding(status="skipped", reason=reason, **base(p)) for p in positions]
    chosen = numpy_rng(spec.seed, "inversion-victims").choice(site.n_train, settings.images, replace=False)
    victims = [
        Split(images=site.train.images[batch], labels=site.train.labels[batch])
        for batch in np.sort(chosen).reshape(-1, settings.batch_size)
    ]

    def probe_privacy() -> tuple[PrivacyMechanism | None, str | None]:
        if scenario.dp is None:
            return None, None
        mechanism = scenario.dp.mechanism()
        return mechanism, mechanism.pin_noise_to_site(
            site.n_train, scenario.local_training(spec.federation, spec.data.task), spec.federation.rounds,
            STRATEGIES.get(spec.federation.strategy).one_full_batch_step,
        )

    def probe(position: Position, victim: Split) -> tuple[Probe, str | None]:
        probed = replace(data, sites=[replace(s, train=victim) if s is site else s for s in data.sites])
        privacy, pinned = probe_privacy()
        federation = build_federation(probed, privacy=privacy)
        if position is Position.SERVER:
            view = federation.server_probe_view(settings.site, start, settings.round)
            received = view.round(settings.round).received[site.name]
            sent = view.round(settings.round).sent_model
            if not received.plaintext or received.parameters is None or sent is None:
                form = scenario.protocol_instance().message_form
                return NOTHING_TO_INVERT.get(form, "the server cannot read the site's update; there is nothing it "
                                             "can invert"), pinned
            return (sent, received.parameters, view.recipe), pinned
        seat = federation.client_probe_view(attacker, start, settings.round)
        others = seat.others_update(settings.round)
        if others is None or seat.recipe is None:
            return f"{seat.site} sent alone in the probed round: there is no other site's update", pinned
        return (seat.model_at(0), others, seat.recipe), pinned

    findings = []
    for position in positions:
        observations, truths, assumptions = [], [], _assumptions(spec, scenario, position, settings, data, attacker)
        refused = None
        for victim in victims:
            seen, pinned = probe(position, victim)
            if isinstance(seen, str):
                refused = seen
                break
            model, update, recipe = seen
            observation, replay_note = _observation(model, update, recipe, settings, data)
            observations.append(observation)
            truths.append(victim)
            assumptions += [note for note in (replay_note, pinned) if note and note not in assumptions]
        if refused is not None:
            findings.append(InversionFinding(status="no_access", reason=refused, **base(position)))
            continue
        findings.append(_attack(spec, scenario, data, settings, position, observations, truths, assumptions,
                                out_dir, base(position)))
    return findings


def _assumptions(
    spec: AuditSpec, scenario: ScenarioSpec, position: Position, settings: InversionSpec, data: FederatedData,
    attacker: int,
) -> list[str]:
    probe = []
    if scenario.dp is not None and scenario.dp.adaptive_quantile is not None and settings.round > 1:
        probe.append(f"the probe clips at the mechanism's initial bound, not the bound adaptive clipping reached by "
                     f"round {settings.round}")
    if position is Position.SERVER:
        return [f"the server knows the site's update came from {settings.batch_size} image(s), and its training "
                "settings", *probe]
    if spec.federation.clients_per_round is not None:
        probe.append(
            "every site takes part in the probed round; with clients_per_round sampling, a round with fewer sites "
            "mixes fewer updates (with the attacker and the attacked site alone, the attacked update exactly)"
        )
    others = len(data.sites) - 1
    mixed = "" if others == 1 else (
        f"; with {others} other sites that mean mixes their updates, and the attack inverts the mixture"
    )
    return [
        f"{data.sites[attacker].name} computes the other sites' weighted mean update from the revealed aggregate "
        f"and its own message{mixed}",
        f"{data.sites[attacker].name} is granted that the attacked update came from {settings.batch_size} "
        "image(s), and knows the training settings (it runs them)",
        *probe,
    ]


def _attack(
    spec: AuditSpec, scenario: ScenarioSpec, data: FederatedData, settings: InversionSpec, position: Position,
    observations: list[Observation], truths: list[Split], assumptions: list[str], out_dir: Path, base: dict,
) -> InversionFinding:
    """Reconstruct every observation, score against the truth and the prior, draw the grid."""
    public = torch.from_numpy(data.test.images)
    attack = settings.attack(derive_seed(spec.seed, "inversion-attack"))
    reconstructions = attack.reconstruct_all(observations, public_images=public)
    prior = public.mean(0)
    scores = [
        score_reconstruction(r.images, r.labels, torch.from_numpy(t.images), torch.from_numpy(t.labels), prior)
        for r, t in zip(reconstructions, truths, strict=True)
    ]
    task = TASKS.get(spec.data.task)
    recovered = torch.cat([r.labels[s.order] for r, s in zip(reconstructions, scores, strict=True)])
    true_labels = torch.from_numpy(np.concatenate([t.labels for t in truths]))
    # The attacker's prior label: the public labels' majority (per pixel, for masks), as the mean image is its prior.
    public_labels = torch.from_numpy(data.test.labels)
    prior_label = torch.nn.functional.one_hot(public_labels, data.n_classes).sum(0).argmax(-1)
    mask_dice = task.recovered_label_score(recovered, true_labels, data.n_classes)
    prior_mask_dice = task.recovered_label_score(prior_label.expand_as(true_labels), true_labels, data.n_classes)
    figure = _save_grid(out_dir, f"{scenario.name}-{position.value}", truths, reconstructions, scores, prior)
    merged = ReconstructionScores.concatenate(scores)
    return InversionFinding(
        status="ok",
        psnr_median=merged.psnr_median,
        psnr_worst_case=merged.psnr_worst_case,
        ssim_median=merged.ssim_median,
        label_accuracy=merged.label_accuracy,
        mask_dice=mask_dice,
        prior_mask_dice=prior_mask_dice,
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
        prior=attack.prior_description(public),
        **base,
    )


def _observation(
    model: nn.Module, update: dict[str, torch.Tensor], recipe: Recipe, settings: InversionSpec, data: FederatedData
) -> tuple[Observation, str | None]:
    """One seat's view of one probed round, as an attack's observation (no images, no labels)."""
    training = recipe.training
    note = None
    if recipe.one_full_batch_step:
        steps = LocalSteps(lr=training.lr)
    else:
        steps = LocalSteps(lr=training.lr, epochs=training.epochs, batch_size=training.batch_size)
        if training.optimizer != "sgd" or training.momentum:
            note = "the replay assumes plain SGD; the site's optimizer differs, so the replay is approximate"
    observation = Observation(
        model=copy.deepcopy(model), update=update, n_images=settings.batch_size,
        image_shape=(data.in_channels, *data.image_size), n_classes=data.n_classes, training=steps,
        loss=training.objective.replay_loss,
    )
    return observation, note


def _save_grid(out_dir: Path, scenario: str, truths: list[Split], reconstructions, scores, prior: torch.Tensor) -> str:
    """Three rows (true images, their matched reconstructions, the prior image); the first channel.

    A volume shows as its three orthogonal central slices.
    """
    true_row, reconstructed_row = [], []
    for truth, reconstruction, score in zip(truths, reconstructions, scores, strict=True):
        for i, match in enumerate(score.order):
            true_row.append(as_picture(truth.images[i, 0]))
            reconstructed_row.append(as_picture(reconstruction.images[match, 0].numpy()))
    prior_row = [as_picture(prior[0].numpy())] * len(true_row)
    relative = f"{FIGURES}/inversion-{scenario}.png"
    write_atomic(out_dir / relative, encode_gray(image_grid([true_row, reconstructed_row, prior_row])))
    return relative
