"""What each aggregation protocol asks each party to trust: keys, collusion, dropouts, and the transport.

The compliance section lists these per scenario, from the finding alone (its
protocol, the protocol's parameters as the run recorded them, and the engine
with its declared transport). One function per protocol, chosen by the
protocol's name.
"""

from __future__ import annotations

from collections.abc import Callable

from fedsecure.report.scenario import ScenarioFinding

Assumptions = list[tuple[str, str]]
"""(party or topic, what it must trust or what it learns)."""


def _plain(scenario: ScenarioFinding) -> Assumptions:
    return [
        ("keys", "none: updates and weights travel as numbers"),
        ("aggregation server", "trusted with every site's update: it reads each one, every round"),
        ("collusion", "nothing to collude for: the server already holds every update"),
        ("a site that drops out", "reveals nothing more; the round's mean is over the sites whose updates arrived"),
    ]


def _ckks(scenario: ScenarioFinding) -> Assumptions:
    return [
        ("keys", "one CKKS secret key shared by every site (made once with `fedsecure keygen` and copied to each "
                 "SuperNode over the sites' own channel); the server holds the public context only, from which it "
                 "can add ciphertexts but not decrypt them"),
        ("aggregation server", "sees ciphertexts, who took part and message sizes; trusted not to obtain the key"),
        ("collusion", "the server colluding with any one site reads every site's update (collusion threshold: 1 "
                      "site); a site that obtains another site's ciphertext reads it"),
        ("a site that drops out", "its message is simply absent; the others decrypt the sum of the sites that sent, "
                                  "and refuse a sum carrying less weight than the quorum of sites"),
    ]


def _secagg(scenario: ScenarioFinding) -> Assumptions:
    parameters = scenario.protocol_parameters
    threshold = parameters.get("threshold")
    shares = parameters.get("shares")
    bound = f"{threshold} sites" if threshold is not None else "a majority of each site's neighbours"
    graph = f"{shares} sites (itself included)" if shares is not None else "every site of the round"
    return [
        ("keys", "none made in advance: every round each site makes fresh ECDH key pairs, splits its private-mask "
                 f"seed and its masking key into Shamir shares among {graph} (a share is encrypted to its holder), "
                 f"and expands masks with {parameters.get('mask_generator', 'its mask generator')} (fedsecure's, in "
                 "place of flwr 1.42's, which folds each seed to 32 bits); the server holds no secret"),
        ("aggregation server", "sees each site's update only under masks that are uniform to it; it learns the "
                               "weighted sum of the sites that sent (so the global model), each sender's weight, "
                               "and who took part. Trusted to follow the protocol: it relays the sites' public keys "
                               "unsigned, so a server that substitutes its own keys reads every update"),
        ("collusion", f"the server together with fewer than {bound} learns nothing beyond the sum; {bound} "
                      "colluding with it can unmask a neighbour's update. The sum itself is no secret from "
                      "its senders: the server with all senders but one of a round reads that one's update from "
                      "the sum (a round may have as few senders as the threshold; with 2 sites, one colluder "
                      "suffices)"),
        ("a site that drops out", f"the surviving sites' shares rebuild its pairwise masks, so the sum of the others "
                                  f"still opens and its own update is never revealed; a round with fewer than {bound} "
                                  "left is not combined"),
        ("quantization", f"each weighted value is clipped to +-{parameters.get('clipping_range')} and quantized to "
                         f"2^{parameters.get('quantization_bits')} levels before masking; values beyond the range "
                         "are changed"),
    ]


PROTOCOL_TRUST: dict[str, Callable[[ScenarioFinding], Assumptions]] = {
    "plain": _plain,
    "ckks": _ckks,
    "secagg": _secagg,
}

TRANSPORT_WORDS: dict[str, str] = {
    "tls+node-auth": "declared by the operator: TLS on every connection to the SuperLink, and only SuperNodes "
                     "whose keys were registered with it may join",
    "insecure": "INSECURE, declared by the operator: no TLS (the spec, updates, keys and evaluations travel "
                "readable by anyone on the network) and no node authentication (any machine may join as a site)",
    "undeclared": "not declared in the run config (`transport`): fedsecure cannot see how the SuperLink and the "
                  "SuperNodes were started",
    "simulation": "Flower's simulation engine: every site in this process, no network",
}


def protocol_trust(scenario: ScenarioFinding) -> Assumptions:
    """What ``scenario``'s protocol, and on Flower its transport, ask each party to trust."""
    lines = PROTOCOL_TRUST.get(scenario.protocol, lambda _: [("protocol", f"{scenario.protocol}: not described")])(
        scenario
    )
    if scenario.engine == "flower":
        transport = scenario.transport or "undeclared"
        lines.append(("transport", TRANSPORT_WORDS.get(transport, f"declared as {transport!r}")))
    return lines
