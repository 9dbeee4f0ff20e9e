"""LiRA's reference models: one FedAvg federation after another vs. all of them as one vmap batch.

The setting of ``audits/membership-pneumoniamnist.toml`` (plain scenario):
4 sites of PneumoniaMNIST, MONAI's Classifier, FedAvg, every reference model
on a random half of the candidates. Prints one JSON object:

* ``sequential``: seconds to train the reference federations one after another
  with :class:`~fedsecure.fl.federation.Federation` (what the audit runs), and
  LiRA's AUC and TPR at 1% FPR on the target with them;
* ``vectorized``: the same with :func:`~fedsecure.fl.vectorized.fedavg_vectorized`;
* ``ratio``: vectorized seconds / sequential seconds (below 1: batching pays);
* ``device``.

Usage: python benchmarks/lira_shadow_training.py [--data PATH] [--device cpu|cuda] [--models 16]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from attacks.membership import LiRA, balanced_memberships
from attacks.membership.base import ReferenceOutputs
from attacks.metrics import membership_scores
from fedsecure.audit.membership import CandidatePool, logits_of
from fedsecure.config.spec import load_spec
from fedsecure.data.federated import federate
from fedsecure.fl import FedAvg, Federation
from fedsecure.fl.vectorized import fedavg_vectorized
from fedsecure.models import build_model

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "pneumoniamnist.npz"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", type=int, default=16)
    args = parser.parse_args()
    device = torch.device(args.device)
    spec = load_spec(REPO / "audits" / "membership-pneumoniamnist.toml", data_path=args.data).spec
    data = federate(spec.data.source_instance(spec.seed), spec.data.sites, spec.data.partitioner(), spec.seed)
    training, rounds = spec.federation.local_training(), spec.federation.rounds
    pool = CandidatePool(data)
    labels = torch.from_numpy(pool.labels)
    truth = torch.from_numpy(pool.is_member)

    def make_model() -> torch.nn.Module:
        return build_model(spec.model.name, data.in_channels, data.n_classes, data.image_size, spec.seed).to(device)

    def federation_logits(chosen: np.ndarray) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            federation = Federation(pool.federated(data, chosen), make_model(), FedAvg(), training=training,
                                    rounds=rounds, seed=spec.seed, device=device, evaluate_every=0,
                                    keep_messages="none", keep_global_models=False)
            result = federation.run()
        federation.state.set(result.trace.final_global.to(device))
        return logits_of(federation.model, pool.images, device)

    target_logits = federation_logits(pool.is_member)
    members = balanced_memberships(len(pool), args.models, np.random.default_rng(spec.seed))

    def lira(logits: list[torch.Tensor]) -> dict[str, float]:
        references = ReferenceOutputs(torch.stack(logits), torch.from_numpy(members), labels)
        measured = membership_scores(LiRA().fit(references).score(target_logits, labels), truth)
        return {"lira_auc": measured.auc, "lira_tpr_at_1pct_fpr": measured.tpr_at_fpr["0.01"].tpr}

    synchronize(device)
    started = time.perf_counter()
    sequential_logits = [federation_logits(mask) for mask in members]
    synchronize(device)
    sequential = time.perf_counter() - started

    images = torch.from_numpy(pool.images).to(device)
    site_inputs = []
    for k in range(len(data.sites)):
        mine = torch.from_numpy(pool.site == k)
        site_inputs.append((images[mine], labels[mine].to(device), torch.from_numpy(members)[:, mine].to(device)))
    synchronize(device)
    started = time.perf_counter()
    models = fedavg_vectorized(make_model(), site_inputs, rounds, training, torch.Generator().manual_seed(spec.seed))
    vectorized_logits = [logits_of(m, pool.images, device) for m in models]
    synchronize(device)
    vectorized = time.perf_counter() - started

    print(json.dumps({
        "device": str(device),
        "reference_models": args.models,
        "candidates": len(pool),
        "sequential": {"seconds": sequential, **lira(sequential_logits)},
        "vectorized": {"seconds": vectorized, **lira(vectorized_logits)},
        "ratio": vectorized / sequential,
    }, indent=1))


if __name__ == "__main__":
    main()
