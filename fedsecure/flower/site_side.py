"""One hospital's side of a fedsecure federation on Flower: what the ClientApp runs for each message.

(:mod:`fedsecure.flower.site_app` is the ClientApp itself; it imports this module, and with
it torch and the engine, only for the messages that need them.)

Each SuperNode is one site. It holds its own data (``data-path`` in its node
config: a MedMNIST-format ``.npz`` whose train split it trains on and whose test
split is its local test set) and, for CKKS, the secret context the sites share
(``ckks-secret``: a file from ``fedsecure keygen``). With ``spec-sha256`` in its
node config, a site takes part only in the study whose spec has that hash. The server sends the spec;
the site rebuilds the same model, strategy, privacy mechanism and protocol
from it and runs :class:`~fedsecure.fl.site.SiteRunner`, the code the
in-process engine runs.

``device`` in the node config chooses where the site trains (default cpu);
the environment variable ``FEDSECURE_THREADS`` its torch threads (SuperNodes
sharing one machine should use one each).

Flower starts a fresh ClientApp process for every message, so what a site
carries between rounds (its copy of the global model, the strategy's server
state, its private layers) lives in the SuperNode's ``context.state``.

Messages (server -> site):

* ``query``: the spec and the scenario; the site answers with its size, image
  shape and, for CKKS, the context *without* its secret key.
* ``train``: the round, the site's index and the federation's facts, plus the
  aggregates the site has not applied yet. The site applies them (reveal,
  strategy step), evaluates the model they give on its test split, trains,
  and answers with its protected update.
* ``evaluate``: the last aggregates; the site applies them and answers with the
  final model and its evaluation.

What leaves a site: its size, image shape and class count, its protected
updates, the final global model and, as its evaluation, counts of fixed shapes
(:func:`~fedsecure.fl.evaluation.score_histograms`: score histograms per class
and a confusion matrix); never an image, nor a score or label tied to an image.
The histograms are fine (bins 2^-10 wide in logit), so they give each test
score to within its bin with the labels in that bin: whoever holds one of the
site's test images and the model can read that image's label.

What a site checks (the server is not trusted to tell the truth about the
federation): the spec against the one it pinned (``spec-sha256``); the
federation's facts in each round against that spec and its own data
(:func:`check_round_facts`: the site count and sizes its noise is calibrated
from); and, before using an aggregate, that it carries the weight of at least
the quorum of sites (:mod:`fedsecure.secure.quorum`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict

from fedsecure.config.parts import SHAPE_KEYS, build_parts, model_shape
from fedsecure.config.spec import AuditSpec, parse_spec
from fedsecure.data.federated import SiteData
from fedsecure.data.image_files import default_cache_dir
from fedsecure.data.medmnist import load_medmnist
from fedsecure.devices import resolve_device
from fedsecure.errors import FedsecureError
from fedsecure.fl.evaluation import score_histograms
from fedsecure.fl.privacy_hooks import PrivacyMechanism
from fedsecure.fl.server import participation_share, reveal_quorum
from fedsecure.fl.site import SiteRunner, next_global
from fedsecure.fl.trace import ClientRound
from fedsecure.flower import wire
from fedsecure.secure.protocol import ClientRole
from fedsecure.secure.quorum import QuorumCheckedClient, quorum_weight
from fedsecure.secure.secagg_site import answer_stage
from fedsecure.seeding import numpy_rng

STATE = "fedsecure"


class ServerClaimError(FedsecureError):
    """The server's account of the federation contradicts the spec the site pinned or the site's own data."""


@dataclass(frozen=True)
class LocalSite:
    """Where a site's data and key come from: its node config, or (in simulation) the caller."""

    data: Callable[[int, AuditSpec], SiteData]
    secret: Callable[[], bytes]


