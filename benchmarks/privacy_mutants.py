"""Does the mechanism audit catch broken DP code, and is it tight on correct code? One run, JSON out.

The correct implementation and deliberately broken variants of it (mutants,
applied here by monkeypatching, never reachable from a spec) are each put
through ``fedsecure.audit.mechanism.audit_mechanism`` on the default audit's
data at epsilon 8:

* sample level: the default spec's ``sample-dp`` scenario (DP-SGD, Opacus);
* client level: its ``client-dp`` scenario (distributed noise under CKKS) and
  the same with adaptive clipping (quantile 0.5), the only place the count bit
  exists.

A mutant is ``detected`` when the audit's lower bound (95%) exceeds the
accountant's per-round epsilon; the correct implementation is ``flagged`` in a
run when its bound does (per round or whole run). ``tightness`` is claimed
over measured per-round epsilon (1.0: the audit shows all the accountant
claims); the JSON gives its median over runs.

Usage: python benchmarks/privacy_mutants.py [--runs 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from opacus.accountants.accountant import IAccountant
from opacus.optimizers import optimizer as optimizer_module
from opacus.optimizers.optimizer import DPOptimizer, _check_processed_flag, _mark_as_processed

from fedsecure.audit.mechanism import audit_mechanism
from fedsecure.config.spec import AuditSpec, MechanismSpec, ScenarioSpec, load_spec
from fedsecure.data.federated import FederatedData
from fedsecure.privacy import client_level, sample_level
from fedsecure.privacy.client_level import ClientLevelDP
from fedsecure.privacy.sample_level import SampleLevelDP

Patch = Callable[[object, str, object], None]  # setattr that is undone afterwards (pytest's monkeypatch.setattr)
Mutant = Callable[[Patch], None]  # breaks the DP code through ``patch``; the tests apply the same ones


@contextlib.contextmanager
def applied(mutant: Mutant) -> Iterator[None]:
    """``mutant`` in force inside the block, every patched attribute restored after it."""
    saved: list[tuple[object, str, object]] = []

    def patch(owner: object, name: str, value: object) -> None:
        saved.append((owner, name, inspect.getattr_static(owner, name)))  # a staticmethod stays one when put back
        setattr(owner, name, value)

    try:
        mutant(patch)
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


# --- sample-level mutants -------------------------------------------------------------------------------------


def sample_noise_scaled(factor: float) -> Mutant:
    """DP-SGD draws its noise at ``factor`` x the standard deviation its optimizer (and so its accountant) states."""

    def mutate(patch: Patch) -> None:
        secure, seeded = sample_level.gaussian_noise, optimizer_module._generate_noise
        patch(sample_level, "gaussian_noise", lambda shape, std, **kw: secure(shape, std * factor, **kw))
        patch(optimizer_module, "_generate_noise", lambda std, ref, *a, **kw: seeded(std * factor, ref, *a, **kw))

    return mutate


def _accumulate_unclipped(self) -> None:
    for p in self.params:
        _check_processed_flag(p.grad_sample)
        grad = self._get_flat_grad_sample(p).to(p.dtype).sum(dim=0)
        p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
        _mark_as_processed(p.grad_sample)


def sample_clipping_skipped(patch: Patch) -> None:
    """Per-sample gradients summed without clipping."""
    patch(DPOptimizer, "clip_and_accumulate", _accumulate_unclipped)


def noise_reused(module: object) -> Mutant:
    """The first noise vector ``module`` draws of each shape and scale is sent again every time."""

    def mutate(patch: Patch) -> None:
        original = module.gaussian_noise  # type: ignore[attr-defined]
        drawn: dict[tuple, torch.Tensor] = {}

        def once(shape, std, **kwargs):
            key = (tuple(shape), float(std))
            if key not in drawn:
                drawn[key] = original(shape, std, **kwargs)
            return drawn[key].clone()

        patch(module, "gaussian_noise", once)

    return mutate


def sample_rate_told_smaller(divisor: float) -> Mutant:
    """The accountant (and the noise calibration) told a sampling rate ``divisor`` times smaller than the loader's."""

    def mutate(patch: Patch) -> None:
        schedule, hook = SampleLevelDP._schedule, IAccountant.get_optimizer_hook_fn

        def told(batches_per_epoch, training):
            rate, steps = schedule(batches_per_epoch, training)
            return rate / divisor, steps

        patch(SampleLevelDP, "_schedule", staticmethod(told))
        patch(IAccountant, "get_optimizer_hook_fn", lambda self, sample_rate: hook(self, sample_rate / divisor))

    return mutate


# --- client-level mutants -------------------------------------------------------------------------------------


def client_noise_scaled(factor: float) -> Mutant:
    """Each noise draw (shares and central) at ``factor`` x its standard deviation."""

    def mutate(patch: Patch) -> None:
        original = ClientLevelDP._noise
        patch(ClientLevelDP, "_noise", lambda self, shape, scale, generator, device:
              original(self, shape, scale * factor, generator, device))

    return mutate


def client_clipping_skipped(patch: Patch) -> None:
    """Updates go out unclipped (their norms still reported to the count)."""
    patch(client_level, "clip_rows", lambda vectors, max_norm: (vectors, vectors.double().norm(dim=-1)))


