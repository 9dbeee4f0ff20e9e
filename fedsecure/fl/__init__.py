"""Federated engine: local training, strategies, the federation loop, baselines."""

from fedsecure.fl.baselines import (
    CentralizedResult,
    LocalOnlyResult,
    baseline_training,
    train_centralized,
    train_local_only,
)
from fedsecure.fl.evaluation import Utility, predict, utility_from_predictions
from fedsecure.fl.federation import (
    Evaluation,
    Federation,
    FederationResult,
    SiteUtility,
)
from fedsecure.fl.segmentation import Segmentation
from fedsecure.fl.state import ModelState
from fedsecure.fl.strategies import (
    STRATEGIES,
    FedAdam,
    FedAvg,
    FedBN,
    FedProx,
    FedSGD,
    Strategy,
)
from fedsecure.fl.task import TASKS, Classification, Task, evaluate
from fedsecure.fl.trace import ClientRound, RoundRecord, Trace
from fedsecure.fl.training import (
    OPTIMIZERS,
    LocalTraining,
    full_batch_gradient,
    train_local,
)

__all__ = [
    "OPTIMIZERS",
    "STRATEGIES",
    "TASKS",
    "Classification",
    "Segmentation",
    "Task",
    "CentralizedResult",
    "ClientRound",
    "Evaluation",
    "FedAdam",
    "FedAvg",
    "FedBN",
    "FedProx",
    "FedSGD",
    "Federation",
    "FederationResult",
    "LocalOnlyResult",
    "LocalTraining",
    "ModelState",
    "RoundRecord",
    "SiteUtility",
    "Strategy",
    "Trace",
    "Utility",
    "baseline_training",
    "evaluate",
    "full_batch_gradient",
    "predict",
    "train_centralized",
    "train_local",
    "train_local_only",
    "utility_from_predictions",
]
