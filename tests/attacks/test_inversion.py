"""Gradient inversion: exact recovery where theory says so, label recovery, and the threat model."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from attacks.inversion import (
    INVERSION_ATTACKS,
    InversionAttack,
    InvertingGradients,
    LocalSteps,
    Observation,
    recover_labels,
)
from attacks.inversion.replay import LocalTrainingReplay

SHAPE = (1, 4, 4)


def linear_model(seed: int = 0, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, classes))


def observe(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, training: LocalSteps | None) -> Observation:
    """What the server sees after the site trained on (images, labels): computed here, by the 'site'."""
    if training is None:
        model.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        gradient = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        return Observation.from_gradient(model, gradient, len(labels), SHAPE, model[-1].out_features)
    trained = nn.Sequential(nn.Flatten(), nn.Linear(16, model[-1].out_features))
    trained.load_state_dict(model.state_dict())
    optimizer = torch.optim.SGD(trained.parameters(), lr=training.lr)
    for _ in range(training.epochs):
        for batch in training.batches(len(labels)):
            optimizer.zero_grad()
            F.cross_entropy(trained(images[batch]), labels[batch]).backward()
            optimizer.step()
    update = {n: p.detach() - dict(model.named_parameters())[n].detach() for n, p in trained.named_parameters()}
    return Observation(model, update, len(labels), SHAPE, model[-1].out_features, training=training)


# A single linear layer with bias: the gradient row of the true class is (p_c - 1) x and its
# bias entry (p_c - 1), so one image is determined exactly (Phong et al. 2018). Each attack
# must find it.
EXACT_CASES = [
    ("dlg", {"iterations": 200}, None),
    ("idlg", {"iterations": 200}, None),
    ("inverting_gradients", {"iterations": 600, "restarts": 2, "tv": 0.0, "lr": 0.05}, None),
    ("fedavg_update", {"iterations": 600, "restarts": 2, "tv": 0.0, "lr": 0.05}, LocalSteps(lr=0.5, epochs=3)),
]


@pytest.mark.parametrize(("name", "options", "training"), EXACT_CASES, ids=[c[0] for c in EXACT_CASES])
def test_each_attack_recovers_one_image_through_a_linear_layer(name, options, training):
    model = linear_model()
    image = torch.rand((1, *SHAPE), generator=torch.Generator().manual_seed(3))
    label = torch.tensor([2])
    observation = observe(model, image, label, training)
    reconstruction = INVERSION_ATTACKS.get(name)(**options).reconstruct(observation)
    assert reconstruction.labels.tolist() == [2]
    assert (reconstruction.images - image).abs().max() < 2e-2, name
    assert float(F.mse_loss(reconstruction.images, image)) < 1e-5


def test_update_inversion_replays_the_site_exactly():
    model = linear_model(1)
    images = torch.rand((4, *SHAPE), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 1])
    training = LocalSteps(lr=0.3, epochs=2, batch_size=2)
    observation = observe(model, images, labels, training)
    replay = LocalTrainingReplay(model, sorted(observation.update))
    params = {n: p.detach() for n, p in model.named_parameters()}
    replayed = replay.update(params, images, F.one_hot(labels, 3).float(), training)
    for name, value in observation.update.items():
        torch.testing.assert_close(replayed[name], value, rtol=1e-5, atol=1e-7)


def test_idlg_reads_the_label_of_one_image_from_the_bias_gradient():
    model = linear_model(2, classes=5)
    for label in range(5):
        image = torch.rand((1, *SHAPE))
        assert recover_labels(observe(model, image, torch.tensor([label]), None)).tolist() == [label]


def test_idlg_without_a_bias_uses_the_weight_rows():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4, bias=False))
    model.zero_grad()
    F.cross_entropy(model(torch.rand(1, *SHAPE)), torch.tensor([3])).backward()
    gradient = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert recover_labels(Observation.from_gradient(model, gradient, 1, SHAPE, 4)).tolist() == [3]


def test_label_counts_of_a_batch_are_exact_when_the_prediction_is_known():
    # A zero output layer predicts exactly 1/classes, so counts = B * (1/C - g_c) exactly.
    model = linear_model(classes=3)
    nn.init.zeros_(model[1].weight)
    nn.init.zeros_(model[1].bias)
    labels = torch.tensor([0, 2, 2, 1, 2, 0, 2])
    observation = observe(model, torch.rand((7, *SHAPE)), labels, None)
    assert recover_labels(observation).tolist() == sorted(labels.tolist())


def test_batched_candidates_take_the_same_path_as_one_at_a_time():
    # Adam and signed gradients act element-wise: batching observations must not change any result.
    model = linear_model(4)
    images = torch.rand((3, 1, *SHAPE), generator=torch.Generator().manual_seed(5))
    observations = [observe(model, x, torch.tensor([k]), None) for k, x in enumerate(images)]
    attack = InvertingGradients(iterations=30, restarts=2, seed=1)
    together = attack.reconstruct_all(observations)
    # The first observation's candidates are drawn first from the seeded generator in both
    # runs, so they start from the same images; alone or batched, they must end the same.
    alone = attack.reconstruct_all(observations[:1])[0]
    torch.testing.assert_close(alone.images, together[0].images, rtol=1e-5, atol=1e-6)
    assert alone.objective == pytest.approx(together[0].objective, rel=1e-5)


def test_the_attack_interface_cannot_receive_the_ground_truth():
    # The observation is the whole threat model: it has no field that could carry images or labels.
    fields = {f.name for f in dataclasses.fields(Observation)}
    assert fields == {"model", "update", "n_images", "image_shape", "n_classes", "training", "value_range", "loss"}
    for name in INVERSION_ATTACKS:
        parameters = list(inspect.signature(INVERSION_ATTACKS.get(name)().reconstruct_all).parameters)
        assert parameters == ["observations", "public_images"], name
    assert list(inspect.signature(InversionAttack.reconstruct).parameters) == ["self", "observation", "public_images"]


def test_an_observation_refuses_values_the_model_does_not_have():
    model = linear_model()
    with pytest.raises(ValueError, match="not a parameter"):
        Observation(model, {"1.weight": torch.zeros(3, 16), "images": torch.zeros(1, 16)}, 1, SHAPE, 3)
    with pytest.raises(ValueError, match="shape"):
        Observation(model, {"1.weight": torch.zeros(3, 15)}, 1, SHAPE, 3)
    with pytest.raises(ValueError, match="empty"):
        Observation(model, {}, 1, SHAPE, 3)


def test_named_attacks_fix_their_defining_choices():
    with pytest.raises(TypeError):
        INVERSION_ATTACKS.get("dlg")(distance="cosine")
    assert INVERSION_ATTACKS.get("idlg")().labels == "recovered"
    assert INVERSION_ATTACKS.get("fedavg_update")().replay == "update"


def test_the_principal_space_spans_the_public_images():
    from attacks.inversion.image_space import PrincipalSpace

    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(3, 16, generator=generator)
    public = (0.5 + 0.1 * torch.randn(50, 3, generator=generator) @ directions).view(50, *SHAPE)
    space = PrincipalSpace.fit(public, components=3)
    assert torch.allclose(space.mean, public.mean(0), atol=1e-6)
    # every public image is the mean plus a combination of the 3 scaled directions
    coefficients = torch.linalg.lstsq(space.basis.T, (public - space.mean).flatten(1).T).solution.T
    torch.testing.assert_close(space.decode(coefficients), public, atol=1e-5, rtol=1e-5)
    # scaled by their standard deviation, the coefficients of public images have unit variance
    assert coefficients.var(0).mean() == pytest.approx(1.0, rel=0.05)


def test_a_subspace_search_needs_public_images():
    observation = observe(linear_model(), torch.rand((1, *SHAPE)), torch.tensor([0]), None)
    with pytest.raises(ValueError, match="public images"):
        InvertingGradients(iterations=1, subspace=4).reconstruct(observation)


def test_total_variation_of_volumes_sums_the_three_spatial_axes():
    from attacks.inversion.matching import total_variation

    volumes = torch.zeros(2, 1, 1, 3, 4, 5)  # (K, B, C, D, H, W)
    volumes[0, 0, 0, 1] = 1.0  # one bright slice across D: only D's differences see it
    # Two of D's 2 x 4 x 5 = 40 neighbour pairs differ by 1 per pixel of the slice: 2 * 20 / 40.
    assert total_variation(volumes).tolist() == [1.0, 0.0]
    images = torch.zeros(1, 1, 1, 4, 4)
    images[..., 1, :] = 1.0
    assert total_variation(images).tolist() == pytest.approx([2 * 4 / 12])  # rows only: 8 of the 12 vertical pairs


def test_the_principal_subspace_of_volumes_starts_one_coefficient_vector_per_candidate():
    from attacks.inversion.image_space import PrincipalSpace

    public = torch.rand(10, 1, 3, 4, 5)
    space = PrincipalSpace.fit(public, components=4)
    latent = space.initial((6, 2, 1, 3, 4, 5), torch.Generator().manual_seed(0), None)
    assert latent.shape == (6, 2, 4) and space.decode(latent).shape == (6, 2, 1, 3, 4, 5)
    torch.testing.assert_close(space.decode(torch.zeros(1, 4)), public.mean(0, keepdim=True))
