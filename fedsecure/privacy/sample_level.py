"""Sample-level DP: DP-SGD in every site through Opacus, the unit of privacy is one patient.

Each site keeps its own Opacus ``PrivacyEngine`` (and so its own accountant),
its own DP-compatible copy of the model, optimizer and Poisson-sampling data
loader for the whole federation: the accountant sees every local step of every
round. The noise multiplier is calibrated per site from the target
(epsilon, delta) over the planned rounds x local epochs of steps at the site's
sampling rate ``batch_size / n_site``. The reported epsilon is the largest over
the sites (each site protects its own patients).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import types
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override

from fedsecure.errors import NotSupportedError
from fedsecure.fl.privacy_hooks import CanaryTrials, FederationFacts, LocalLoop, PrivacyMechanism, PrivacyReport
from fedsecure.fl.state import ModelState
from fedsecure.fl.training import OPTIMIZERS, GradientCorrection, LocalTraining
from fedsecure.models import make_dp_compatible
from fedsecure.privacy.accounting import calibrate_noise, extend, spent_epsilon
from fedsecure.privacy.adversaries import sample_level_guarantees
from fedsecure.privacy.noise import gaussian_noise
from fedsecure.seeding import derive_seed

if TYPE_CHECKING:
    from opacus import PrivacyEngine

# Opacus itself is imported where a site's private training is built (below): a Flower ClientApp of a
# run without sample-level DP then never loads it (a process per message; it costs 0.7-1.4 s).

# Opacus's per-sample gradient modes. "ghost" (fast gradient clipping) never
# materialises per-sample gradients, which saves memory on large layers, but it
# runs two backward passes: on the default CNN on a CPU it measured slower than
# "hooks" (benchmarks/dp_sgd_step.py: 1.86x vs 1.19x a non-private step at
# batch 256), so "hooks" is the default and "ghost" a choice.
# Canaries per probe run (each run's per-sample gradients take canaries x 2 x 2 canaries x 4 bytes x the rate).
_CANARIES_PER_RUN = 4000
_CANARY_NORM_IN_CLIPS = 3.0  # a canary's raw gradient norm: above the clip, so that clipping is exercised

GRAD_SAMPLE_MODES = ("hooks", "ghost", "functorch", "ew")


@dataclass
class _Site:
    model: nn.Module
    state: ModelState
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    loader: DataLoader
    engine: PrivacyEngine
    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    epochs: int
    sampling: torch.Generator  # the loader's batch sampling: one stream per site for the whole run
    noise: torch.Generator  # Opacus's noise (seeded mode; secure_rng draws from the OS instead)
    physical_batch_size: int | None = None  # FedSGD's whole-site step, computed in chunks of this many images


@dataclass
class SampleLevelDP(PrivacyMechanism):
    """DP-SGD at every site (Abadi et al. 2016) with Opacus.

    Args:
        epsilon: target epsilon per site over the planned rounds.
        delta: target delta.
        clip: per-sample gradient norm bound.
        accountant: registered accountant name ("rdp", "prv").
        secure_rng: draw the noise from the OS CSPRNG and seed batch sampling from it.
        grad_sample_mode: Opacus per-sample gradient mode ("hooks", "ghost", ...).
        noise_multiplier: a fixed noise multiplier instead of the calibrated one
            (audits replay a scenario's calibrated noise on a probe site; see
            :meth:`site_noise`).
    """

    epsilon: float
    delta: float
    clip: float = 1.0
    accountant: str = "rdp"
    secure_rng: bool = False
    grad_sample_mode: str = "hooks"
    noise_multiplier: float | None = None
    _facts: FederationFacts | None = field(default=None, init=False, repr=False)
    _model: nn.Module | None = field(default=None, init=False, repr=False)
    _sites: dict[int, _Site] = field(default_factory=dict, init=False, repr=False)
    _data: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, init=False, repr=False)
    _notes: list[str] = field(default_factory=list, init=False, repr=False)
    _full_batch: bool = field(default=False, init=False, repr=False)
    _resumed: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict, init=False, repr=False)
    _reported: dict[int, list[tuple[float, float, int]]] = field(default_factory=dict, init=False, repr=False)

    level = "sample"

    def __post_init__(self) -> None:
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ValueError(f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, got {self.grad_sample_mode!r}")

    @override
    def prepare_model(self, model: nn.Module) -> nn.Module:
        if self.grad_sample_mode == "ew":
            unsupported = sorted({
                type(m).__name__ for m in model.modules()
                if any(True for _ in m.parameters(recurse=False)) and not isinstance(m, _EXPANDED_WEIGHTS_LAYERS)
            })
            if unsupported:
                raise NotSupportedError(
                    f"grad_sample_mode 'ew' (torch's expanded weights) cannot differentiate {', '.join(unsupported)} "
                    f"per sample; use 'hooks' (Opacus differentiates those through functorch)"
                )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self._model = make_dp_compatible(model)
        for warning in caught:
            self._warn(str(warning.message))
        return self._model

    @override
    def calibrate(self, facts: FederationFacts) -> None:
        self._facts = facts
        self._full_batch = facts.full_batch
        smallest = min(facts.site_sizes)
        if self.delta >= 1 / smallest:
            self._warn(
                f"delta {self.delta:g} >= 1/{smallest} (the smallest site's patients): a mechanism may then "
                "reveal a whole record with probability delta; the guarantee is weak"
            )
        if not self.secure_rng:
            self._warn("DP-SGD noise and batch sampling come from seeded, non-cryptographic generators "
                       "(secure_rng = false): a simulation, not a guarantee: anyone who learns the seed (it is in "
                       "report.json) can replay the noise")

    @override
    def local_loop(self, site: int) -> LocalLoop:
        def dp_sgd(model, images, labels, training, generator, correction, full_batch):
            # Opacus's loader samples the batches (its own generator), clips, noises and accounts every step;
            # the strategy's correction is added to the released (noised) gradient: post-processing.
            if full_batch != self._full_batch:
                raise RuntimeError("the strategy's local work is not the one the noise was calibrated for")
            dp = self._site(site, images, labels)
            dp.optimizer.original_optimizer.state.clear()  # momentum and Adam moments start fresh every round
            dp.state.model.load_state_dict(model.state_dict())
            steps = _local_epochs(dp, dp.epochs, correction=correction)
            model.load_state_dict(dp.state.model.state_dict())
            return steps

        return dp_sgd

    def _site_training(self, n_train: int, training: LocalTraining) -> LocalTraining:
        """``training`` as DP-SGD runs it at a site of ``n_train`` images.

        FedSGD's one step is one batch of all the site's images (sampling rate 1), a plain
        gradient step as without DP (no momentum, no weight decay).
        """
        if self._full_batch:
            return dataclasses.replace(training, batch_size=n_train, epochs=1, momentum=0.0, weight_decay=0.0)
        return training

    def _site(self, site: int, images: torch.Tensor, labels: torch.Tensor) -> _Site:
        if site in self._sites:
            return self._sites[site]
        facts = self._facts
        if self.secure_rng:
            seed = int.from_bytes(os.urandom(8), "little") >> 1
        else:
            seed = derive_seed(facts.seed, "dp-sgd", site)
        self._sites[site] = self._private_training(
            copy.deepcopy(self._model), images, labels, self._site_training(len(images), facts.training),
            self.noise_multiplier, seed,
            facts.private_names,
        )
        if self._full_batch:
            # One logical step of every image, its per-sample gradients taken in chunks of the federation's batch
            # size (Opacus's BatchMemoryManager: the optimizer clips and adds up, and steps once, with one noise).
            self._sites[site].physical_batch_size = facts.training.batch_size
        if site in self._resumed:  # a Flower site in a new process: its accountant and generators go on
            saved = self._resumed.pop(site)
            dp = self._sites[site]
            dp.engine.accountant.history = _history_of(saved["history"])
            dp.sampling.set_state(saved["sampling"])
            dp.noise.set_state(saved["noise"])
        return self._sites[site]

    @override
    def site_state(self, site: int) -> dict[str, torch.Tensor]:
        dp = self._sites.get(site)
        if dp is None:
            return dict(self._resumed.get(site, {}))  # not trained in this message: what it was resumed from
        return {"history": _history_tensor(dp.engine.accountant.history), "sampling": dp.sampling.get_state(),
                "noise": dp.noise.get_state()}

    @override
    def load_site_state(self, site: int, state: Mapping[str, torch.Tensor]) -> None:
        if state:
            self._resumed[site] = dict(state)

    @override
    def site_report(self, site: int) -> dict[str, torch.Tensor]:
        state = self.site_state(site)
        return {"history": state["history"]} if "history" in state else {}

    @override
    def take_site_report(self, site: int, report: Mapping[str, torch.Tensor]) -> None:
        """The server's copy of a site's accountant history (the schedule, public), for its report and stop rule."""
        if "history" in report:
            self._reported[site] = _history_of(report["history"])

    @override
    def account_unreported(self, site: int) -> None:
        # It may have trained before its reply was lost: count the round (its next report, if any, replaces this).
        self._reported[site] = extend(self._histories().get(site, []), *self._round_of(site))

    def _histories(self) -> dict[int, list[tuple[float, float, int]]]:
        """Each site's accountant history: its own where it trained here, else what it reported."""
        live = {k: list(s.engine.accountant.history) for k, s in self._sites.items()}
        return {**self._reported, **live}

    def _private_training(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, training: LocalTraining,
        noise: float | None, seed: int, private_names: frozenset[str] | set[str],
    ) -> _Site:
        """Opacus's DP-SGD around ``model`` on this data: the one place a site's private training is built."""
        from opacus import PrivacyEngine
        from opacus.data_loader import DPDataLoader

        sampling = torch.Generator().manual_seed(derive_seed(seed, "sampling"))
        loader = DPDataLoader.from_data_loader(
            DataLoader(TensorDataset(images, labels), batch_size=training.batch_size), generator=sampling,
        )
        sample_rate, steps_per_round = self._schedule(len(loader), training)
        # The plan (site_schedule) must see the schedule the loader gives: Opacus's length is int(1 / rate).
        assert len(loader) == _loader_batches(len(images), training.batch_size), "Opacus's loader length changed"
        if noise is None:
            steps = steps_per_round * self._facts.rounds
            noise = calibrate_noise(self.epsilon, self.delta, sample_rate, steps, self.accountant)
        optimizer = OPTIMIZERS.get(training.optimizer)(
            model.parameters(), lr=training.lr, momentum=training.momentum, weight_decay=training.weight_decay
        )
        loss = training.objective.criterion()  # the task's loss: a mean of per-sample losses, as clipping assumes
        # Opacus draws the noise where the gradients are: its generator must live on the model's device.
        noise_generator = torch.Generator(device=_device_of(model)).manual_seed(derive_seed(seed, "noise"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Opacus's own RNG notice; ours is in the report
            engine = PrivacyEngine(accountant=self.accountant)
            wrapped = engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader, criterion=loss,
                noise_multiplier=noise, max_grad_norm=self.clip, poisson_sampling=False,
                grad_sample_mode=self.grad_sample_mode, noise_generator=noise_generator,
            )
        dp_model, dp_optimizer, criterion, dp_loader = (
            wrapped if len(wrapped) == 4 else (wrapped[0], wrapped[1], loss, wrapped[2])
        )
        if self.secure_rng:
            dp_optimizer.add_noise = types.MethodType(_secure_add_noise, dp_optimizer)
        return _Site(
            model=dp_model, state=ModelState(model, private=private_names), optimizer=dp_optimizer,
            criterion=criterion, loader=dp_loader, engine=engine, noise_multiplier=noise,
            sample_rate=sample_rate, steps_per_round=steps_per_round, epochs=training.epochs,
            sampling=sampling, noise=noise_generator,
        )

    @staticmethod
    def _schedule(batches_per_epoch: int, training: LocalTraining) -> tuple[float, int]:
        # Opacus samples each record with rate 1 / (batches per epoch) and accounts at that rate.
        return 1.0 / batches_per_epoch, training.epochs * batches_per_epoch

    def site_schedule(self, n_train: int, training: LocalTraining) -> tuple[float, int]:
        """The (sampling rate, steps per round) a site of ``n_train`` images trains with, as its loader gives them."""
        training = self._site_training(n_train, training)
        return self._schedule(_loader_batches(n_train, training.batch_size), training)

    def site_noise(self, n_train: int, training: LocalTraining, rounds: int) -> tuple[float, float]:
        """The (noise multiplier, sampling rate) a site of ``n_train`` images trains with, without training it."""
        sample_rate, steps_per_round = self.site_schedule(n_train, training)
        noise = calibrate_noise(self.epsilon, self.delta, sample_rate, steps_per_round * rounds, self.accountant)
        return noise, sample_rate

    @override
    def pin_noise_to_site(self, n_train: int, training: LocalTraining, rounds: int, full_batch: bool = False) -> str:
        self._full_batch = full_batch
        self.noise_multiplier, sample_rate = self.site_noise(n_train, training, rounds)
        return (
            f"the probe's DP-SGD adds the scenario's noise: multiplier {self.noise_multiplier:.3g}, calibrated for "
            f"the site's {n_train} images at sampling rate {sample_rate:.3g}; its batch is the probed images"
        )

    @override
    def canary_trials(self, site_size: int, trials: int, seed: int) -> list[CanaryTrials]:
        """DP-SGD's own pipeline (Opacus's loader, clipping and noise; ours where secure_rng) on gradient canaries.

        A white-box probe (Steinke, Nasr and Jagielski 2023): a linear model
        at zero, so a sample's gradient is known exactly, run through
        :meth:`_private_training` with the scenario's noise, clip, sampling
        rate and optimizer, and one round's steps. Each canary is a sample
        whose gradient lies on its own coordinate with three times the clip
        norm; half the canaries are in the data, the other half's
        coordinates are never touched by any sample. Per-sample clipping
        and per-coordinate noise make every coordinate an independent trial,
        so one run gives thousands. The learning rate is 0 so that every
        step's gradient is taken at the same point: the observer reads each
        step's released (clipped, noised, averaged) gradient, the releases
        the accountant composes; the server's round update is their sum.
        """
        training = self._site_training(site_size, self._facts.training)
        batches = math.ceil(site_size / training.batch_size)
        chunk = max(batches, _CANARIES_PER_RUN // batches * batches)  # the loader's rate is 1 / batches exactly
        without, with_canary, recorded = [], [], []
        noise = self.noise_multiplier  # None: the first probe calibrates itself as the site does; the rest reuse it
        for run in range(math.ceil(trials / chunk)):
            inside, outside, history = self._canary_run(
                chunk, batches, training, noise, derive_seed(seed, "canaries", run)
            )
            noise = history[0][0]
            with_canary.append(inside)
            without.append(outside)
            recorded.append(history)
        # The claim is what the probe's own Opacus accountant recorded for the round (the record the run's reported
        # epsilon is computed from), not what the calibration intended.
        if any(history != recorded[0] for history in recorded) or len(recorded[0]) != 1:
            raise RuntimeError(f"the DP-SGD accountant recorded changing mechanisms within one round: {recorded}")
        ((noise, sample_rate, steps),) = recorded[0]
        return [CanaryTrials(
            canary=f"a sample whose gradient norm is {_CANARY_NORM_IN_CLIPS:g} x the clip",
            without=np.concatenate(without)[:trials, :, None],
            with_canary=np.concatenate(with_canary)[:trials, :, None],
            signal=np.ones((steps, 1)), noise_std=np.array([noise]), sample_rate=sample_rate, noise_multiplier=noise,
            steps_per_round=steps, whole_run=[(noise, sample_rate, steps * self._facts.rounds)], delta=self.delta,
            accountant=self.accountant,
            observer=(f"every DP-SGD step's released gradient at a site of {site_size} images ({steps} steps per "
                      "round): the releases the accountant composes (the server sees their sum)"),
            assumptions=[
                "white-box gradient canaries: a probe model whose per-sample gradients the auditor sets; the "
                "scenario's clip, noise calibration, sampling rate, optimizer and accountant, and Opacus's code, "
                "are the run's",
            ],
        )]

    def _canary_run(
        self, canaries: int, batches: int, training: LocalTraining, noise: float | None, seed: int
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float, int]]]:
        """One probe run: per-step outputs (canaries, steps) of the included and of the absent canaries.

        Also returns what the probe's accountant recorded (its history). ``noise`` None: the probe calibrates
        itself as a site with ``batches`` batches per epoch does.
        """
        width = 2 * canaries  # coordinates [0, canaries) belong to included canaries, the rest to absent ones
        probe = nn.Linear(width, 2, bias=False)
        nn.init.zeros_(probe.weight)
        # At zero weights the cross-entropy gradient of (x, label 0) is (-x/2, x/2): norm |x| / sqrt 2.
        inputs = torch.zeros(canaries, width)
        inputs[torch.arange(canaries), torch.arange(canaries)] = _CANARY_NORM_IN_CLIPS * self.clip * math.sqrt(2)
        labels = torch.zeros(canaries, dtype=torch.long)
        probe_training = dataclasses.replace(training, batch_size=canaries // batches, lr=0.0, weight_decay=0.0)
        dp = self._private_training(probe, inputs, labels, probe_training, noise, seed, frozenset())
        released: list[torch.Tensor] = []
        weight = next(p for p in dp.model.parameters())

        def read() -> None:
            grad = weight.grad.detach().double()
            # The clipped canary's gradient is clip * (-1, 1) / sqrt 2 on its coordinate: project on that direction.
            released.append((grad[1] - grad[0]) / math.sqrt(2))

        _local_epochs(dp, training.epochs, after_step=read)
        expected_batch = dp.optimizer.expected_batch_size
        outputs = torch.stack(released).T.numpy() * expected_batch / self.clip  # (width, steps), sensitivity units
        history = [(float(z), float(rate), int(steps)) for z, rate, steps in dp.engine.accountant.history]
        return outputs[:canaries], outputs[canaries:], history

    @override
    def round_fits(self, participants: list[int]) -> bool:
        histories = self._histories()
        for k in participants:
            if not histories.get(k):
                continue  # not trained yet: calibrated to fit all planned rounds
            noise, sample_rate, steps_per_round = self._round_of(k)
            after = extend(histories[k], noise, sample_rate, steps_per_round)
            if spent_epsilon(after, self.delta, self.accountant) > self.epsilon:
                return False
        return True

    def _round_of(self, site: int) -> tuple[float, float, int]:
        """(noise multiplier, sampling rate, steps) of one round at ``site``: its own, or the plan's for its size."""
        dp = self._sites.get(site)
        if dp is not None:
            return dp.noise_multiplier, dp.sample_rate, dp.steps_per_round
        facts = self._facts
        assert facts is not None, "calibrate() first"
        n_train = facts.site_sizes[site]
        sample_rate, steps_per_round = self.site_schedule(n_train, facts.training)
        noise = self.noise_multiplier if self.noise_multiplier is not None else (
            self.site_noise(n_train, facts.training, facts.rounds)[0]
        )
        return noise, sample_rate, steps_per_round

    @override
    def end_round(self, participants: list[int]) -> float:
        return max((self._epsilon(h) for h in self._histories().values()), default=0.0)

    def _epsilon(self, history: list[tuple[float, float, int]]) -> float:
        return spent_epsilon(history, self.delta, self.accountant)

    @override
    def report(self, rounds_completed: int, stopped_early: bool) -> PrivacyReport:
        per_site = [
            {"site": k, "epsilon": self._epsilon(history), "noise_multiplier": float(history[0][0]),
             "sample_rate": float(history[0][1]), "steps": sum(n for _, _, n in history)}
            for k, history in sorted(self._histories().items()) if history
        ]
        return self._report(per_site, rounds_completed, stopped_early)

    @override
    def planned_report(self) -> PrivacyReport:
        facts = self._facts
        assert facts is not None, "calibrate() first"
        per_site = []
        for k, n_train in enumerate(facts.site_sizes):
            noise, sample_rate = self.site_noise(n_train, facts.training, facts.rounds)
            steps = self.site_schedule(n_train, facts.training)[1] * facts.rounds
            per_site.append({
                "site": k, "epsilon": spent_epsilon([(noise, sample_rate, steps)], self.delta, self.accountant),
                "noise_multiplier": noise, "sample_rate": sample_rate, "steps": steps,
            })
        return self._report(per_site, facts.rounds, stopped_early=False)

    def _report(self, per_site: list[dict], rounds_completed: int, stopped_early: bool) -> PrivacyReport:
        worst = max(per_site, key=lambda r: r["epsilon"]) if per_site else None
        return PrivacyReport(
            level=self.level, unit="patient (sample)", epsilon=worst["epsilon"] if worst else 0.0, delta=self.delta,
            noise_multiplier=worst["noise_multiplier"] if worst else 0.0,
            sample_rate=worst["sample_rate"] if worst else 0.0, steps=worst["steps"] if worst else 0,
            accountant=self.accountant, target_epsilon=self.epsilon, secure_rng=self.secure_rng,
            stopped_early=stopped_early, rounds_completed=rounds_completed, notes=list(self._notes), per_site=per_site,
            by_adversary=sample_level_guarantees(
                epsilon=worst["epsilon"], noise_multiplier=worst["noise_multiplier"],
                sample_rate=worst["sample_rate"], steps=worst["steps"], accountant=self.accountant,
            ) if worst else [],
            worst_party="public, server and site alike" if worst else None,
            protected_units=sum(self._facts.site_sizes) if self._facts else None,
            mechanism={
                "noise_multiplier": worst["noise_multiplier"], "sample_rate": worst["sample_rate"],
                "steps": worst["steps"], "delta": self.delta, "clip": self.clip,
                "neighbouring": "add/remove one training image at one site",
            } if worst else None,
        )


# The layers with parameters torch's expanded weights computes per-sample gradients for.
_EXPANDED_WEIGHTS_LAYERS = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, nn.GroupNorm, nn.LayerNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
)