def from_node_config(node_config: dict) -> LocalSite:
    """A deployed SuperNode's data and key, from ``--node-config``.

    ``data-path`` is a MedMNIST-format ``.npz`` or a datalist (Decathlon ``.json`` or
    ``.csv``) of the hospital's own files, loaded with the spec's preprocessing and cached
    in ``cache-dir`` (default: the user's cache folder; ``""`` for no cache).
    """

    def data(index: int, spec: AuditSpec) -> SiteData:
        if "data-path" not in node_config:
            raise FedsecureError('this SuperNode has no data: start it with --node-config \'data-path="SITE.npz"\'')
        path = Path(str(node_config["data-path"]))
        if path.suffix.lower() in (".json", ".csv"):
            if spec.data.source != "files":
                # Only a files spec says how the images are preprocessed; any other default would train on
                # intensities the audit never saw.
                raise FedsecureError(
                    f"data-path {path} is a datalist but the spec's data.source is {spec.data.source!r}: "
                    "use a spec with source = \"files\" (its window/percentiles, size, ... preprocess the files)"
                )
            # The audit's name for the site, so a datalist without splits is split as the audit split it. The
            # name seeds that split: the site says which it is, never the server.
            listed = spec.data.site or []
            if listed and not 0 <= claimed_index(node_config) < len(listed):
                raise FedsecureError(
                    f"the spec lists {len(listed)} hospitals ([[data.site]]): start this SuperNode with "
                    "--node-config 'site=K' (K its index from 0) so that it, not the server, says which it is"
                )
            name = listed[index].name if listed else f"site-{index}"
            # The cache holds decoded patient images: where it lives, and whether there is one, is the hospital's
            # choice (node config `cache-dir`; "" for none); the spec, which comes from the server, may only turn
            # it off.
            chosen = str(node_config.get("cache-dir", default_cache_dir()))
            cache = Path(chosen) if chosen and spec.data.cache else None
            return spec.data.site_data(name, path, spec.seed, cache_dir=cache)
        # One hospital's data may hold a single class (a non-iid split); the federation has the others.
        splits = load_medmnist(path, min_classes=1)
        return SiteData(name=f"site-{index}", train=splits.train, test=splits.test, val=splits.val)

    def secret() -> bytes:
        if "ckks-secret" not in node_config:
            raise FedsecureError(
                "this scenario uses CKKS but the SuperNode holds no key: start it with "
                "--node-config 'ckks-secret=\"KEY.ctx\"' (a file from fedsecure keygen, shared by the sites)"
            )
        return Path(str(node_config["ckks-secret"])).read_bytes()

    return LocalSite(data=data, secret=secret)


def client_record(record: ClientRound) -> ConfigRecord:
    """What a site's part of a round cost, as its reply states it."""
    return ConfigRecord({
        "steps": record.steps, "train_seconds": record.train_seconds,
        "protect_seconds": record.protect_seconds, "weight": record.weight, "bytes_up": record.bytes_up,
    })


def train(message: Message, context: Context, local: LocalSite) -> Message:
    """A site's answer to a ``train`` message: apply the aggregates, evaluate, train, send the protected update."""
    site = _Site(message, context, local)
    reply = site.catch_up()
    round_number = int(message.content.config_records["round"]["round"])
    update, record = site.runner.message(site.global_vector, round_number, site.client)
    wire.put_message(reply, "update", update)
    reply.config_records["client"] = client_record(record)
    site.report_privacy(reply)
    site.save()
    return Message(reply, reply_to=message)


def evaluate(message: Message, context: Context, local: LocalSite) -> Message:
    """A site's answer to an ``evaluate`` message: apply the last aggregates, send the model and its evaluation."""
    site = _Site(message, context, local)
    reply = site.catch_up()
    wire.put_tensors(reply, "global", {"vector": site.global_vector})
    site.report_privacy(reply)
    site.save()
    return Message(reply, reply_to=message)


def setup(message: Message, context: Context, local: LocalSite) -> Message:
    """A site's answer to the ``query`` (setup) message."""
    spec_config = message.content.config_records["setup"]
    answer = answer_setup(str(spec_config["spec"]), str(spec_config["scenario"]), dict(context.node_config),
                          local, context.state)
    return Message(RecordDict({"site": answer}), reply_to=message)


def secagg_collect(message: Message, context: Context, local: LocalSite) -> Message:
    """A site's answer to SecAgg+'s masked-vector stage: Flower's client mod asks for the site's update.

    The site applies the aggregates it was sent, evaluates the model they give, and trains, as
    for a ``train`` message; the mod quantizes and masks the update.
    """
    site = _Site(message, context, local)
    records = site.catch_up()
    round_number = int(message.content.config_records["round"]["round"])
    sent: list[ClientRound] = []

    def contribution() -> tuple[np.ndarray, int]:
        _, record = site.runner.message(site.global_vector, round_number, site.client)
        sent.append(record)
        assert site.runner.last_sent is not None
        return site.runner.last_sent.detach().cpu().double().numpy().reshape(-1), int(site.runner.weight)

    # The in-process engine's rounding stream for this site and round: both engines quantize alike.
    seed = int(numpy_rng(site.runner.seed, "secagg-rounding", site.runner.index, round_number).integers(2**32))
    reply = answer_stage(message, context.state, contribution, seed)
    # Flower's mod empties the reply's arrays (the update); the evaluation and what was applied go back on.
    for key, record in records.items():
        reply.content[key] = record
    reply.content.config_records["client"] = client_record(sent[0])
    site.report_privacy(reply.content)
    site.save()
    return reply


