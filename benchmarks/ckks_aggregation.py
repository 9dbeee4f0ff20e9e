"""CKKS secure aggregation: what encryption costs, against plaintext, in one run.

Prints one JSON object with three parts:

* ``presets``: for every preset, bytes per parameter and the worst relative
  error of the decrypted weighted mean over random rounds drawn from the
  operating range (and its hardest corner), and whether the decrypted aggregate
  was bit for bit the plaintext protocol's; ``default_by_measurement`` is the
  smallest preset that is exact and keeps the error <= 1e-6.
* ``models``: for the default CNN and MONAI DenseNet121 (2D), with 4 sites:
  bytes per parameter and encrypt / aggregate / decrypt seconds per million parameters.
* ``round_ratio``: wall time of a CKKS FedAvg round over a plaintext round,
  4 PneumoniaMNIST sites, on the default CNN (goal <= 1.3) and DenseNet121.

Usage: python benchmarks/ckks_aggregation.py [--data PATH] [--rounds R] [--repeats N] [--trials T]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fedsecure.data import IID, MedMNISTFile, SyntheticPhantoms, federate
from fedsecure.errors import AggregationOverflowError
from fedsecure.fl import FedAvg, Federation, LocalTraining, ModelState
from fedsecure.models import build_model
from fedsecure.secure import DEFAULT_PRESET, PRESETS, CKKSAggregation, PlainAggregation
from fedsecure.secure.ckks_params import OPERATING_RANGE

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pneumoniamnist.npz"
TOLERANCE = 1e-6


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def random_round(
    rng: np.random.Generator, slots: int, corner: bool
) -> tuple[list[np.ndarray], list[float], list[bool]]:
    """Updates, weights and arrivals from the operating range (``corner``: its hardest point)."""
    low, high = OPERATING_RANGE["max_entry"]
    n = OPERATING_RANGE["max_sites"] if corner else int(rng.integers(1, OPERATING_RANGE["max_sites"] + 1))
    length = 3 * slots - 1 if corner else int(rng.integers(1, 3 * slots))
    updates = []
    for _ in range(n):
        u = rng.uniform(-1, 1, length)
        u[rng.integers(length)] = 1.0
        updates.append(u * (low if corner else 10 ** rng.uniform(np.log10(low), np.log10(high))))
    ratio = OPERATING_RANGE["weight_ratio"][1]
    # corner: the smallest site (weight 1) alone, with the smallest updates, beside sites 100x its size
    weights = [1.0] + [ratio] * (n - 1) if corner else list(10 ** rng.uniform(0, np.log10(ratio), n))
    arrived = [True] + [False] * (n - 1) if corner else list(rng.random(n) < 0.7)
    arrived[0] = True
    return updates, weights, arrived


def preset_errors(trials: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name, params in PRESETS.items():
        protocol = CKKSAggregation(preset=name)
        worst, identical = 0.0, True
        for trial in range(trials + 1):
            updates, weights, arrived = random_round(rng, params.slots, corner=trial == trials)
            kept = [(torch.from_numpy(u).float(), w) for u, w, a in zip(updates, weights, arrived, strict=True) if a]
            roles = protocol.setup(len(updates), weight_unit=min(weights))
            try:
                got = roles.client.reveal(roles.server.combine([roles.client.protect(u, w) for u, w in kept]))
            except AggregationOverflowError:
                worst, identical = float("inf"), False
                continue
            plain = PlainAggregation().setup(len(updates), weight_unit=min(weights))
            plain_mean = plain.client.reveal(plain.server.combine([plain.client.protect(u, w) for u, w in kept]))
            identical &= torch.equal(got, plain_mean)
            expected = sum(w * u.double() for u, w in kept) / sum(w for _, w in kept)
            worst = max(worst, relative_error(got.double().numpy(), expected.numpy()))
        full = protocol.setup(1).client.protect(torch.from_numpy(rng.normal(0, 0.01, 10 * params.slots - 1)), 1.0)
        out[name] = {
            "poly_modulus_degree": params.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(params.coeff_mod_bit_sizes),
            "scale_bits": params.scale_bits,
            "bytes_per_parameter": full.nbytes / (10 * params.slots - 1),
            "worst_relative_error": worst,
            "identical_to_plain": identical,
            "meets_1e-6": worst <= TOLERANCE and identical,
        }
    meeting = [name for name, r in out.items() if r["meets_1e-6"]]
    return {
        "trials_per_preset": trials + 1,
        "operating_range": OPERATING_RANGE,
        "results": out,
        "default_by_measurement": min(meeting, key=lambda n: out[n]["bytes_per_parameter"]) if meeting else None,
        "default_in_code": DEFAULT_PRESET,
    }


def model_costs(name: str, sites: int = 4) -> dict:
    model = build_model(name, 1, 2, (28, 28))
    length = ModelState(model).numel
    rng = np.random.default_rng(1)
    updates = [torch.from_numpy(rng.normal(0, 0.01, length)).float() for _ in range(sites)]
    roles = CKKSAggregation().setup(sites, weight_unit=1.0)
    start = time.perf_counter()
    messages = [roles.client.protect(u, 1.0) for u in updates]
    encrypt = (time.perf_counter() - start) / sites
    start = time.perf_counter()
    aggregate = roles.server.combine(messages)
    combine = time.perf_counter() - start
    start = time.perf_counter()
    mean = roles.client.reveal(aggregate)
    decrypt = time.perf_counter() - start
    error = relative_error(mean.double().numpy(), torch.stack(updates).double().mean(0).numpy())
    plain = PlainAggregation().setup(sites, weight_unit=1.0)
    plain_mean = plain.client.reveal(plain.server.combine([plain.client.protect(u, 1.0) for u in updates]))
    identical = torch.equal(mean, plain_mean)
    per_million = 1e6 / length
    return {
        "parameters": length,
        "sites": sites,
        "bytes_per_parameter": messages[0].nbytes / length,
        "ciphertexts_per_message": len(messages[0].payload),
        "encrypt_seconds_per_million": encrypt * per_million,
        "aggregate_seconds_per_million": combine * per_million,
        "decrypt_seconds_per_million": decrypt * per_million,
        "relative_error": error,
        "identical_to_plain": identical,
    }


def round_ratio(data_path: Path, model_name: str, rounds: int, repeats: int) -> dict:
    source = MedMNISTFile(data_path) if data_path.is_file() else SyntheticPhantoms()
    data = federate(source, 4, IID(), seed=0)
    training = LocalTraining(epochs=1, batch_size=32, lr=0.05)
    protocols = {"plain": PlainAggregation(), "ckks": CKKSAggregation()}

    def seconds_per_round(protocol) -> float:
        model = build_model(model_name, data.in_channels, data.n_classes, data.image_size)
        federation = Federation(
            data, model, FedAvg(), training=training, rounds=rounds, protocol=protocol, evaluate_every=0
        )
        start = time.perf_counter()
        federation.run()
        return (time.perf_counter() - start) / rounds

    seconds_per_round(protocols["plain"])  # warm-up: allocator, kernels, TenSEAL
    # Interleaved repeats, so drift in machine load hits both alike.
    samples = {name: [] for name in protocols}
    for _ in range(repeats):
        for name, protocol in protocols.items():
            samples[name].append(seconds_per_round(protocol))
    seconds = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "data": source.describe(),
        "model": model_name,
        "rounds": rounds,
        "repeats": repeats,
        "seconds_per_round": seconds,
        "seconds_per_round_all": samples,
        "ratio": seconds["ckks"] / seconds["plain"],
        "goal_on_cnn": 1.3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    report = {
        "benchmark": "ckks_aggregation",
        "presets": preset_errors(args.trials),
        "models": {name: model_costs(name) for name in ("cnn", "densenet121")},
        "round_ratio": {
            "cnn": round_ratio(args.data, "cnn", args.rounds, args.repeats),
            # DenseNet121 trains for seconds per round on a CPU: one round, one repeat.
            "densenet121": round_ratio(args.data, "densenet121", 1, 1),
        },
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
