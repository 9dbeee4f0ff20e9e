"""Shared fixtures: the real shared data, and small synthetic federations."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

# One torch thread per process: tests run on two xdist workers over two cores, and the CLI
# subprocesses some tests start inherit this; more threads than cores slow torch down tens of times.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FEDSECURE_SHARED", REPO.parent / "shared")) / "data"
PNEUMONIA = SHARED_DATA / "pneumoniamnist.npz"
ADRENAL3D = SHARED_DATA / "adrenalmnist3d.npz"
HIPPOCAMPUS = SHARED_DATA / "hippocampus" / "dataset.json"


@pytest.fixture(autouse=True)
def _private_image_cache(tmp_path_factory, monkeypatch):
    # Decoded images go to a test folder, never the user's (or CI's) real cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Thread count changes float summation order; tests compare runs bit for bit.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _reports_round_trip(tmp_path_factory):
    """Every report.json an audit writes during a test reads back as a Report and writes back unchanged.

    An audit's report.json sits beside ``stages/run.json`` (its run directory); report.json files that tests
    write by hand to check refusals (no run directory) are not the code's, and are left alone. Only files
    modified during the test are read, so the check costs one walk of the session's temporary directory.
    """
    # File times come from a coarser clock than time_ns: start 2 s early (re-reading a recent report is harmless).
    started = time.time_ns() - 2_000_000_000
    yield
    from fedsecure.report import Report

    for path in _reports_under(tmp_path_factory.getbasetemp()):
        if path.stat().st_mtime_ns >= started and (path.parent / "stages" / "run.json").is_file():
            written = json.loads(path.read_text())
            assert Report.from_json(written).to_json() == written, f"{path} does not round-trip"


def _reports_under(base: Path) -> list[Path]:
    """Every report.json under ``base``, skipping Flower's homes.

    A loopback deployment's processes keep creating and deleting folders in their FLWR_HOME while other
    tests run (a walk there races them, and holds no report).
    """
    found = []
    for folder, subfolders, files in os.walk(base):
        subfolders[:] = [name for name in subfolders if name != "flwr-home"]
        if "report.json" in files:
            found.append(Path(folder) / "report.json")
    return found


@pytest.fixture
def pneumonia_path() -> Path:
    if not PNEUMONIA.is_file():
        pytest.skip(f"shared data not found at {PNEUMONIA}")
    return PNEUMONIA


@pytest.fixture
def adrenal3d_path() -> Path:
    if not ADRENAL3D.is_file():
        pytest.skip(f"shared data not found at {ADRENAL3D}")
    return ADRENAL3D


@pytest.fixture
def hippocampus_datalist() -> Path:
    if not HIPPOCAMPUS.is_file():
        pytest.skip(f"shared data not found at {HIPPOCAMPUS}")
    return HIPPOCAMPUS


def write_medmnist(path: Path, n=(12, 4, 6), size=8, rgb=False, label_shape="column", n_classes=2, **overrides) -> Path:
    """Write a small MedMNIST-format file; ``overrides`` replace or (with None) drop arrays."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        shape = (count, size, size, 3) if rgb else (count, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        labels = np.arange(count) % n_classes
        arrays[f"{split}_labels"] = labels[:, None] if label_shape == "column" else labels
    for key, value in overrides.items():
        if value is None:
            arrays.pop(key, None)
        else:
            arrays[key] = value
    np.savez(path, **arrays)
    return path


# The slow files, longest first (CI's --durations, 2 workers): xdist hands each worker the next file
# as it frees up, so longest-first keeps the two workers' loads even (the suite's 10-minute budget).
SLOW_FILES_LONGEST_FIRST = (
    "test_flower_deployment.py", "test_audit_pneumonia.py", "test_membership_audit.py",
    "test_flower_simulation.py", "test_inversion_audit.py", "test_volumes.py", "test_segmentation.py",
)


def pytest_collection_modifyitems(config, items):
    # The slow end-to-end tests first: on two xdist workers the long ones then run side by side
    # instead of one worker finishing a long test alone at the end (about a minute of the suite).
    def rank(item) -> tuple[bool, int]:
        name = Path(str(item.fspath)).name
        slow = SLOW_FILES_LONGEST_FIRST
        order = slow.index(name) if name in slow else len(slow)
        return item.get_closest_marker("slow") is None, order

    items.sort(key=rank)
