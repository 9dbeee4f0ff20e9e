"""Canary clients over a real run (Andrew et al. 2024): the estimate against the accountant, over seeds, JSON out.

A client-level DP federation of ``--sites`` synthetic sites (the default
audit's data, split further), epsilon 8, distributed noise drawn from the OS
CSPRNG, runs once per seed with ``--canaries`` canary clients added
(``fedsecure.audit.canary_clients``). Each run's estimate and bootstrap
interval are compared with the accountant's epsilon against the public (who
sees the same released model): ``ratio`` = estimate / accountant,
``interval_within`` = the interval's upper end is at most the accountant's.
The same federation without DP shows what the estimate says when nothing
protects the canaries.

Usage: python benchmarks/canary_clients.py [--seeds 10] [--sites 20] [--canaries 2000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import torch

from fedsecure.audit.canary_clients import audit_canary_clients
from fedsecure.config.spec import parse_spec
from fedsecure.fl.federation import Federation
from fedsecure.models import build_model

SPEC = """
name = "canary-clients"
seed = {seed}
[data]
source = "synthetic"
sites = {sites}
train_samples = 800
test_samples = 200
[federation]
rounds = 6
batch_size = 32
lr = 0.05
[[scenario]]
name = "client-dp"
protocol = "plain"
{dp}
"""
DP = 'dp = { level = "client", epsilon = 8.0, delta = 1e-4, clip = 0.5, placement = "distributed", secure_rng = true }'


def run(seed: int, sites: int, canaries: int, private: bool) -> dict[str, Any]:
    """One federation with canary clients; the estimate, its interval and the accountant's epsilon."""
    spec = parse_spec(SPEC.format(seed=seed, sites=sites, dp=DP if private else ""), "benchmark").spec
    scenario = spec.scenario[0]
    data = spec.data.federated(spec.seed)
    make_model = partial(build_model, spec.model.name, data.in_channels, data.n_classes, data.image_size, spec.seed)

    def build(on, **overrides):
        settings = dict(
            training=scenario.local_training(spec.federation, spec.data.task), rounds=spec.federation.rounds,
            protocol=scenario.protocol_instance(), seed=spec.seed, device=torch.device("cpu"),
            privacy=scenario.dp.mechanism() if scenario.dp is not None else None,
        )
        return Federation(on, make_model(), spec.federation.strategy_instance(), **{**settings, **overrides})

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = audit_canary_clients(data, build, clients=canaries, unseen=1000, norm=0.5, delta=1e-4,
                                     confidence=0.95, seed=seed)
    accountant = found.accountant_epsilon
    return {
        "seed": seed, "dp": private, "estimate": found.epsilon, "low": found.low, "high": found.high,
        "accountant_epsilon": accountant, "ratio": found.epsilon / accountant if accountant else None,
        "interval_within": found.high <= accountant if accountant else None,
        "inserted_mean": found.inserted_mean, "unseen_std": found.unseen_std, "seconds": round(found.wall_seconds, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--canaries", type=int, default=2000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    runs = []
    for seed in range(args.seeds):
        runs.append(run(seed, args.sites, args.canaries, private=True))
        print(json.dumps(runs[-1]), file=sys.stderr)
    without = run(0, args.sites, args.canaries, private=False)
    result = {
        "sites": args.sites, "canaries": args.canaries, "with_dp": runs, "without_dp": without,
        "estimate_exceeds_accountant": sum(r["estimate"] > r["accountant_epsilon"] for r in runs),
        "interval_exceeds_accountant": sum(not r["interval_within"] for r in runs),
        "median_ratio": statistics.median(r["ratio"] for r in runs),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
