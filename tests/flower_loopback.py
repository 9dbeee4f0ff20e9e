"""A whole Flower deployment on this machine: a SuperLink and one SuperNode per site, on loopback.

Test tooling, not part of the installed package: the deployment test
(``tests/fedsecure/test_flower_deployment.py``) and ``benchmarks/flower_round.py``
use it; the README shows the same deployment by hand. Each process runs in its
own process group, so stopping a SuperNode also stops the SuperExec and
ClientApp processes it started; every wait is bounded.

By default the deployment is what a hospital network runs: TLS on every
connection to the SuperLink (a CA made for the deployment signs the
SuperLink's certificate; ``flwr`` and the SuperNodes trust only that CA) and
SuperNode authentication (each site's public key is registered with
``flwr supernode register`` before its SuperNode starts; the SuperLink refuses
any other). ``insecure=True`` runs without either, and says so in the run
config (``transport``) for the report to flag.

Example:
    >>> with LoopbackDeployment(workdir) as deployment:
    ...     for k, path in enumerate(site_files):
    ...         deployment.start_supernode(k, data_path=path, ckks_secret=key_file)
    ...     deployment.submit(spec_path, "ckks", out_dir)
    ...     finding = deployment.wait_for_finding(out_dir, "ckks", seconds=600)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from fedsecure.errors import FedsecureError
from fedsecure.flower import APP_DIR
from tests.flower_credentials import NodeKey, write_node_key, write_tls

BIN = Path(sys.executable).parent
CONNECTION = "loopback"


class DeploymentError(FedsecureError):
    """A process of the loopback deployment failed or did not answer in time."""


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``condition`` until it holds; DeploymentError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise DeploymentError(f"gave up waiting {seconds:g} s for {what}")
        time.sleep(0.25)


class LoopbackDeployment:
    """SuperLink and SuperNodes as child processes of this one, on 127.0.0.1, with TLS and node authentication.

    Args:
        workdir: where the processes' state, logs, credentials and Flower home go.
        threads: torch threads per ClientApp (they share this machine's cores).
        insecure: no TLS and no node authentication (Flower's ``--insecure``).
    """

    def __init__(self, workdir: Path, threads: int = 1, *, insecure: bool = False) -> None:
        self.workdir = Path(workdir)
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        home = self.workdir / "flwr-home"
        home.mkdir(exist_ok=True)
        self.link_port = free_port()
        self.insecure = insecure
        self.tls = None if insecure else write_tls(self.workdir / "tls")
        trust = "insecure = true" if self.tls is None else f'root-certificates = "{self.tls.ca}"'
        # `flwr run` finds the SuperLink through a named connection in FLWR_HOME.
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.link_port}"\n{trust}\n'
        )
        self.env = {**os.environ, "FLWR_HOME": str(home), "OMP_NUM_THREADS": str(threads),
                    "FEDSECURE_THREADS": str(threads), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def transport(self) -> str:
        """What the run config declares of the connections (the report's compliance section states it)."""
        return "insecure" if self.insecure else "tls+node-auth"

    def __enter__(self) -> LoopbackDeployment:
        if self.tls is None:
            security = ["--insecure"]
        else:
            security = ["--ssl-ca-certfile", str(self.tls.ca), "--ssl-certfile", str(self.tls.certificate),
                        "--ssl-keyfile", str(self.tls.key), "--enable-supernode-auth"]
        # The app ships no dependencies (every machine has fedsecure installed): no `uv sync` per run.
        self._start("superlink", ["flower-superlink", *security, "--disable-runtime-dependency-installation",
                                  "--port", str(self.link_port),
                                  "--database", str(self.workdir / "superlink.db")])
        wait_for(self._link_listens, 60, "the SuperLink to listen")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start_supernode(
        self, site: int, *, data_path: Path, ckks_secret: Path | None = None, spec_sha256: str | None = None,
        name: str | None = None, register: bool = True, trust: Path | None = None,
    ) -> None:
        """Start site ``site``'s SuperNode with its data (the sites' CKKS key; the one spec it accepts).

        Args:
            site: the site's number (its node config's ``site``).
            data_path: the site's data file.
            ckks_secret: the sites' CKKS key file.
            spec_sha256: the one spec the site agrees to.
            name: the process's name here (default ``site-K``).
            register: register the node's new key with the SuperLink first (False: an unregistered node).
            trust: the CA certificate the node trusts (default: the deployment's).
        """
        name = name or f"site-{site}"
        node_config = f'site={site} data-path="{data_path}"'
        if ckks_secret is not None:
            node_config += f' ckks-secret="{ckks_secret}"'
        if spec_sha256 is not None:
            node_config += f' spec-sha256="{spec_sha256}"'
        if self.tls is None:
            security = ["--insecure"]
        else:
            key = write_node_key(self.workdir / "node-keys", name)
            if register:
                self.register(key)
            security = ["--root-certificates", str(trust or self.tls.ca), "--auth-supernode-private-key",
                        str(key.private)]
        self._start(name, [
            "flower-supernode", *security, "--superlink", f"127.0.0.1:{self.link_port}",
            "--port", str(free_port()), "--node-config", node_config,
        ])

    def register(self, key: NodeKey) -> None:
        """Register a SuperNode's public key with the SuperLink (``flwr supernode register``)."""
        self._flwr(["supernode", "register", str(key.public), CONNECTION], "flwr supernode register")

    def wait_for_exit(self, name: str, seconds: float) -> int:
        """The exit code of process ``name`` (a SuperNode the SuperLink refused exits)."""
        try:
            return self.processes[name].wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"{name} was still running after {seconds:g} s\n{self.log_tail()}") from None

    def log(self, name: str) -> str:
        """Process ``name``'s log so far."""
        return (self.logs / f"{name}.log").read_text()

    def submit(self, spec: Path, scenario: str, out: Path, *, round_timeout: float = 600.0) -> None:
        """Start one scenario's run with ``flwr run`` (returns once the SuperLink has accepted it)."""
        config = (f'spec="{Path(spec).resolve()}" scenario="{scenario}" out="{Path(out).resolve()}" '
                  f'round-timeout={float(round_timeout)} connect-timeout=60.0 transport="{self.transport}"')
        self._flwr(["run", str(APP_DIR), CONNECTION, "--run-config", config], "flwr run")

    def _flwr(self, arguments: list[str], what: str) -> None:
        try:
            done = subprocess.run(
                [str(BIN / "flwr"), *arguments], env=self.env, cwd=self.workdir, capture_output=True, text=True,
                timeout=120,
            )
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"{what} did not return within 120 s") from None
        if done.returncode != 0:
            raise DeploymentError(f"{what} failed: {(done.stdout + done.stderr).strip()[-2000:]}")

    def wait_for_finding(self, out: Path, scenario: str, seconds: float) -> dict[str, Any]:
        """The finding the ServerApp writes at the end of the run."""
        path = Path(out) / f"scenario-{scenario}.json"
        try:
            wait_for(path.is_file, seconds, f"the {scenario} run to finish")
        except DeploymentError as exc:
            raise DeploymentError(f"{exc}\n{self.log_tail()}") from None
        return json.loads(path.read_text())

    def kill_supernode(self, site: int) -> None:
        """SIGKILL a site's SuperNode with everything it started (a machine that dies)."""
        self._signal(f"site-{site}", signal.SIGKILL)
        self.processes[f"site-{site}"].wait(timeout=30)

    def stop(self) -> None:
        """Stop every process: SIGTERM, then SIGKILL what is left after 15 s."""
        for name in self.processes:
            self._signal(name, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, process in self.processes.items():
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self._signal(name, signal.SIGKILL)
                process.wait(timeout=30)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of every process's log (for a failure message)."""
        return "\n".join(f"--- {p.name}\n{p.read_text()[-chars:]}" for p in sorted(self.logs.glob("*.log")))

    def _start(self, name: str, command: list[str]) -> None:
        with (self.logs / f"{name}.log").open("w") as log:
            self.processes[name] = subprocess.Popen(
                [str(BIN / command[0]), *command[1:]], env=self.env, cwd=self.workdir, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )

    def _signal(self, name: str, number: int) -> None:
        try:  # the whole group: a SuperNode's SuperExec and ClientApps outlive it otherwise
            os.killpg(self.processes[name].pid, number)
        except ProcessLookupError:
            pass

    def _link_listens(self) -> bool:
        if self.processes["superlink"].poll() is not None:
            raise DeploymentError(f"the SuperLink exited\n{self.log_tail()}")
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.link_port)) == 0
