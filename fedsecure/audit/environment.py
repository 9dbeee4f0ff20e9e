"""The reproducibility manifest: what ran, where, on which inputs."""

from __future__ import annotations

import platform
from importlib import metadata

import torch

from fedsecure.report.findings import Environment

PACKAGES = (
    "fedsecure", "torch", "monai", "opacus", "tenseal", "numpy", "scipy", "pydantic", "typer", "matplotlib", "jinja2",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages an audit's numbers depend on."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment_manifest(device: torch.device, seed: int, spec_sha256: str, data_sha256: str) -> Environment:
    """The report's ``environment`` section."""
    versions = package_versions()
    return Environment(
        fedsecure=versions["fedsecure"],
        torch=versions["torch"],
        device=str(device),
        device_name=(
            torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
        ),
        torch_threads=torch.get_num_threads(),
        python=platform.python_version(),
        platform=platform.platform(),
        packages=versions,
        seed=seed,
        spec_sha256=spec_sha256,
        data_sha256=data_sha256,
    )
