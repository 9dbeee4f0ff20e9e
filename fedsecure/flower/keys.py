"""The sites' shared key for a deployment: made once, copied to every SuperNode, never to the server."""

from __future__ import annotations

import os
from pathlib import Path

from fedsecure.config.spec import LoadedSpec
from fedsecure.errors import OutputError, SpecError


def write_site_secret(loaded: LoadedSpec, scenario_name: str, path: Path) -> None:
    """Write a new secret for ``scenario_name``'s protocol to ``path`` (readable by its owner only).

    Raises:
        SpecError: no such scenario, or its protocol has no secret (plain).
        OutputError: ``path`` exists (a key is never overwritten).
    """
    try:
        scenario = loaded.spec.scenario_named(scenario_name)
    except SpecError as exc:
        raise SpecError(f"--scenario {scenario_name}: {exc}") from None
    secret = scenario.protocol_instance().site_secret()
    if not secret:
        raise SpecError(f"scenario {scenario_name} uses protocol {scenario.protocol!r}, which has no key")
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise OutputError(f"{path} exists; a key is never overwritten") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the key ({exc.strerror})") from None
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(secret)
