"""Segmentation: what a UNet costs against the classification CNN, in plain FedAvg, under CKKS and under DP-SGD.

One FedAvg round of 3 synthetic sites (``--per-site`` images each, batch 16, one
local epoch) for each (model, protection): the default CNN classifying the
phantoms, and MONAI's UNet segmenting them (``data.task = "segmentation"``);
plain aggregation, CKKS (TenSEAL, the default preset) and DP-SGD (Opacus,
per-sample clipping, noise multiplier 1). The median of ``--repeats`` rounds
after a warm-up round. Bytes per parameter are what a site uploads per shared
parameter in one round (4 for plain float32).

Usage: python benchmarks/segmentation.py [--device cpu|cuda] [--size N] [--dims 2|3] [--per-site N] [--rounds N]
Prints one JSON object; ``unet_vs_cnn`` gives the UNet's parameters, CKKS bytes
and seconds per round, and DP-SGD seconds per round, each as a ratio to the CNN's.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings

import torch


def measure(model_name: str, task: str, protection: str, size: int, dims: int, per_site: int, rounds: int,
            device: str) -> dict:
    """Seconds per FedAvg round and bytes per parameter uploaded, for one model, task and protection."""
    from fedsecure.data import IID, SyntheticPhantoms, federate
    from fedsecure.fl import FedAvg, Federation, LocalTraining
    from fedsecure.models import build_model
    from fedsecure.privacy import SampleLevelDP
    from fedsecure.secure import CKKSAggregation

    source = SyntheticPhantoms(n_sites=3, train_samples=3 * per_site, val_samples=0, test_samples=6,
                               image_size=size, spatial_dims=dims, masks=task == "segmentation")
    data = federate(source, 3, IID(min_size=1), seed=0)
    training = LocalTraining(epochs=1, batch_size=16, lr=0.05, task=task)

    model = build_model(model_name, data.in_channels, data.n_classes, data.image_size, seed=0)
    protocol = CKKSAggregation() if protection == "ckks" else None
    privacy = SampleLevelDP(epsilon=8.0, delta=1e-4, clip=1.0) if protection == "dp-sgd" else None
    ends: list[float] = []

    def ended(_: object) -> None:
        if device == "cuda":
            torch.cuda.synchronize()
        ends.append(time.perf_counter())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the seeded-noise notice: a benchmark, not a guarantee
        federation = Federation(data, model, FedAvg(), training=training, rounds=rounds, evaluate_every=0,
                                device=torch.device(device), protocol=protocol, privacy=privacy)
        result = federation.run(on_round=ended)
    parameters = result.trace.update_length
    sent = sum(c.bytes_up for c in result.trace.rounds[-1].clients)
    return {
        "seconds_per_round": statistics.median(b - a for a, b in zip(ends[:-1], ends[1:], strict=True)),
        "bytes_per_parameter": sent / (len(data.sites) * parameters),
        "parameters": parameters,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (voxels)")
    parser.add_argument("--dims", type=int, default=2, choices=[2, 3])
    parser.add_argument("--per-site", type=int, default=32, help="training images per site")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per run (the first is set-up)")
    args = parser.parse_args()
    settings = (args.size, args.dims, args.per_site, max(args.rounds, 3), args.device)
    results = {
        f"{model}-{protection}": measure(model, task, protection, *settings)
        for model, task in (("cnn", "classification"), ("unet", "segmentation"))
        for protection in ("plain", "ckks", "dp-sgd")
    }

    def ratio(protection: str, field: str) -> float:
        return results[f"unet-{protection}"][field] / results[f"cnn-{protection}"][field]

    print(json.dumps({
        "benchmark": "segmentation",
        "device": args.device,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "image": [args.size] * args.dims,
        "rounds": results,
        "unet_vs_cnn": {
            "parameters": ratio("plain", "parameters"),
            "ckks_bytes_per_round": ratio("ckks", "bytes_per_parameter") * ratio("plain", "parameters"),
            "plain_seconds_per_round": ratio("plain", "seconds_per_round"),
            "ckks_seconds_per_round": ratio("ckks", "seconds_per_round"),
            "dp_sgd_seconds_per_round": ratio("dp-sgd", "seconds_per_round"),
        },
        "ckks_overhead_unet": results["unet-ckks"]["seconds_per_round"] / results["unet-plain"]["seconds_per_round"],
    }, indent=1))


if __name__ == "__main__":
    main()
