"""fedsecure: privacy auditing and secure aggregation for federated learning on medical images.

Research code uses the pieces directly::

    from fedsecure import Federation, FedAvg, LocalTraining, federate, build_model
    from fedsecure.data import MedMNISTFile, Dirichlet

    data = federate(MedMNISTFile("pneumoniamnist.npz"), n_sites=4, partitioner=Dirichlet(alpha=0.5), seed=0)
    model = build_model("cnn", data.in_channels, data.n_classes, data.image_size, seed=0)
    result = Federation(data, model, FedAvg(), training=LocalTraining(epochs=2), rounds=20).run()
    print(result.evaluation.global_.auc)
"""

from importlib.metadata import PackageNotFoundError, version

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



def __getattr__(name: str):
    # The audit layer imports the attacks package, which uses fedsecure's registry:
    # importing it lazily keeps ``import attacks`` free of a cycle.
    if name in ("load_spec", "run_audit"):
        from fedsecure import audit

        return getattr(audit, name)
    raise AttributeError(f"module 'fedsecure' has no attribute {name!r}")


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