def answer_setup(
    spec_text: str, scenario_name: str, node_config: dict, local: LocalSite, state: RecordDict
) -> ConfigRecord:
    """A site's answer to the server's setup message; keeps the spec in ``state`` for the rounds.

    The answer: the site's size and image shape, and for CKKS the context without its
    secret key (what the server needs to add ciphertexts) with a hash of the key file.

    Raises:
        FedsecureError: the spec is not the one this site agreed to (``spec-sha256``), the
            site's number (``site``) is not one of the spec's sites, or the site lacks its data or key.
    """
    loaded = parse_spec(spec_text, "<spec from the server>")
    pinned = node_config.get("spec-sha256")
    if pinned is not None and loaded.sha256 != str(pinned):
        # The server chooses the spec; a site that agreed to one study refuses any other
        # (e.g. one with its DP or encryption removed).
        raise FedsecureError(
            f"the server sent spec sha256 {loaded.sha256}, not the {pinned} this site agreed to; refusing"
        )
    scenario = loaded.spec.scenario_named(scenario_name)
    claimed = claimed_index(node_config)
    if claimed >= loaded.spec.data.sites:
        raise ServerClaimError(
            f"this SuperNode is site {claimed} but the spec has {loaded.spec.data.sites} sites "
            "(numbered from 0); refusing"
        )
    data = local.data(max(claimed, 0), loaded.spec)
    protocol = scenario.protocol_instance()
    secret = local.secret() if protocol.needs_site_secret else b""
    material = protocol.server_material(secret) if secret else b""
    state.config_records[STATE] = ConfigRecord({"spec": spec_text, "scenario": scenario.name, "applied": 0})
    image = data.train.images
    n_classes = int(max(data.train.labels.max(), data.test.labels.max(initial=0))) + 1
    shape = model_shape(image.shape[1], n_classes, image.shape[2:])
    return ConfigRecord({
        "n_train": data.n_train, "claimed": claimed, **shape, "material": material,
        # Which key the site holds, for the server to check the sites agree (a hash reveals nothing of it).
        "key_id": hashlib.sha256(secret).hexdigest(),
    })


def claimed_index(node_config: Mapping) -> int:
    """The site's number from its node config (``site``, or Flower's ``partition-id``); -1 when it has none."""
    return int(node_config.get("site", node_config.get("partition-id", -1)))


def check_round_facts(spec: AuditSpec, facts: Mapping, own_n_train: int, claimed: int = -1) -> None:
    """Refuse a round whose federation facts, as the server states them, contradict the spec or this site.

    The site calibrates its noise from these facts (:func:`~fedsecure.config.parts.build_parts`
    takes the site count from ``site_sizes``): a server that claimed more sites would have
    each site add less noise. The site checks what it can know: the site count against the
    spec it pinned, its own index and size against its own node config and data. The other
    sites' sizes it cannot check.

    Args:
        spec: the spec the site agreed to.
        facts: the ``round`` config record (``site``, ``n_sites``, ``site_sizes``).
        own_n_train: the site's own number of training images.
        claimed: the site's number from its node config (-1: none).

    Raises:
        ServerClaimError: in one line, what the server claimed and what is true.
    """
    expected = spec.data.sites
    n_sites, sizes, index = int(facts["n_sites"]), [int(n) for n in facts["site_sizes"]], int(facts["site"])
    if n_sites != expected or len(sizes) != expected:
        raise ServerClaimError(
            f"the server claims {n_sites} sites ({len(sizes)} sizes) but the spec this site agreed to has {expected}; "
            "refusing (the noise each site adds depends on the site count)"
        )
    if not 0 <= index < expected:
        raise ServerClaimError(f"the server calls this site {index}, not one of the spec's {expected} sites; refusing")
    if claimed >= 0 and index != claimed:
        raise ServerClaimError(f"the server calls this site {index}, but it is site {claimed}; refusing")
    if sizes[index] != own_n_train:
        raise ServerClaimError(
            f"the server claims this site holds {sizes[index]} training images, but it holds {own_n_train}; refusing"
        )


def check_weight_unit(privacy: PrivacyMechanism, site_sizes: list[int], weight_unit: float) -> None:
    """Refuse a weight unit other than the smallest site weight (what the quorum's weight is measured in).

    Raises:
        ServerClaimError: the server's ``weight_unit`` is not the smallest weight of ``site_sizes``.
    """
    expected = min(privacy.site_weight(n) for n in site_sizes)
    if weight_unit != expected:
        raise ServerClaimError(
            f"the server's weight unit {weight_unit:g} is not the smallest site weight {expected:g}; refusing"
        )


