"""Vectorized reference training equals the one-model-at-a-time pipeline."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fedsecure.data.federated import FederatedData, SiteData
from fedsecure.data.splits import Split
from fedsecure.errors import NotSupportedError
from fedsecure.fl import FedAvg, Federation, LocalTraining
from fedsecure.fl.training import train_local
from fedsecure.fl.vectorized import fedavg_vectorized, train_local_vectorized
from fedsecure.models import build_model


def tiny_data(n: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 16, 16), dtype=np.float32), rng.integers(0, 2, n).astype(np.int64)


def test_each_stacked_model_takes_the_steps_train_local_takes_on_its_samples():
    # Full-batch steps make the shuffling irrelevant, so the paths must agree exactly.
    images, labels = tiny_data()
    members = torch.from_numpy(np.random.default_rng(1).random((3, 24)) < 0.5)
    training = LocalTraining(epochs=3, batch_size=64, lr=0.1, momentum=0.5, weight_decay=1e-3)
    model = build_model("classifier", 1, 2, (16, 16), seed=0)
    stacked = {n: p.detach()[None].repeat(3, *([1] * p.dim())) for n, p in model.named_parameters()}
    result = train_local_vectorized(model, stacked, torch.from_numpy(images), torch.from_numpy(labels), members,
                                    training, torch.Generator().manual_seed(0))
    for k in range(3):
        reference = copy.deepcopy(model)
        mine = members[k].numpy()
        train_local(reference, torch.from_numpy(images[mine]), torch.from_numpy(labels[mine]), training,
                    torch.Generator().manual_seed(0))
        for name, parameter in reference.named_parameters():
            torch.testing.assert_close(result[name][k], parameter.detach(), rtol=1e-4, atol=1e-5)


def test_vectorized_fedavg_equals_the_federation():
    images, labels = tiny_data(40, seed=2)
    sites = [
        SiteData(f"site-{k}", Split(images[k * 20 : (k + 1) * 20], labels[k * 20 : (k + 1) * 20]), Split(images[:2], labels[:2]))
        for k in range(2)
    ]
    data = FederatedData(sites=sites, n_classes=2, in_channels=1, image_size=(16, 16))
    training = LocalTraining(epochs=2, batch_size=64, lr=0.05)
    model = build_model("classifier", 1, 2, (16, 16), seed=0)
    members = [torch.ones(2, 20, dtype=torch.bool) for _ in sites]
    members[0][1, :5] = False  # the second federation's first site lacks 5 samples
    inputs = [(torch.from_numpy(s.train.images), torch.from_numpy(s.train.labels), m) for s, m in zip(sites, members)]
    vectorized = fedavg_vectorized(model, inputs, 3, training, torch.Generator().manual_seed(0))
    for k in range(2):
        subset = [
            SiteData(s.name, Split(s.train.images[m[k].numpy()], s.train.labels[m[k].numpy()]), s.test)
            for s, m in zip(sites, members)
        ]
        federation = Federation(FederatedData(subset, 2, 1, (16, 16)), copy.deepcopy(model), FedAvg(),
                                training=training, rounds=3, evaluate_every=0)
        federation.state.set(federation.run().trace.final_global)
        for (name, expected), (_, got) in zip(federation.model.named_parameters(), vectorized[k].named_parameters()):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=name)


def test_what_cannot_be_vectorized_says_so():
    model = build_model("classifier", 1, 2, (16, 16), seed=0)
    stacked = {n: p.detach()[None] for n, p in model.named_parameters()}
    with pytest.raises(NotSupportedError, match="plain SGD"):
        train_local_vectorized(model, stacked, torch.zeros(2, 1, 16, 16), torch.zeros(2, dtype=torch.long),
                               torch.ones(1, 2, dtype=torch.bool), LocalTraining(optimizer="adam"), torch.Generator())
    with pytest.raises(NotSupportedError, match="running statistics"):
        fedavg_vectorized(build_model("densenet121", 1, 2, (16, 16)), [], 1, LocalTraining(), torch.Generator())
