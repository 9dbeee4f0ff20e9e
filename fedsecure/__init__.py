"""fedsecure: privacy auditing and secure aggregation for federated learning on medical images.

Research code uses the pieces directly::

    from fedsecure import Federation, FedAvg, LocalTraining, federate, build_model
    from fedsecure.data import MedMNISTFile, Dirichlet

    data = federate(MedMNISTFile("pneumoniamnist.npz"), n_sites=4, partitioner=Dirichlet(alpha=0.5), seed=0)
    model = build_model("cnn", data.in_channels, data.n_classes, data.image_size, seed=0)
    result = Federation(data, model, FedAvg(), training=LocalTraining(epochs=2), rounds=20).run()
    print(result.evaluation.global_.auc)
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

# The public names and the module each lives in. They load on first use (PEP 562), so that
# ``import fedsecure.registry`` (which the attacks package needs) or ``import fedsecure.errors``
# does not pull in the engine, Opacus and TenSEAL.
_PUBLIC = {
    "federate": "fedsecure.data",
    "load_medmnist": "fedsecure.data",
    "DataError": "fedsecure.errors",
    "FedsecureError": "fedsecure.errors",
    "NotSupportedError": "fedsecure.errors",
    "OutputError": "fedsecure.errors",
    "SpecError": "fedsecure.errors",
    "UnknownNameError": "fedsecure.errors",
    "FedAdam": "fedsecure.fl",
    "FedAvg": "fedsecure.fl",
    "FedBN": "fedsecure.fl",
    "Federation": "fedsecure.fl",
    "FederationResult": "fedsecure.fl",
    "FedProx": "fedsecure.fl",
    "FedSGD": "fedsecure.fl",
    "LocalTraining": "fedsecure.fl",
    "Trace": "fedsecure.fl",
    "train_centralized": "fedsecure.fl",
    "train_local_only": "fedsecure.fl",
    "build_model": "fedsecure.models",
    "make_dp_compatible": "fedsecure.models",
    "load_spec": "fedsecure.config",
    "run_audit": "fedsecure.audit",
}

if TYPE_CHECKING:
    from fedsecure.audit import run_audit
    from fedsecure.config import load_spec
    from fedsecure.data import federate, load_medmnist
    from fedsecure.errors import DataError, FedsecureError, NotSupportedError, OutputError, SpecError, UnknownNameError
    from fedsecure.fl import (
        FedAdam,
        FedAvg,
        FedBN,
        Federation,
        FederationResult,
        FedProx,
        FedSGD,
        LocalTraining,
        Trace,
        train_centralized,
        train_local_only,
    )
    from fedsecure.models import build_model, make_dp_compatible


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'fedsecure' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


try:
    __version__ = version("fedsecure")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"

__all__ = [
    "DataError",
    "FedAdam",
    "FedAvg",
    "FedBN",
    "FedProx",
    "FedSGD",
    "Federation",
    "FederationResult",
    "FedsecureError",
    "LocalTraining",
    "NotSupportedError",
    "OutputError",
    "SpecError",
    "Trace",
    "UnknownNameError",
    "__version__",
    "build_model",
    "federate",
    "load_medmnist",
    "load_spec",
    "make_dp_compatible",
    "run_audit",
    "train_centralized",
    "train_local_only",
]