def client_uncentred_count_bit(patch: Patch) -> None:
    """Adaptive clipping's count bit sent as [norm <= clip] (sensitivity 1) where the noise assumes 1/2."""

    def uncentred(self, updates):
        clipped, norms = client_level.clip_rows(updates, self.clip)
        bit = (norms <= self.clip).to(clipped.dtype)
        return torch.cat([clipped, bit.unsqueeze(-1)], dim=-1)

    patch(ClientLevelDP, "_clipped_message", uncentred)


MUTANTS: list[tuple[str, str, Mutant]] = [
    ("noise multiplier at half its value", "sample-dp", sample_noise_scaled(0.5)),
    ("noise multiplier at a quarter of its value", "sample-dp", sample_noise_scaled(0.25)),
    ("per-sample clipping skipped", "sample-dp", sample_clipping_skipped),
    ("the same noise vector reused every step", "sample-dp", noise_reused(sample_level)),
    ("accountant told a sampling rate 4x smaller than used", "sample-dp", sample_rate_told_smaller(4.0)),
    ("noise multiplier at half its value", "client-dp", client_noise_scaled(0.5)),
    ("noise multiplier at a quarter of its value", "client-dp", client_noise_scaled(0.25)),
    ("per-update clipping skipped", "client-dp", client_clipping_skipped),
    ("the same noise vector reused every round", "client-dp", noise_reused(client_level)),
    ("adaptive clipping with the uncentred count bit", "client-dp-adaptive", client_uncentred_count_bit),
]


def scenarios(spec: AuditSpec) -> dict[str, ScenarioSpec]:
    """The default spec's DP scenarios, and client-dp with adaptive clipping."""
    found = {s.name: s for s in spec.scenario if s.dp is not None}
    client = found["client-dp"]
    found["client-dp-adaptive"] = client.model_copy(update={
        "name": "client-dp-adaptive", "dp": client.dp.model_copy(update={"adaptive_quantile": 0.5}),
    })
    return found


def audit(spec: AuditSpec, scenario: ScenarioSpec, data: FederatedData, seed: int) -> dict:
    """One mechanism audit; its worst check's figures."""
    options = MechanismSpec(seed=seed)
    run = spec.model_copy(update={"attacks": spec.attacks.model_copy(update={"mechanism": options})})
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        finding = audit_mechanism(run, scenario, data)
    assert finding is not None
    worst = max(finding.checks, key=lambda c: c.per_round_lb / c.per_round_claimed)
    return {
        "claimed_epsilon": worst.per_round_claimed, "empirical_epsilon_lb": worst.per_round_lb,
        "ceiling": worst.per_round_ceiling, "whole_run_claimed": worst.whole_run_claimed,
        "whole_run_lb": worst.whole_run_lb, "flagged": not finding.consistent,
        "tightness": min(c.tightness for c in finding.checks), "statistic": worst.statistic,
        "seconds": time.perf_counter() - started,
    }


def _strict(value: Any) -> Any:
    """``value`` as strict JSON: an unbounded epsilon (a pipeline no noise explains) as the string "unbounded"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "unbounded"
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strict(item) for item in value]
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs of the correct implementation per scenario")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    spec = load_spec().spec
    data = spec.data.federated(spec.seed)
    found = scenarios(spec)
    mutants = []
    for name, scenario, mutant in MUTANTS:
        with applied(mutant):
            row = audit(spec, found[scenario], data, seed=1000)
        mutants.append({"name": name, "level": found[scenario].dp.level, "scenario": scenario,
                        "claimed_epsilon": row["claimed_epsilon"], "empirical_epsilon_lb": row["empirical_epsilon_lb"],
                        "ceiling": row["ceiling"], "detected": row["empirical_epsilon_lb"] > row["claimed_epsilon"],
                        "whole_run_claimed": row["whole_run_claimed"], "whole_run_lb": row["whole_run_lb"],
                        "statistic": row["statistic"], "seconds": round(row["seconds"], 1)})
        print(json.dumps(_strict(mutants[-1])), file=sys.stderr)
    correct = []
    for name, scenario in found.items():
        rows = [audit(spec, scenario, data, seed=run) for run in range(args.runs)]
        lbs = [r["empirical_epsilon_lb"] for r in rows]
        correct.append({
            "name": name, "level": scenario.dp.level, "runs": len(rows), "flagged": sum(r["flagged"] for r in rows),
            "claimed_epsilon": rows[0]["claimed_epsilon"], "empirical_epsilon_median": statistics.median(lbs),
            "tightness": statistics.median(r["tightness"] for r in rows),
            "tightness_worst": max(r["tightness"] for r in rows), "whole_run_claimed": rows[0]["whole_run_claimed"],
            "whole_run_lb_median": statistics.median(r["whole_run_lb"] for r in rows),
            "seconds_per_audit": round(statistics.median(r["seconds"] for r in rows), 1),
        })
        print(json.dumps(correct[-1]), file=sys.stderr)
    result = _strict({"mutants": mutants, "correct": correct})
    text = json.dumps(result, indent=2, allow_nan=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
