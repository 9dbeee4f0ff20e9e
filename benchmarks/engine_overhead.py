"""Engine overhead: a FedAvg simulation vs. centralized training, same sample-gradient work.

Both train the same model with the same routine on the same images: the
federation as K iid sites x R rounds x E local epochs, the centralized
baseline as R x E epochs on the pooled data. Batch counts match, so the time
ratio is what the federated engine adds (copying models in and out,
aggregation, bookkeeping). Per-round evaluation is off on both sides.

Usage: python benchmarks/engine_overhead.py [--data PATH] [--rounds R] [--repeats N]
Prints one JSON object; ``ratio`` = federated seconds / centralized seconds (goal <= 1.10).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from fedsecure.data import IID, MedMNISTFile, SyntheticPhantoms, federate
from fedsecure.fl import FedAvg, Federation, LocalTraining, baseline_training, train_local
from fedsecure.models import build_model
from fedsecure.seeding import torch_generator

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pneumoniamnist.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MedMNIST .npz (synthetic if absent)")
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    source = MedMNISTFile(args.data) if args.data.is_file() else SyntheticPhantoms(n_sites=args.sites)
    data = federate(source, args.sites, IID(), seed=0)
    training = LocalTraining(epochs=args.local_epochs, batch_size=args.batch_size, lr=0.05)

    def make_model() -> torch.nn.Module:
        return build_model(args.model, data.in_channels, data.n_classes, data.image_size, seed=0)

    def federated() -> float:
        federation = Federation(
            data, make_model(), FedAvg(), training=training, rounds=args.rounds, evaluate_every=0
        )
        start = time.perf_counter()
        federation.run()
        return time.perf_counter() - start

    pooled = data.train.tensors()
    central_steps: list[int] = []

    def centralized() -> float:
        model = make_model()
        start = time.perf_counter()
        central_steps.append(
            train_local(model, *pooled, baseline_training(training, args.rounds), torch_generator(0, "bench"))
        )
        return time.perf_counter() - start

    federated()  # warm-up: allocator, kernels
    fed_times, central_times = [], []
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        fed_times.append(federated())
        central_times.append(centralized())
    fed, central = statistics.median(fed_times), statistics.median(central_times)
    fed_steps = sum(-(-s.n_train // args.batch_size) for s in data.sites) * args.local_epochs * args.rounds
    print(json.dumps({
        "benchmark": "engine_overhead",
        "data": source.describe(),
        "model": args.model,
        "sites": args.sites,
        "rounds": args.rounds,
        "local_epochs": args.local_epochs,
        "batch_size": args.batch_size,
        "samples_per_run": len(data.train) * args.local_epochs * args.rounds,
        "steps": {"federated": fed_steps, "centralized": central_steps[-1]},
        "seconds": {"federated": fed, "centralized": central},
        "seconds_all": {"federated": fed_times, "centralized": central_times},
        "ratio": fed / central,
        "goal": 1.10,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
