"""Differential privacy: sample-level DP-SGD (Opacus), client-level DP-FedAvg, accounting."""

from fedsecure.fl.privacy_hooks import FederationFacts, PartyGuarantee, PrivacyMechanism, PrivacyReport
from fedsecure.privacy.accounting import ACCOUNTANTS, calibrate_noise, extend, spent_epsilon
from fedsecure.privacy.client_level import ClientLevelDP
from fedsecure.privacy.clipping import clip_rows, clip_to_norm
from fedsecure.privacy.noise import gaussian_noise
from fedsecure.privacy.sample_level import SampleLevelDP
from fedsecure.registry import Registry

DP_LEVELS: Registry[type[PrivacyMechanism]] = Registry("dp level")
DP_LEVELS.register("sample")(SampleLevelDP)
DP_LEVELS.register("client")(ClientLevelDP)

__all__ = [
    "ACCOUNTANTS",
    "DP_LEVELS",
    "ClientLevelDP",
    "FederationFacts",
    "PartyGuarantee",
    "PrivacyMechanism",
    "PrivacyReport",
    "SampleLevelDP",
    "calibrate_noise",
    "clip_rows",
    "clip_to_norm",
    "extend",
    "gaussian_noise",
    "spent_epsilon",
]
