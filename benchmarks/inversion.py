"""Gradient inversion: reconstruction quality and seconds against iterations and batch size, in one run.

FedSGD on PneumoniaMNIST, the server attacking one site's round-1 update.
Prints one JSON object:

* ``curves``: for each model ("lenet-dlg" with iDLG, "cnn" with Inverting
  Gradients in the public images' principal subspace, the audit's setting),
  batch size (1, 4, 8) and iteration budget: median PSNR and SSIM over
  ``--images`` attacked images, the prior image's median PSNR, the median gain,
  label accuracy, and seconds. Each budget is its own run from the same start.
* ``batching``: seconds to attack 8 single-image updates (2 restarts each) as
  one vmap-batched problem against one after another, with Inverting
  Gradients on the CNN: ``ratio`` = batched / sequential (below 1: batching pays).
* ``device``: where it ran.

Usage: python benchmarks/inversion.py [--data PATH] [--device cpu|cuda] [--images N] [--iterations 250,500,1000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from attacks.inversion import INVERSION_ATTACKS, Observation
from attacks.metrics import ReconstructionScores, score_reconstruction
from fedsecure.data import load_medmnist
from fedsecure.models import build_model

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pneumoniamnist.npz"
SETTINGS = {
    "lenet-dlg": ("idlg", {}),
    "cnn": (
        "inverting_gradients",
        {"restarts": 2, "lr": 0.01, "tv": 1e-3, "init": "prior", "subspace": 256, "prior_weight": 1e-3},
    ),
}


def observations(model, images, labels, batch_size):
    """The site's FedSGD gradients, one per batch (computed by the 'site', not the attacker)."""
    result = []
    for start in range(0, len(labels), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        gradient = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        result.append(Observation.from_gradient(model, gradient, len(y), tuple(x.shape[1:]), 2))
    return result


def attack_and_score(name, options, obs, truths, public, device):
    attack = INVERSION_ATTACKS.get(name)(**options)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    reconstructions = attack.reconstruct_all(obs, public_images=public)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    prior = public.mean(0).cpu()
    scores = ReconstructionScores.concatenate([
        score_reconstruction(r.images, r.labels, x.cpu(), y.cpu(), prior)
        for r, (x, y) in zip(reconstructions, truths, strict=True)
    ])
    return scores, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--iterations", default="250,500,1000")
    args = parser.parse_args()
    device = torch.device(args.device)
    splits = load_medmnist(args.data)
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(splits.train.labels), args.images, replace=False)
    images = torch.from_numpy(splits.train.images[chosen]).to(device)
    labels = torch.from_numpy(splits.train.labels[chosen]).to(device)
    public = torch.from_numpy(splits.test.images).to(device)

    curves = []
    for model_name, (attack_name, options) in SETTINGS.items():
        model = build_model(model_name, 1, 2, (28, 28), seed=0).to(device)
        for batch_size in (1, 4, 8):
            obs = observations(model, images, labels, batch_size)
            truths = [
                (images[s : s + batch_size], labels[s : s + batch_size]) for s in range(0, args.images, batch_size)
            ]
            for iterations in (int(i) for i in args.iterations.split(",")):
                scores, seconds = attack_and_score(
                    attack_name, {**options, "iterations": iterations}, obs, truths, public, device
                )
                curves.append({
                    "model": model_name, "attack": attack_name, "batch_size": batch_size, "iterations": iterations,
                    "psnr_median": scores.psnr_median, "ssim_median": scores.ssim_median,
                    "prior_psnr_median": scores.prior_psnr_median, "psnr_gain_median": scores.psnr_gain_median,
                    "label_accuracy": scores.label_accuracy, "seconds": seconds,
                })
                print(json.dumps(curves[-1]), flush=True, file=__import__("sys").stderr)

    model = build_model("cnn", 1, 2, (28, 28), seed=0).to(device)
    obs = observations(model, images, labels, 1)
    truths = [(images[k : k + 1], labels[k : k + 1]) for k in range(args.images)]
    options = {**SETTINGS["cnn"][1], "iterations": 200}
    _, batched = attack_and_score("inverting_gradients", options, obs, truths, public, device)
    sequential = sum(
        attack_and_score("inverting_gradients", options, [o], [t], public, device)[1]
        for o, t in zip(obs, truths, strict=True)
    )
    print(json.dumps({
        "device": str(device),
        "curves": curves,
        "batching": {"updates": args.images, "iterations": 200, "batched_seconds": batched,
                     "sequential_seconds": sequential, "ratio": batched / sequential},
    }, indent=1))


if __name__ == "__main__":
    main()