def _local_epochs(
    dp: _Site, epochs: int, after_step: Callable[[], None] | None = None, correction: GradientCorrection | None = None
) -> int:
    """Run ``epochs`` of DP-SGD (every Poisson batch the loader draws); the number of steps taken.

    ``correction`` (a strategy's data-independent term) is added to each step's gradient after
    Opacus clipped, noised and accounted it, before the underlying optimizer steps.
    """
    dp.model.train()
    # The correction runs right before the underlying optimizer steps: after Opacus's pre_step has clipped,
    # noised, scaled and accounted the gradient (DPOptimizer.step calls the original step only then).
    hook = (dp.optimizer.original_optimizer.register_step_pre_hook(lambda *_: correction(dp.state.model))
            if correction is not None else None)
    try:
        return _steps(dp, epochs, after_step)
    finally:
        if hook is not None:
            hook.remove()


def _steps(dp: _Site, epochs: int, after_step: Callable[[], None] | None) -> int:
    accountant = dp.engine.accountant
    with contextlib.ExitStack() as stack:
        # torch notes that ghost clipping's hooks fire on outputs (inputs need no gradient): expected.
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loader = dp.loader
        if dp.physical_batch_size is not None:
            from opacus.utils.batch_memory_manager import BatchMemoryManager

            loader = stack.enter_context(BatchMemoryManager(
                data_loader=dp.loader, max_physical_batch_size=dp.physical_batch_size, optimizer=dp.optimizer
            ))
        steps = 0
        for _ in range(epochs):
            for batch_images, batch_labels in loader:
                dp.optimizer.zero_grad(set_to_none=True)
                if len(batch_images):
                    dp.criterion(dp.model(batch_images), batch_labels).backward()
                else:
                    _empty_batch_gradients(dp.optimizer)
                before = _accounted_steps(accountant)
                dp.optimizer.step()
                if _accounted_steps(accountant) > before:  # a step taken, not a chunk of one (its hook accounted it)
                    steps += 1
                    if after_step is not None:
                        after_step()
    return steps


