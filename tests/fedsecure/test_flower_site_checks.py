"""What a Flower site checks of the server, and what it sends back, through the real ClientApp (no deployment).

The server is not trusted to tell the truth about the federation: a site
refuses round facts that contradict the spec it pinned or its own data (a
server inflating the site count makes each site add less noise), and its
evaluation leaves it as counts of fixed shapes, never per-image values.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from fedsecure.config.spec import parse_spec
from tests.fedsecure.tiny_specs import PLAIN_AND_CKKS, TINY_FEDAVG, tiny_spec

try:
    import flwr  # noqa: F401 (only whether the extra is installed)
except ImportError:
    if os.environ.get("CI"):  # CI installs the extra: a missing Flower there is a broken setup, not a skip
        raise
    pytest.skip("the Flower extra is not installed (pip install 'fedsecure[flower]')", allow_module_level=True)

from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from fedsecure.fl.privacy_hooks import PrivacyMechanism
from fedsecure.fl.server import quorum_shortfall
from fedsecure.flower import wire
from fedsecure.flower.site_app import make_client_app
from fedsecure.flower.site_side import LocalSite, ServerClaimError, answer_setup, check_round_facts
from fedsecure.secure import CKKSAggregation, PlainAggregation

TEXT = tiny_spec("site-checks", 0, TINY_FEDAVG, PLAIN_AND_CKKS)
SPEC = parse_spec(TEXT, "<test>").spec  # 2 sites


@pytest.fixture(scope="module")
def data():
    return SPEC.data.federated(SPEC.seed)


def _facts(data, **changes) -> dict:
    sizes = [site.n_train for site in data.sites]
    facts = {
        "round": 1, "site": 0, "n_sites": len(sizes), "site_sizes": sizes, "weight_unit": float(min(sizes)),
        "pending": [0], "in_channels": data.in_channels, "n_classes": data.n_classes,
        "depth": 0, "height": data.image_size[0], "width": data.image_size[1],
    }
    return {**facts, **changes}


def _message(kind: str, content: RecordDict, node: int = 7) -> Message:
    metadata = Metadata(run_id=1, message_id=f"{kind}-{time.monotonic_ns()}", src_node_id=1, dst_node_id=node,
                        reply_to_message_id="", group_id="1", created_at=time.time(), ttl=600.0, message_type=kind)
    return Message(metadata=metadata, content=content)


def _site_zero(data):
    """Site 0's ClientApp, set up for the plain scenario; with its context."""
    app = make_client_app(LocalSite(data=lambda k, spec: data.sites[k], secret=lambda: b""))
    context = Context(run_id=1, node_id=7, node_config={"site": 0}, state=RecordDict(), run_config={})
    app(_message("query", RecordDict({"setup": ConfigRecord({"spec": TEXT, "scenario": "plain"})})), context)
    return app, context


def test_a_site_refuses_a_round_whose_server_claims_more_sites_than_its_spec(data):
    app, context = _site_zero(data)
    inflated = _facts(data, n_sites=3, site_sizes=[*_facts(data)["site_sizes"], 40])
    with pytest.raises(ServerClaimError, match="claims 3 sites .* agreed to has 2; refusing") as refused:
        app(_message("train", RecordDict({"round": ConfigRecord(inflated)})), context)
    assert "\n" not in str(refused.value), "one line, which Flower reports as the ClientApp's failure"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_sites": 3}, "claims 3 sites"),
        ({"site_sizes": [20, 20, 20]}, r"\(3 sizes\)"),
        ({"site_sizes": [19, 20]}, "holds 19 training images, but it holds 20"),
        ({"site": 1}, "calls this site 1, but it is site 0"),
        ({"site": 5}, "calls this site 5, not one of the spec's 2 sites"),
    ],
)
def test_round_facts_that_contradict_the_spec_or_the_site_are_refused(data, changes, message):
    assert data.sites[0].n_train == 20
    check_round_facts(SPEC, _facts(data), own_n_train=20, claimed=0)  # the honest facts pass
    with pytest.raises(ServerClaimError, match=message):
        check_round_facts(SPEC, _facts(data, **changes), own_n_train=20, claimed=0)


def test_a_site_numbered_beyond_the_spec_refuses_the_setup(data):
    local = LocalSite(data=lambda k, spec: data.sites[k], secret=lambda: b"")
    with pytest.raises(ServerClaimError, match="site 2 but the spec has 2 sites"):
        answer_setup(TEXT, "plain", {"site": 2}, local, RecordDict())


def test_a_sites_evaluation_leaves_it_as_counts_of_fixed_shapes(data):
    app, context = _site_zero(data)
    first = app(_message("train", RecordDict({"round": ConfigRecord(_facts(data))})), context)
    # Round 2 brings round 1's aggregate: the site reveals it, evaluates the model on its 20 test images, trains.
    roles = PlainAggregation().setup(2, weight_unit=20.0)
    aggregate = roles.server.combine([wire.get_message(first.content, "update")] * 2)
    content = RecordDict({"round": ConfigRecord(_facts(data, round=2, pending=[1]))})
    wire.put_aggregate(content, "aggregate.1", aggregate)
    reply = app(_message("train", content), context).content

    n_test = len(data.sites[0].test.labels)
    sent = wire.describe(reply)
    assert {name for name in sent["arrays"] if name.startswith("evaluation/")} == {
        "evaluation/positive_counts", "evaluation/negative_counts", "evaluation/twice_mann_whitney",
        "evaluation/confusion",
    }
    lengths = [n for entry in sent["arrays"].values() for n in entry["shape"]]
    lengths += [entry["length"] for entry in sent["configs"].values() if "length" in entry]
    assert n_test not in lengths, f"an array or list of the {n_test} test images' length left the site: {sent}"
    counts = wire.get_score_histograms(reply, "evaluation", data.n_classes)
    assert counts.n == n_test


def test_the_server_refuses_per_image_values_in_place_of_counts(data):
    reply = RecordDict()
    wire.put_tensors(reply, "evaluation", {"probabilities": torch.rand(20, 2), "labels": torch.zeros(20)})
    with pytest.raises(wire.WireError, match="not the score histograms"):
        wire.get_score_histograms(reply, "evaluation", 2)


class _MinSites(PrivacyMechanism):
    def quorum(self) -> int:
        return 2


@pytest.mark.parametrize(
    ("privacy", "protocol", "n_messages", "says"),
    [
        (_MinSites(), PlainAggregation(), 1, "dp.min_sites"),  # fedsecure.fl.server.quorum_shortfall's line
        (PrivacyMechanism(), CKKSAggregation(), 1, "under ckks"),
        (PrivacyMechanism(), CKKSAggregation(), 2, None),
        (PrivacyMechanism(), PlainAggregation(), 1, None),
    ],
)
def test_the_flower_server_skips_a_round_below_the_quorum(privacy, protocol, n_messages, says):
    line = quorum_shortfall(privacy, protocol, 3, n_messages, 4)
    if says is None:
        assert line is None
    else:
        assert line.startswith("round 4: ") and says in line and "not combined" in line
