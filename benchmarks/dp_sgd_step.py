"""DP-SGD step time against a non-private step, per Opacus clipping mode, in one run.

For the default CNN on 28x28 single-channel images, times one optimizer step
(forward, backward, clipping, noise, update) of plain SGD and of DP-SGD in
each of Opacus's per-sample gradient modes, at batch sizes 32 and 256.
``ratio`` = DP-SGD seconds / non-private seconds (goal <= 1.5).

Usage: python benchmarks/dp_sgd_step.py [--steps N] [--batch-sizes 32 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedsecure.models import build_model
from fedsecure.privacy.sample_level import GRAD_SAMPLE_MODES


def time_steps(model: nn.Module, optimizer, criterion, images, labels, steps: int) -> float:
    """Median seconds of one training step over ``steps`` steps (after 3 warm-up steps)."""
    times = []
    for i in range(steps + 3):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    results = {}
    for batch in args.batch_sizes:
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(batch, 1, 28, 28, generator=generator)
        labels = torch.randint(0, 2, (batch,), generator=generator)
        model = build_model("cnn", 1, 2, (28, 28))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        plain = time_steps(model, optimizer, nn.CrossEntropyLoss(), images, labels, args.steps)
        row = {"non_private_seconds": plain}
        for mode in GRAD_SAMPLE_MODES:
            model = build_model("cnn", 1, 2, (28, 28))
            loader = DataLoader(TensorDataset(images, labels), batch_size=batch)
            wrapped = PrivacyEngine(accountant="rdp").make_private(
                module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), data_loader=loader,
                criterion=nn.CrossEntropyLoss(), noise_multiplier=1.0, max_grad_norm=1.0,
                poisson_sampling=False, grad_sample_mode=mode,
            )
            dp_model, dp_optimizer, criterion = (
                (wrapped[0], wrapped[1], wrapped[2])
                if len(wrapped) == 4
                else (wrapped[0], wrapped[1], nn.CrossEntropyLoss())
            )
            # Every step sees the full batch, as a Poisson batch of expected size would on average.
            seconds = time_steps(dp_model, dp_optimizer, criterion, images, labels, args.steps)
            row[mode] = {"seconds": seconds, "ratio": seconds / plain}
        results[str(batch)] = row
    best = {b: min((m for m in GRAD_SAMPLE_MODES), key=lambda m: r[m]["ratio"]) for b, r in results.items()}
    print(json.dumps({
        "benchmark": "dp_sgd_step",
        "model": "cnn",
        "steps_timed": args.steps,
        "results": results,
        "fastest_mode": best,
        "goal_ratio": 1.5,
        "torch_threads": torch.get_num_threads(),
    }, indent=2))


if __name__ == "__main__":
    main()
