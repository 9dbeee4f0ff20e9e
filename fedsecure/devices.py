"""Choosing and timing the compute device."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from fedsecure.errors import NotSupportedError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``/``"cuda"`` as asked.

    Raises:
        NotSupportedError: CUDA was asked for and is not available.
    """
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise NotSupportedError(f"unknown device {name!r}; choose one of: {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NotSupportedError(f"device {name!r} asked for, but CUDA is not available on this machine")
    return torch.device(name)


class Stopwatch:
    """Accumulates wall seconds; waits for queued CUDA work so GPU time is counted."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0

    @contextmanager
    def measure(self) -> Iterator[None]:
        """Add the wall time of the ``with`` body to :attr:`seconds`."""
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds += time.perf_counter() - start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
