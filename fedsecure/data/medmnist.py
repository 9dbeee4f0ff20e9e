"""Loading MedMNIST-format ``.npz`` files, safely.

The MedMNIST v2 layout holds ``{train,val,test}_images`` (uint8, (N, H, W) for
grayscale, (N, H, W, 3) for RGB, (N, D, H, W) for the 3D collection) and ``{train,val,test}_labels`` ((N, 1) or
(N,), integer); a segmentation file holds ``{train,val,test}_masks`` instead (integer,
(N, H, W) or (N, D, H, W), the images' size; 0 is the background). Files are opened
with ``allow_pickle=False``: an ``.npz`` can carry pickled object arrays, and unpickling input runs arbitrary code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from fedsecure.data.splits import ImageSplits, Split, n_classes_of
from fedsecure.errors import DataError

SPLITS = ("train", "val", "test")
REQUIRED_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def load_medmnist(path: str | Path, min_classes: int = 2, masks: bool = False) -> ImageSplits:
    """Load a MedMNIST-format ``.npz`` file.

    Args:
        path: the ``.npz`` file. ``val_*`` arrays are optional; without them the
            validation split is empty.
        min_classes: classes the labels must reach (the largest label + 1). A
            whole dataset needs two; one site's share of it may hold one.
        masks: read the ``*_masks`` arrays (segmentation) instead of ``*_labels``.

    Returns:
        The splits as float32 (N, C, H, W) images or (N, C, D, H, W) volumes in
        [0, 1], and int64 labels.

    Raises:
        DataError: the file is missing or unreadable, lacks a required array,
            holds object (pickled) arrays, has mismatched counts, shapes or dtypes, or
            too few classes.
            The message names the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: _read_array(path, npz, key) for key in npz.files}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    except ValueError as exc:  # np.load on a file that is neither .npy nor .npz
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None

    kind = "masks" if masks else "labels"
    missing = [key.replace("labels", kind) for key in REQUIRED_KEYS if key.replace("labels", kind) not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)} (found: {', '.join(sorted(arrays)) or 'none'})")

    splits: dict[str, Split] = {}
    for name in SPLITS:
        if f"{name}_images" not in arrays:
            if f"{name}_{kind}" in arrays:
                raise DataError(f"{path}: {name}_{kind} without {name}_images")
            splits[name] = None  # type: ignore[assignment]
            continue
        images = _images(path, name, arrays[f"{name}_images"])
        read = _masks if masks else _labels
        splits[name] = Split(images, read(path, name, arrays.get(f"{name}_{kind}"), images))

    shapes = {name: s.images.shape[1:] for name, s in splits.items() if s is not None}
    if len(set(shapes.values())) > 1:
        raise DataError(f"{path}: splits have different image shapes {shapes}")
    if len(splits["train"]) == 0:
        raise DataError(f"{path}: train split is empty")
    if splits["val"] is None:
        train = splits["train"]
        splits["val"] = Split(train.images[:0], train.labels[:0])

    n_classes = n_classes_of([s.labels for s in splits.values()], str(path), min_classes)
    return ImageSplits(train=splits["train"], val=splits["val"], test=splits["test"], n_classes=n_classes)


def _read_array(path: Path, npz: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(f"{path}: array {key!r} is an object (pickled) array; refusing to unpickle input") from None
        raise DataError(f"{path}: array {key!r} is unreadable ({exc})") from None


def _images(path: Path, split: str, images: np.ndarray) -> np.ndarray:
    key = f"{split}_images"
    if images.dtype != np.uint8:
        raise DataError(f"{path}: {key} has dtype {images.dtype}; MedMNIST images are uint8")
    # A trailing axis of 1 or 3 is colour (MedMNIST stores channels last); any other 4-axis array is a volume.
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim in (4, 5) and images.shape[-1] in (1, 3):
        images = np.moveaxis(images, -1, 1)
    elif images.ndim == 4:
        images = images[:, None]
    else:
        raise DataError(
            f"{path}: {key} has shape {images.shape}; expected (N, H, W), (N, H, W, 3) or (N, D, H, W)"
        )
    return np.ascontiguousarray(images, dtype=np.float32) / np.float32(255.0)


def _labels(path: Path, split: str, labels: np.ndarray | None, images: np.ndarray) -> np.ndarray:
    key, n_images = f"{split}_labels", len(images)
    if labels is None:
        raise DataError(f"{path}: {split}_images without {key}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: {key} has dtype {labels.dtype}; expected integer class labels")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    elif labels.ndim != 1:
        raise DataError(
            f"{path}: {key} has shape {labels.shape}; expected (N,) or (N, 1) "
            "(multi-label tasks are not supported)"
        )
    if len(labels) != n_images:
        raise DataError(f"{path}: {split} split has {n_images} images but {len(labels)} labels")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{path}: {key} holds negative class labels")
    return labels.astype(np.int64)


def _masks(path: Path, split: str, masks: np.ndarray | None, images: np.ndarray) -> np.ndarray:
    key = f"{split}_masks"
    if masks is None:
        raise DataError(f"{path}: {split}_images without {key}")
    if not np.issubdtype(masks.dtype, np.integer):
        raise DataError(f"{path}: {key} has dtype {masks.dtype}; expected integer masks (0 = background)")
    if masks.shape != (len(images), *images.shape[2:]):
        raise DataError(
            f"{path}: {key} has shape {masks.shape}; expected one mask per image of its size, "
            f"{(len(images), *images.shape[2:])}"
        )
    if masks.size and masks.min() < 0:
        raise DataError(f"{path}: {key} holds negative classes")
    return masks.astype(np.int64)
