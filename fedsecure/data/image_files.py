"""Loading image files through MONAI: NIfTI, DICOM series and PNG, preprocessed as the spec declares, cached.

MONAI's ``LoadImage`` picks the reader from the file (nibabel for NIfTI,
pydicom for a DICOM file or a folder holding one series, PIL for PNG). The
declared preprocessing (orientation, spacing, intensity scaling, size) follows
in that order, and the result is cached with MONAI's ``PersistentDataset``: a
second audit reads the cache instead of decoding again. The cache key is the
file's content (SHA-256) and the preprocessing, so an edited file or a changed
spec is decoded afresh; the cache is read with ``torch.load(weights_only=True)``,
never unpickled.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsecure.errors import DataError

# MONAI registers every reader, GPU ones too; its nvImageCodec DICOM plugin warns on each read where CUDA's
# decoder is absent, and the plain pydicom decoders it falls back to are the ones meant here.
_GPU_DECODER_NOTICE = "NvImgCodecPydicomReader"
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Preprocessing:
    """What every image goes through after decoding, in this order.

    Attributes:
        orientation: axis codes to reorient volumes to (e.g. ``"RAS"``), or None to keep the file's.
        spacing: voxel spacing in mm to resample to (one value per axis), or None to keep the file's.
        window: intensities mapped linearly onto [0, 1] and clipped (e.g. a CT window, or (0, 255)
            for 8-bit files), or None for ``percentiles``.
        percentiles: per-image lower and upper percentiles mapped onto [0, 1] (clipped) when no window is set.
        size: spatial size every image is brought to, or None when the files share one already.
        size_mode: ``crop_pad`` (centred, zero padding: keeps the voxel size) or ``resize`` (linear).
    """

    orientation: str | None = None
    spacing: tuple[float, ...] | None = None
    window: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)
    size: tuple[int, ...] | None = None
    size_mode: str = "crop_pad"

    def describe(self) -> str:
        """A canonical text of the settings (part of the cache key)."""
        return repr(self)

    def transforms(self, masks: bool = False) -> Any:
        """The MONAI dictionary transforms, on key ``image`` (and ``label``, its mask, when ``masks``).

        A mask goes through the same spatial steps as its image, with nearest-neighbour
        interpolation, and through no intensity step.
        """
        from monai.transforms import (
            Compose,
            EnsureTyped,
            Orientationd,
            Resized,
            ResizeWithPadOrCropd,
            ScaleIntensityRanged,
            ScaleIntensityRangePercentilesd,
            Spacingd,
        )

        keys = ["image", "label"] if masks else ["image"]
        modes = ["bilinear", "nearest"][: len(keys)]
        steps: list = [self.loader(keys)]
        if self.orientation is not None:
            steps.append(Orientationd(keys=keys, axcodes=self.orientation, labels=RAS_LABELS))
        if self.spacing is not None:
            steps.append(Spacingd(keys=keys, pixdim=self.spacing, mode=modes))
        if self.window is not None:
            low, high = self.window
            steps.append(ScaleIntensityRanged(keys="image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True))
        else:
            low, high = self.percentiles
            steps.append(ScaleIntensityRangePercentilesd(
                keys="image", lower=low, upper=high, b_min=0.0, b_max=1.0, clip=True
            ))
        if self.size is not None:
            if self.size_mode == "resize":
                steps.append(Resized(keys=keys, spatial_size=self.size, mode=["area", "nearest"][: len(keys)]))
            else:
                steps.append(ResizeWithPadOrCropd(keys=keys, spatial_size=self.size))
        steps.append(EnsureTyped(keys=keys, data_type="numpy", dtype=np.float32, track_meta=False))
        return Compose(steps)

    @staticmethod
    def loader(keys: Sequence[str] = ("image",)) -> Any:
        """MONAI's ``LoadImaged`` with the readers named, tried first, so an installed ITK never changes them."""
        from monai.data import NibabelReader, PILReader, PydicomReader
        from monai.transforms import LoadImaged

        # LoadImage tries the readers it was given last-first, before its defaults.
        return LoadImaged(
            keys=list(keys), ensure_channel_first=True, image_only=True,
            reader=[PILReader, PydicomReader, NibabelReader],
        )


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/fedsecure/images`` (``~/.cache/fedsecure/images`` by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fedsecure" / "images"


def load_images(
    paths: Sequence[Path], preprocessing: Preprocessing, cache_dir: Path | None, site: str
) -> np.ndarray:
    """The images at ``paths`` as one float32 array (N, C, H, W) or (N, C, D, H, W), in [0, 1].

    Args:
        paths: image files, or folders holding one DICOM series each.
        preprocessing: what every image goes through.
        cache_dir: where decoded images are kept between audits, or None not to cache.
        site: the site's name, for messages.

    Raises:
        DataError: a file is not a readable image, a DICOM folder holds several series,
            or the images differ in dimensionality, channels or (without ``size``) in size.
            The message names the site and the file.
    """
    items = [{"image": str(path), "key": _content_key([path], preprocessing, site)} for path in paths]
    images, _ = _decode_all(items, paths, preprocessing, cache_dir, site)
    return images


def load_images_with_masks(
    paths: Sequence[Path], mask_paths: Sequence[Path], preprocessing: Preprocessing, cache_dir: Path | None, site: str
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`load_images`, each image with its mask: the images, and int64 masks (N, *spatial).

    Raises:
        DataError: as :func:`load_images`; also a mask that is unreadable, of another size than its
            image after the same preprocessing, or whose values are not classes (non-negative integers).
    """
    items = [
        {"image": str(path), "label": str(mask), "key": _content_key([path, mask], preprocessing, site)}
        for path, mask in zip(paths, mask_paths, strict=True)
    ]
    images, masks = _decode_all(items, paths, preprocessing, cache_dir, site)
    assert masks is not None  # the items name masks
    return images, masks


def _decode_all(
    items: list[dict[str, str]], paths: Sequence[Path], preprocessing: Preprocessing, cache_dir: Path | None,
    site: str,
) -> tuple[np.ndarray, np.ndarray | None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_GPU_DECODER_NOTICE)
        return _decode(items, paths, preprocessing, cache_dir, site)


def _private_folder(folder: Path) -> None:
    """Create ``folder`` readable by its owner only (it holds decoded patient images), or make it so.

    Raises:
        DataError: it exists, others may read it, and it belongs to someone else.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = folder.stat()
    if status.st_mode & 0o077:
        if status.st_uid != os.getuid():
            raise DataError(
                f"the image cache {folder} is readable by others and not ours to restrict; choose another cache_dir"
            )
        folder.chmod(0o700)


def _decode(
    items: list[dict[str, str]], paths: Sequence[Path], preprocessing: Preprocessing, cache_dir: Path | None, site: str
) -> tuple[np.ndarray, np.ndarray | None]:
    from monai.data import Dataset, PersistentDataset
    from monai.data.utils import json_hashing

    with_masks = bool(items) and "label" in items[0]
    transform = preprocessing.transforms(masks=with_masks)
    if cache_dir is not None:
        try:
            _private_folder(Path(cache_dir))
        except OSError as exc:
            raise DataError(f"cannot create the image cache {cache_dir} ({exc.strerror})") from None
        dataset = PersistentDataset(items, transform, cache_dir=cache_dir, hash_func=json_hashing, weights_only=True)
    else:
        dataset = Dataset(items, transform)
    arrays: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for i, path in enumerate(paths):
        try:
            decoded = dataset[i]
        except Exception as exc:  # MONAI wraps reader and transform errors in RuntimeError
            raise _load_error(path, site, exc, preprocessing, items[i]) from None
        image = np.asarray(decoded["image"], dtype=np.float32)
        _check_like(image, arrays[0] if arrays else None, path, paths[0], site, preprocessing)
        arrays.append(image)
        if with_masks:
            masks.append(_mask_of(np.asarray(decoded["label"]), image, Path(items[i]["label"]), site))
    return np.stack(arrays), (np.stack(masks) if with_masks else None)


def _mask_of(mask: np.ndarray, image: np.ndarray, path: Path, site: str) -> np.ndarray:
    """The decoded mask (1, *spatial) as int64 (*spatial), checked against its image."""
    if mask.shape[0] != 1 or mask.shape[1:] != image.shape[1:]:
        raise DataError(
            f"site {site!r}: {path}: a mask of shape {'x'.join(map(str, mask.shape[1:]))} "
            f"({mask.shape[0]} channel(s)) for an image of size {'x'.join(map(str, image.shape[1:]))}; "
            "a mask is one channel of its image's size"
        )
    if mask.size and (mask.min() < 0 or not np.array_equal(mask, np.round(mask))):
        raise DataError(f"site {site!r}: {path}: mask values are not classes (non-negative integers)")
    return mask[0].astype(np.int64)


# The RAS axis labels NIfTI and MONAI use, named so that MONAI's changing default does not apply.
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
# File kinds the named readers decode (a DICOM file may have any name: its header says what it is).
NIFTI_SUFFIXES = (".nii", ".nii.gz")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
IMAGE_SUFFIXES = (*NIFTI_SUFFIXES, ".dcm", *PICTURE_SUFFIXES)
# Bumped whenever the decoded array for the same file and preprocessing would change.
CACHE_FORMAT = 1


def _content_key(paths: Sequence[Path], preprocessing: Preprocessing, site: str) -> str:
    """The cache entry's identity: the files' SHA-256 (an image, and its mask), the preprocessing, the decoders.

    A DICOM folder hashes its series' files; a new reader version may decode the same file differently.
    """
    digest = hashlib.sha256(f"{_decoder_versions()} {preprocessing.describe()} {len(paths)}".encode())
    for path in paths:
        try:
            files = _series_files(path, site) if path.is_dir() else [_image_file(path, site)]
            for file in files:
                digest.update(file.name.encode())
                with file.open("rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
        except OSError as exc:
            raise DataError(f"site {site!r}: {path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()


@functools.cache
def _decoder_versions() -> str:
    """The cache format and the versions of everything that decodes or resamples (torch: spacing, resize)."""
    import monai
    import nibabel
    import PIL
    import pydicom
    import torch

    return (
        f"{CACHE_FORMAT} monai {monai.__version__} nibabel {nibabel.__version__} pydicom {pydicom.__version__} "
        f"pillow {PIL.__version__} torch {torch.__version__}"
    )


def _image_file(path: Path, site: str) -> Path:
    from pydicom.misc import is_dicom

    if not path.name.lower().endswith(IMAGE_SUFFIXES) and not is_dicom(path):
        raise DataError(
            f"site {site!r}: {path}: not a NIfTI, DICOM or PNG/JPEG/BMP image (by its name and header)"
        )
    return path


def _series_files(folder: Path, site: str) -> list[Path]:
    """The DICOM images of a folder, which must hold one series: several would be stacked into one nonsense volume.

    MONAI's reader reads every file the folder's ``*`` matches, so what it cannot read is refused
    here first: subfolders, and a folder name that is itself a glob pattern. Files that are not
    DICOM, and DICOM files without a series (a DICOMDIR), count for no series.
    """
    import pydicom
    from pydicom.misc import is_dicom

    if any(char in folder.name for char in "*?["):
        raise DataError(f"site {site!r}: {folder}: rename the folder; '*', '?' and '[' read as a file pattern")
    entries = sorted(folder.iterdir())
    inner = [p.name for p in entries if p.is_dir()]
    if inner:
        raise DataError(f"site {site!r}: {folder}: holds folder(s) {', '.join(inner[:3])}; a series folder holds files")
    images, series = [], set()
    for file in (p for p in entries if not p.name.startswith(".")):
        if not is_dicom(file):
            continue
        try:
            header = pydicom.dcmread(file, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises many kinds on a damaged header; all mean a bad file
            raise DataError(f"site {site!r}: {folder}: {file.name} is not a readable DICOM file ({exc})") from None
        uid = getattr(header, "SeriesInstanceUID", None)
        if uid is None:
            continue
        series.add(str(uid))
        images.append(file)
    if not images:
        raise DataError(f"site {site!r}: {folder}: the folder holds no DICOM images")
    if len(series) > 1:
        raise DataError(
            f"site {site!r}: {folder}: the folder holds {len(series)} DICOM series; give each series its own folder"
        )
    return images


def _check_like(
    image: np.ndarray, first: np.ndarray | None, path: Path, first_path: Path, site: str, preprocessing: Preprocessing
) -> None:
    if image.ndim not in (3, 4):
        raise DataError(
            f"site {site!r}: {path}: decoded to shape {image.shape[1:]}; expected a 2D image or a 3D volume"
        )
    if first is None:
        return
    if image.ndim != first.ndim:
        raise DataError(
            f"site {site!r}: {path}: a {image.ndim - 1}D image among {first.ndim - 1}D ones ({first_path.name}); "
            "a federation trains on one dimensionality"
        )
    if image.shape[0] != first.shape[0]:
        raise DataError(
            f"site {site!r}: {path}: {image.shape[0]} channel(s), but {first_path.name} has {first.shape[0]}"
        )
    if image.shape[1:] != first.shape[1:]:
        hint = "" if preprocessing.size is None else " after preprocessing"
        raise DataError(
            f"site {site!r}: {path}: size {'x'.join(map(str, image.shape[1:]))}{hint}, but {first_path.name} is "
            f"{'x'.join(map(str, first.shape[1:]))}; set data.size (and data.size_mode) to bring them to one size"
        )


def _load_error(
    path: Path, site: str, exc: BaseException, preprocessing: Preprocessing, item: dict[str, str]
) -> DataError:
    """What failed: a file (its reader's own error), the declared preprocessing, or the cache entry."""
    masks = [Path(item["label"])] if "label" in item else []
    for file, what in [(path, "image"), *((mask, f"mask (of {path.name})") for mask in masks)]:
        try:
            decoded = Preprocessing.loader()({"image": str(file)})["image"]
        except Exception:  # the file itself is the problem: ask the reader its suffix names, for its reason
            return DataError(f"site {site!r}: {file}: not a readable {what} ({_reader_reason(file, exc)})")
        if file == path:
            shape, dims = "x".join(map(str, decoded.shape[1:])), decoded.ndim - 1
    try:
        preprocessing.transforms(masks="label" in item)({k: v for k, v in item.items() if k != "key"})
    except Exception as failure:
        return DataError(
            f"site {site!r}: {path}: decodes to a {dims}D image of size {shape}, but the preprocessing "
            f"failed on it ({_reason(failure)}); check data.size, data.spacing and data.orientation against it"
        )
    return DataError(f"site {site!r}: {path}: its entry in the image cache is unreadable ({_reason(exc)}); "
                     "delete the cache folder (cache_dir) or set cache = false")


def _reader_reason(path: Path, exc: BaseException) -> str:
    """The matching reader's own error (MONAI's loader, trying them all, says only that none fit)."""
    from monai.data import NibabelReader, PILReader, PydicomReader

    name = path.name.lower()
    reader = NibabelReader() if name.endswith(NIFTI_SUFFIXES) else (
        PILReader() if name.endswith(PICTURE_SUFFIXES) else PydicomReader()
    )
    try:
        reader.get_data(reader.read(str(path)))
    except Exception as failure:
        return _reason(failure)
    return _reason(exc)


def _reason(exc: BaseException) -> str:
    """The innermost message of a MONAI transform error (which wraps the reader's)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "") or type(exc).__name__
