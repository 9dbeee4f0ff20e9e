"""A model's state as one flat vector: what sites send and the server averages.

Federated messages are flat float vectors (one contiguous buffer per update),
which is what a secure-aggregation protocol packs and what an attack inverts.
:class:`ModelState` maps between a live ``nn.Module`` and that vector, keeping
*private* entries (FedBN's normalization layers) out of it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelState:
    """Flat view of a model's shared floating-point state.

    Shared entries are the floating-point parameters and buffers (e.g.
    BatchNorm running statistics) not named in ``private``, in ``state_dict``
    order. Integer buffers (BatchNorm's ``num_batches_tracked``) are never shared.

    Args:
        model: the live module; vectors are read from and written into it in place.
        private: ``state_dict`` names that stay with each site.
    """

    def __init__(self, model: nn.Module, private: set[str] | frozenset[str] = frozenset()) -> None:
        self.model = model
        entries = model.state_dict(keep_vars=True)
        unknown = set(private) - set(entries)
        if unknown:
            raise ValueError(f"private entries not in the model: {sorted(unknown)}")
        self._shared = [(n, t) for n, t in entries.items() if t.is_floating_point() and n not in private]
        self._private = [(n, t) for n, t in entries.items() if t.is_floating_point() and n in private]
        self.names = [n for n, _ in self._shared]
        self.numel = sum(t.numel() for _, t in self._shared)

    def get(self) -> torch.Tensor:
        """A detached copy of the shared entries as one float32 vector."""
        with torch.no_grad():
            return torch.cat([t.detach().reshape(-1).float() for _, t in self._shared])

    def set(self, vector: torch.Tensor) -> None:
        """Write ``vector`` into the shared entries."""
        if vector.numel() != self.numel:
            raise ValueError(f"vector has {vector.numel()} values, the shared state {self.numel}")
        offset = 0
        with torch.no_grad():
            for _, tensor in self._shared:
                n = tensor.numel()
                tensor.copy_(vector[offset : offset + n].view_as(tensor))
                offset += n

    def split(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """``vector`` cut into the shared entries it holds, by ``state_dict`` name (views, not copies)."""
        if vector.numel() != self.numel:
            raise ValueError(f"vector has {vector.numel()} values, the shared state {self.numel}")
        pieces, offset = {}, 0
        for name, tensor in self._shared:
            pieces[name] = vector[offset : offset + tensor.numel()].view(tensor.shape)
            offset += tensor.numel()
        return pieces

    def get_private(self) -> dict[str, torch.Tensor]:
        """Detached copies of the private entries."""
        return {n: t.detach().clone() for n, t in self._private}

    def set_private(self, values: dict[str, torch.Tensor]) -> None:
        """Write a site's private entries back into the model."""
        with torch.no_grad():
            for name, tensor in self._private:
                tensor.copy_(values[name])

    def model_with(self, vector: torch.Tensor, private: dict[str, torch.Tensor]) -> nn.Module:
        """A copy of the model holding ``vector`` and the ``private`` entries: the model a party holds.

        The live model is written first (it is the template the copy is taken from).
        """
        device = next(iter(self.model.parameters())).device
        self.set(vector.to(device))
        self.set_private(private)
        return copy.deepcopy(self.model)
