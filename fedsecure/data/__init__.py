"""Data: MedMNIST loading, synthetic multi-site phantoms, partitioners, federation."""

from fedsecure.data.federated import DATA_SOURCES, FederatedData, MedMNISTFile, SiteData, federate
from fedsecure.data.medmnist import load_medmnist
from fedsecure.data.partition import IID, PARTITIONERS, Dirichlet, Quantity, split_like
from fedsecure.data.splits import ImageSplits, Split
from fedsecure.data.synthetic import AcquisitionShift, SyntheticPhantoms

__all__ = [
    "DATA_SOURCES",
    "PARTITIONERS",
    "IID",
    "AcquisitionShift",
    "Dirichlet",
    "FederatedData",
    "ImageSplits",
    "MedMNISTFile",
    "Quantity",
    "SiteData",
    "Split",
    "SyntheticPhantoms",
    "federate",
    "load_medmnist",
    "split_like",
]
