"""The Flower ServerApp of a deployment: one scenario of a spec, over the connected SuperNodes.

Run with ``flwr run`` (see the README's "Running on Flower"). Its run config:

* ``spec``: path of the audit spec on the SuperLink's machine;
* ``scenario``: which of its scenarios to run;
* ``out``: directory for ``scenario-<name>.json`` (the scenario's finding, the
  shape an in-process audit's ``stages`` hold), ``final-model-<name>.npz`` (the
  released model), ``progress-<name>.jsonl`` (one line per finished round) and
  ``received-<name>.jsonl`` (what left the sites: one line per reply the server
  received, naming each array with its shape and dtype and each config value
  with its type and length, never a value);
* ``round-timeout``: seconds to wait for the sites' answers (default 600);
* ``connect-timeout``: seconds to wait for every SuperNode (default 120);
* ``transport``: how the SuperNodes reach the SuperLink, as the operator started
  them: ``"tls+node-auth"`` (TLS and registered SuperNode keys, as the README's
  walkthrough does), ``"insecure"`` (Flower's ``--insecure``), or
  ``"undeclared"`` (the default). fedsecure cannot see the SuperLink's flags;
  the report's compliance section states the declaration, and flags ``insecure``.

The server holds no data and no secret key: it runs no attack, and its
finding's attacks are empty.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsecure.audit import scenario_finding, write_finding
from fedsecure.config.spec import load_spec
from fedsecure.errors import OutputError
from fedsecure.fl.trace import RoundRecord
from fedsecure.flower.federation import FlowerFederation

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the configured scenario and write its finding."""
    config = context.run_config
    loaded = load_spec(Path(str(config["spec"])))
    scenario = loaded.spec.scenario_named(str(config["scenario"]))
    out = Path(str(config["out"]))
    finding_path = out / f"scenario-{scenario.name}.json"
    if finding_path.exists():
        raise OutputError(f"{finding_path} exists; choose another out directory (nothing was overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    progress = out / f"progress-{scenario.name}.jsonl"
    progress.write_text("")
    received = out / f"received-{scenario.name}.jsonl"
    received.write_text("")

    def on_round(record: RoundRecord) -> None:
        line = {"round": record.round, "sites": [c.site for c in record.clients], "time": time.time()}
        with progress.open("a") as stream:
            stream.write(json.dumps(line) + "\n")

    def on_reply(description: dict) -> None:
        with received.open("a") as stream:
            stream.write(json.dumps(description) + "\n")

    federation = FlowerFederation(
        grid, loaded, scenario, round_timeout=float(config.get("round-timeout", 600.0)),
        connect_timeout=float(config.get("connect-timeout", 120.0)), on_event=print, on_reply=on_reply,
        transport=str(config.get("transport", "undeclared")),
    )
    started = time.perf_counter()
    result = federation.run(on_round=on_round)
    wall = time.perf_counter() - started
    finding = scenario_finding(
        loaded.spec, scenario, result, wall_seconds=wall, attacks=[], canary=None, attack_seconds=0.0,
    )
    np.savez(out / f"final-model-{scenario.name}.npz", vector=result.trace.final_global.numpy())
    write_finding(finding_path, finding)
