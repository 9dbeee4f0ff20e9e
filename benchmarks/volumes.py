"""Volumes: a FedAvg round of the default 3D CNN at 28^3 vs 64^3, and decoding NIfTI files with vs without the cache.

Part 1 trains one FedAvg round (3 synthetic sites, ``--per-site`` volumes each,
batch 16, one local epoch) at each size, each size in its own process so that
its peak memory (``ru_maxrss``, and ``torch.cuda.max_memory_allocated`` on
CUDA) is its own; the median of ``--repeats`` rounds after a warm-up round.

Part 2 writes ``--files`` NIfTI volumes (64^3 float32, gzip) and loads them
through fedsecure's MONAI loader three ways: no cache, a cold cache (decode and
write) and a warm cache (read back).

Usage: python benchmarks/volumes.py [--device cpu|cuda] [--per-site N] [--repeats N] [--files N]
Prints one JSON object; ``round_ratio_64_vs_28`` = seconds per round at 64^3 / at 28^3,
``decode_speedup_warm_cache`` = no-cache seconds / warm-cache seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def one_size(size: int, per_site: int, repeats: int, device: str) -> dict:
    """Seconds per FedAvg round and peak memory for the 3D CNN on ``size``^3 synthetic volumes."""
    from fedsecure.data import IID, SyntheticPhantoms, federate
    from fedsecure.fl import FedAvg, Federation, LocalTraining
    from fedsecure.models import build_model

    source = SyntheticPhantoms(n_sites=3, train_samples=3 * per_site, val_samples=0, test_samples=6,
                               image_size=size, spatial_dims=3)
    data = federate(source, 3, IID(min_size=1), seed=0)
    training = LocalTraining(epochs=1, batch_size=16, lr=0.05)
    model = build_model("cnn", data.in_channels, data.n_classes, data.image_size, seed=0)

    def round_seconds() -> float:
        federation = Federation(data, model, FedAvg(), training=training, rounds=1, evaluate_every=0,
                                device=torch.device(device))
        start = time.perf_counter()
        federation.run()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    round_seconds()  # warm-up: allocator, kernels
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = [round_seconds() for _ in range(repeats)]
    result = {
        "size": size, "volumes_per_round": 3 * per_site, "seconds_per_round": statistics.median(seconds),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if device == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def decoding(n_files: int) -> dict:
    """Seconds to load ``n_files`` 64^3 NIfTI volumes: no cache, cold cache, warm cache."""
    import nibabel as nib

    from fedsecure.data.image_files import Preprocessing, load_images

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(n_files):
            paths.append(Path(folder) / f"v{i}.nii.gz")
            nib.save(nib.Nifti1Image(rng.random((64, 64, 64), dtype=np.float32), np.eye(4)), paths[-1])
        preprocessing = Preprocessing(size=(64, 64, 64))
        load_images(paths[:2], preprocessing, None, "bench")  # warm-up: imports and readers, for neither side
        timings = {}
        for name, cache in (("no_cache", None), ("cold_cache", Path(folder) / "cache"),
                            ("warm_cache", Path(folder) / "cache")):
            start = time.perf_counter()
            load_images(paths, preprocessing, cache, "bench")
            timings[f"{name}_seconds"] = time.perf_counter() - start
    return {"files": n_files, "shape": [64, 64, 64], **timings,
            "decode_speedup_warm_cache": timings["no_cache_seconds"] / timings["warm_cache_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--per-site", type=int, default=32, help="training volumes per site")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)  # internal: one size, in a child process
    args = parser.parse_args()
    if args.size is not None:
        print(json.dumps(one_size(args.size, args.per_site, args.repeats, args.device)))
        return

    sizes = {}
    for size in (28, 64):
        child = subprocess.run(
            [sys.executable, __file__, "--size", str(size), "--per-site", str(args.per_site),
             "--repeats", str(args.repeats), "--device", args.device],
            check=True, capture_output=True, text=True,
        )
        sizes[size] = json.loads(child.stdout.strip().splitlines()[-1])
    print(json.dumps({
        "benchmark": "volumes",
        "device": args.device,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "round_28": sizes[28],
        "round_64": sizes[64],
        "round_ratio_64_vs_28": sizes[64]["seconds_per_round"] / sizes[28]["seconds_per_round"],
        "decoding": decoding(args.files),
    }, indent=1))


if __name__ == "__main__":
    main()