class _Site:
    """A site rebuilt from the spec and its saved state, for one message."""

    def __init__(self, message: Message, context: Context, local: LocalSite) -> None:
        if STATE not in context.state.config_records:
            raise FedsecureError("a round message arrived before the setup message (the SuperNode restarted?)")
        saved = context.state.config_records[STATE]
        facts = message.content.config_records["round"]
        spec = parse_spec(str(saved["spec"]), "<spec from the server>").spec
        scenario = spec.scenario_named(str(saved["scenario"]))
        self.context, self.message = context, message
        claimed = claimed_index(context.node_config)
        index = int(facts["site"])
        data = local.data(claimed if claimed >= 0 else index, spec)
        # Before anything is calibrated from them: the facts the noise depends on.
        check_round_facts(spec, facts, data.n_train, claimed)
        n_sites, site_sizes = spec.data.sites, [int(n) for n in facts["site_sizes"]]
        device = resolve_device(str(context.node_config.get("device", "cpu")))
        torch.set_num_threads(int(os.environ.get("FEDSECURE_THREADS", torch.get_num_threads())))
        parts = build_parts(spec, scenario, {k: int(facts[k]) for k in SHAPE_KEYS}, site_sizes, device)
        self.privacy, self.strategy, protocol = parts.privacy, parts.strategy, parts.protocol
        weight_unit = float(facts["weight_unit"])
        check_weight_unit(self.privacy, site_sizes, weight_unit)
        self.n_classes = int(facts["n_classes"])
        self.runner = SiteRunner(index, data, parts.state, self.strategy, training=parts.training,
                                 privacy=self.privacy, seed=spec.seed, device=device)
        self.device = device
        saved_global = wire.get_tensors(context.state, "global")
        self.global_vector = saved_global["vector"].to(device) if saved_global else parts.state.get()
        self.strategy.start(self.global_vector, participation_share(spec.federation.clients_per_round, n_sites))
        if strategy_state := wire.get_tensors(context.state, "strategy"):
            self.strategy.load_server_state({k: v.to(device) for k, v in strategy_state.items()})
        if private := wire.get_tensors(context.state, "private"):
            self.runner.private = {k: v.to(device) for k, v in private.items()}
        if memory := wire.get_tensors(context.state, "memory"):
            self.runner.memory = {k: v.to(device) for k, v in memory.items()}
        # The privacy mechanism's own state at this site (DP-SGD's accountant and generators, the adaptive bound).
        self.privacy.load_site_state(index, wire.get_tensors(context.state, "privacy"))
        self.index = index
        secret = local.secret() if protocol.needs_site_secret else b""
        client = protocol.client_role(secret, n_clients=n_sites, weight_unit=weight_unit)
        quorum = reveal_quorum(self.privacy, protocol, n_sites)
        minimum = quorum_weight([self.privacy.site_weight(n) for n in site_sizes], weight_unit, quorum)
        self.client: ClientRole = QuorumCheckedClient(client, quorum=quorum, minimum_weight=minimum)

    def catch_up(self) -> RecordDict:
        """Apply the aggregates this site has not applied; the reply, with the evaluation of the result."""
        reply = RecordDict()
        saved = self.context.state.config_records[STATE]
        pending = [int(r) for r in self.message.content.config_records["round"]["pending"] if int(r) > 0]
        reveal_seconds = 0.0
        for round_number in sorted(r for r in pending if r > int(saved["applied"])):
            aggregate = wire.get_aggregate(self.message.content, f"aggregate.{round_number}")
            # self.client reveals only an aggregate carrying the weight of the quorum of sites.
            self.global_vector, seconds = next_global(
                self.global_vector, aggregate, self.client, self.strategy, self.privacy, self.device
            )
            reveal_seconds += seconds
            saved["applied"] = round_number
        if pending:
            # Counts of fixed shapes, not the per-image probabilities and labels: no label tied to an image leaves.
            probabilities = self.runner.predict(self.global_vector)
            wire.put_score_histograms(
                reply, "evaluation", score_histograms(probabilities, self.runner.test_tensors[1], self.n_classes)
            )
        reply.config_records["applied"] = ConfigRecord({
            "round": int(saved["applied"]), "reveal_seconds": reveal_seconds,
            "notes": self.privacy.notes() or [""],
        })
        return reply

    def save(self) -> None:
        """Keep what the site carries to the next message in the SuperNode's state."""
        wire.put_tensors(self.context.state, "global", {"vector": self.global_vector})
        wire.put_tensors(self.context.state, "strategy", self.strategy.server_state())
        wire.put_tensors(self.context.state, "private", self.runner.private)
        wire.put_tensors(self.context.state, "memory", self.runner.memory)
        wire.put_tensors(self.context.state, "privacy", self.privacy.site_state(self.index))

    def report_privacy(self, reply: RecordDict) -> None:
        """Add what the server's privacy report needs from this site (public numbers only) to ``reply``."""
        wire.put_tensors(reply, "privacy", self.privacy.site_report(self.index))
