"""The reproducibility manifest as the report records it: what ran, where, on which inputs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Environment:
    """The report's ``environment``: versions, device and machine, the seed, and the inputs' hashes.

    ``packages`` maps each package the numbers depend on to its version (None:
    not installed). ``device_name`` is the GPU's name, or the CPU's.
    """

    fedsecure: str | None
    torch: str | None
    device: str
    device_name: str
    torch_threads: int
    python: str
    platform: str
    packages: dict[str, str | None]
    seed: int
    spec_sha256: str
    data_sha256: str