def _accounted_steps(accountant) -> int:
    return sum(steps for _, _, steps in accountant.history)


def _history_tensor(history: list[tuple[float, float, int]]) -> torch.Tensor:
    """An Opacus accountant's history, ``[(noise multiplier, sampling rate, steps)]``, as a tensor."""
    return torch.tensor([[float(z), float(q), float(n)] for z, q, n in history], dtype=torch.float64).reshape(-1, 3)


def _history_of(tensor: torch.Tensor) -> list[tuple[float, float, int]]:
    """:func:`_history_tensor`'s history back."""
    return [(float(z), float(q), int(n)) for z, q, n in tensor.tolist()]


def _loader_batches(n_train: int, batch_size: int) -> int:
    """Steps per epoch of Opacus's DPDataLoader over ``n_train`` images in batches of ``batch_size``.

    Its sampling rate is 1 / ceil(n / B) and its length int(1 / rate), which the float division makes
    one short for some counts (93 batches give 92 steps): the run accounts at 1 / 92, and so must the plan.
    """
    return int(1 / (1 / math.ceil(n_train / batch_size)))


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _empty_batch_gradients(optimizer: torch.optim.Optimizer) -> None:
    """What an empty Poisson batch contributes: no per-sample gradient, so the step is the noise alone.

    Poisson sampling draws an empty batch now and then, and it must still be a step (the
    accountant counts it). Opacus's own layers take an empty batch, but the layers it
    differentiates through functorch (a UNet's transposed convolutions and PReLU) fail on
    one, so no forward pass is run: every parameter gets an empty per-sample gradient
    (hooks, functorch) and a zero gradient (ghost clipping), and the optimizer adds the noise.
    """
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if parameter.requires_grad:
                parameter.grad_sample = parameter.new_zeros((0, *parameter.shape))
                parameter.grad = torch.zeros_like(parameter)


def _secure_add_noise(self) -> None:
    # Opacus's DPOptimizer.add_noise with the noise drawn from the OS CSPRNG
    # (Opacus's secure mode needs torchcsprng, which has no build for current torch).
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    for p in self.params:
        _check_processed_flag(p.summed_grad)
        noise = gaussian_noise(
            p.summed_grad.shape, self.noise_multiplier * self.max_grad_norm, secure=True,
            device=p.summed_grad.device, dtype=p.summed_grad.dtype,
        )
        p.grad = (p.summed_grad + noise).view_as(p)
        _mark_as_processed(p.summed_grad)
