"""Wall time and bytes per round: the in-process engine vs. a Flower deployment on loopback, per protocol.

The deployment is real: a SuperLink with TLS and SuperNode authentication,
one SuperNode per site, each site's data in its own MedMNIST file, `flwr run`
(tests/flower_loopback.py). A round's wall time is the time between two
consecutive finished rounds as the server records them (rounds 2..R: round 1
also holds the set-up), for plain FedAvg, CKKS and SecAgg+. Both engines train
the same model; the benchmark reports how far the final models are apart.

Usage: python benchmarks/flower_round.py [--data PATH] [--sites K] [--rounds R] [--train-subset N]
       [--local-epochs E] [--protocols plain,ckks,secagg]
Prints one JSON object; per protocol: seconds per round on each engine, ``ratio`` = Flower / in-process,
``fixed_overhead_seconds`` = Flower - in-process, and bytes each site sends per round and per parameter.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fedsecure.config.spec import load_spec
from fedsecure.data.site_files import write_site_files
from fedsecure.fl.federation import Federation
from fedsecure.flower.keys import write_site_secret
from fedsecure.models import build_model

# The loopback deployment is test tooling (tests/flower_loopback.py), not part of the
# installed package: `python benchmarks/flower_round.py` puts benchmarks/ on the path, not the repository.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.flower_loopback import LoopbackDeployment

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pneumoniamnist.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--train-subset", type=int, default=1200)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--protocols", default="plain,ckks,secagg")
    args = parser.parse_args()
    protocols = args.protocols.split(",")
    torch.set_num_threads(1)  # the SuperNodes' ClientApps use one thread each too

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        spec_path = root / "spec.toml"
        spec_path.write_text(
            f'name = "flower-round"\nseed = 0\n[data]\nsource = "medmnist"\npath = "{args.data.resolve()}"\n'
            f'sites = {args.sites}\npartition = "iid"\ntrain_subset = {args.train_subset}\n[model]\nname = "cnn"\n'
            f"[federation]\nrounds = {args.rounds}\nbatch_size = 32\nlr = 0.05\nlocal_epochs = {args.local_epochs}\n"
            + "".join(f'[[scenario]]\nname = "{p}"\nprotocol = "{p}"\n' for p in protocols)
        )
        loaded = load_spec(spec_path)
        spec = loaded.spec
        sites = write_site_files(spec, root / "sites")
        if "ckks" in protocols:
            write_site_secret(loaded, "ckks", root / "ckks.key")
        data = spec.data.federated(spec.seed)

        # In-process first, alone: the SuperNodes' start-up would otherwise compete for the two cores.
        in_process = {}
        for scenario in spec.scenario:
            finished: list[float] = []
            model = build_model(spec.model.name, data.in_channels, data.n_classes, data.image_size, spec.seed)
            federation = Federation(
                data, model, spec.federation.strategy_instance(), rounds=spec.federation.rounds,
                training=scenario.local_training(spec.federation, spec.data.task),
                protocol=scenario.protocol_instance(),
                seed=spec.seed,
            )
            result = federation.run(on_round=lambda _, times=finished: times.append(time.perf_counter()))
            in_process[scenario.name] = (statistics.fmean(np.diff(finished)), result.trace.final_global.numpy(),
                                         result.trace.bytes_per_parameter)
            parameters = result.trace.update_length

        results = {}
        with LoopbackDeployment(root / "deployment") as deployment:
            for k, path in enumerate(sites):
                deployment.start_supernode(k, data_path=path,
                                           ckks_secret=root / "ckks.key" if "ckks" in protocols else None)
            for scenario in spec.scenario:
                out = root / f"out-{scenario.name}"
                started = time.perf_counter()
                deployment.submit(spec_path, scenario.name, out, round_timeout=300)
                finding = deployment.wait_for_finding(out, scenario.name, seconds=1800)
                total = time.perf_counter() - started
                progress = [json.loads(line)["time"] for line in (out / f"progress-{scenario.name}.jsonl").open()]
                flower_round = statistics.fmean(np.diff(progress))
                flower_model = np.load(out / f"final-model-{scenario.name}.npz")["vector"]
                in_process_round, in_process_model, in_process_bytes = in_process[scenario.name]
                results[scenario.name] = {
                    "in_process_seconds_per_round": round(in_process_round, 3),
                    "flower_seconds_per_round": round(flower_round, 3),
                    "ratio": round(flower_round / in_process_round, 2),
                    "fixed_overhead_seconds": round(flower_round - in_process_round, 2),
                    "flower_run_seconds": round(total, 1),
                    # What one site sends the server per round, per model parameter (SecAgg+: all four stages).
                    "bytes_per_parameter": {"in_process": round(in_process_bytes, 3),
                                            "flower": round(finding["cost"]["bytes_per_parameter"], 3)},
                    "final_models_max_abs_difference": float(np.abs(flower_model - in_process_model).max()),
                }
    print(json.dumps({
        "benchmark": "flower_round", "sites": args.sites, "rounds": args.rounds,
        "train_images": args.train_subset, "local_epochs": args.local_epochs, "parameters": parameters,
        "transport": "tls+node-auth", "machine": platform.processor() or platform.machine(),
        "cpu_threads_per_site": 1, "scenarios": results,
    }, indent=2))


if __name__ == "__main__":
    main()
